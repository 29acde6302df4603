// The same page in Firefox (Debian firefox-esr, driven over WebDriver BiDi by puppeteer-core):
// it loads under the CSP, registers, and holds a call with chromium through the SIP relay.
// Skips when /usr/bin/firefox-esr is not installed.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';
import {
  CALL_ENDED, WEB_DIST, chromiumMissing, launchBrowser, openPhone, phoneState, selfSignedCert,
  startStaticServer, waitFor, waitForCallState, waitForRegState,
} from './lib.mjs';
import { SipRelay } from './sip-relay.mjs';

const FIREFOX = process.env.FIREFOX_BIN || '/usr/bin/firefox-esr';
const missing = existsSync(FIREFOX) ? false : `${FIREFOX} not found: apt-get install firefox-esr`;

describe('softphone in Firefox', { skip: missing || chromiumMissing(), timeout: 120_000 }, () => {
  let relay;
  let server;
  let firefox;
  let chromium;
  let page;
  const cspViolations = [];
  const consoleErrors = [];

  before(async () => {
    assert.ok(existsSync(join(WEB_DIST, 'index.html')), 'web/dist is missing: run npm run build');
    relay = new SipRelay();
    server = await startStaticServer({ tls: await selfSignedCert(), relay });
    firefox = await puppeteer.launch({
      browser: 'firefox',
      executablePath: FIREFOX,
      headless: true,
      acceptInsecureCerts: true,
      extraPrefsFirefox: {
        'media.navigator.streams.fake': true,
        'media.navigator.permission.disabled': true,
      },
    });
    chromium = await launchBrowser();
    page = await firefox.newPage();
    page.on('console', (msg) => {
      if (msg.type() === 'error') consoleErrors.push(msg.text());
    });
    await page.exposeFunction('reportCspViolation', (text) => cspViolations.push(text));
    await page.evaluateOnNewDocument(() => {
      document.addEventListener('securitypolicyviolation', (e) => {
        window.reportCspViolation(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'}`);
      });
    });
  });

  after(async () => {
    await firefox?.close();
    await chromium?.close();
    await server?.close();
    relay?.close();
  });

  const text = (selector) => page.$eval(selector, (el) => el.textContent.trim());
  const waitForFirefoxText = (selector, expected, timeout = 15_000) =>
    waitFor(async () => (await text(selector)) === expected, {
      timeout, what: `${selector} to read ${expected} in Firefox`, describe: () => text(selector),
    });

  test('loads under the CSP and registers', async () => {
    await page.goto(`${server.url}/`);
    await waitFor(() => page.$eval('#login', (b) => !b.disabled), { what: 'login to enable in Firefox' });
    await page.type('#dn', '5001');
    await page.type('#password', 'pass5001');
    await page.click('#login');
    await waitForFirefoxText('#reg-state', 'Registered');
    assert.deepEqual(cspViolations, []);
    assert.deepEqual(consoleErrors, []);
  });

  test('Firefox calls chromium and both receive audio', async () => {
    const { context, page: other } = await openPhone(chromium, server.url, '5002', 'pass5002');
    await waitForRegState(other, 'Registered');

    await page.type('#number', '5002');
    await page.click('#call');
    await waitForCallState(other, 'Ringing');
    await other.click('#answer');
    await waitForFirefoxText('#call-state', 'In call');
    await waitForCallState(other, 'In call', { failOn: CALL_ENDED });

    // phoneState only uses page.evaluate, which puppeteer pages have too.
    const ffStats = async () => (await phoneState(page)).stats;
    await waitFor(async () => (await ffStats())?.packetsReceived > 25, {
      what: 'Firefox to receive RTP', describe: async () => JSON.stringify(await ffStats()),
    });
    await waitFor(async () => (await phoneState(other)).stats?.packetsReceived > 25, {
      what: 'chromium to receive RTP from Firefox', describe: async () => JSON.stringify((await phoneState(other)).stats),
    });
    await page.click('#dtmf-7');
    await waitFor(async () => (await phoneState(page)).dtmfSent === '7', { what: 'DTMF from Firefox' });
    assert.deepEqual(relay.requests('INFO'), []);

    await page.click('#hangup');
    await waitForCallState(other, 'Ended: Terminated');
    await waitForFirefoxText('#call-state', 'Ended: Terminated');
    assert.deepEqual(cspViolations, []);
    assert.deepEqual(consoleErrors, []);
    await context.close();
  });
});
