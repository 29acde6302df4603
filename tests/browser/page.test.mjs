// The softphone page on its own, served with the gateway's CSP by a small static server:
// it loads cleanly, offers the login form, and tells the truth when the WebSocket is closed.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ARTIFACTS, WEB_DIST, chromiumMissing, launchBrowser, login, newContext, phoneState,
  startStaticServer, waitFor, waitForRegState, waitForText, watchPage,
} from './lib.mjs';

const WS_FAILURE = /^WebSocket connection to 'wss:\/\/127\.0\.0\.1:\d+\/ws' failed/;

describe('softphone page', { skip: chromiumMissing() }, () => {
  let server;
  let browser;

  before(async () => {
    assert.ok(existsSync(join(WEB_DIST, 'index.html')), 'web/dist is missing: run npm run build');
    server = await startStaticServer();
    browser = await launchBrowser();
    await mkdir(ARTIFACTS, { recursive: true });
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  async function open(path = '/') {
    const context = await newContext(browser);
    const page = await context.newPage();
    const seen = await watchPage(page);
    const foreign = [];
    page.on('request', (req) => {
      const url = req.url();
      if (!url.startsWith(server.url) && !url.startsWith('data:')) foreign.push(url);
    });
    await page.goto(`${server.url}${path}`);
    return { context, page, seen, foreign };
  }

  test('loads under the strict CSP with no errors and offers the login form', async () => {
    const { context, page, seen, foreign } = await open();
    await waitFor(() => page.locator('#login').isEnabled(), { what: 'config to load and #login to enable' });
    for (const id of ['#dn', '#password', '#login', '#reg-state']) {
      assert.ok(await page.locator(id).isVisible(), `${id} is visible`);
    }
    assert.equal(await page.getAttribute('#password', 'type'), 'password');
    assert.equal((await page.textContent('#reg-state')).trim(), 'Unregistered');
    assert.equal((await page.textContent('#site')).trim(), 'lab');
    const state = await phoneState(page);
    assert.equal(state.registration, 'Unregistered');
    assert.equal(state.call, 'Idle');
    assert.equal(state.stats, null);
    // Controls that need a registration exist but are out of reach until then.
    for (const id of ['#number', '#call', '#hangup', '#mute', '#hold', '#logout', '#dtmf-5', '#quality']) {
      assert.equal(await page.locator(id).count(), 1, `${id} exists`);
    }
    assert.equal(await page.isVisible('#answer'), false);
    // The hook is read-only.
    const writable = await page.evaluate(() => {
      try {
        window.gatewaydPhone.registrationState = 'Registered';
      } catch {
        // frozen: assignment throws in strict code, is ignored otherwise
      }
      return window.gatewaydPhone.registrationState;
    });
    assert.equal(writable, 'Unregistered');

    assert.deepEqual(await seen.cspViolations(), [], 'no CSP violations');
    assert.deepEqual(seen.consoleErrors, [], 'no console errors');
    assert.deepEqual(seen.pageErrors, [], 'no uncaught exceptions');
    assert.deepEqual(foreign, [], 'nothing fetched from another origin');
    await page.screenshot({ path: join(ARTIFACTS, 'softphone-login.png'), fullPage: true });
    await context.close();
  });

  test('fits a phone-sized screen without sideways scrolling', async () => {
    const { context, page, seen } = await open();
    await page.setViewportSize({ width: 360, height: 740 });
    await waitFor(() => page.locator('#login').isEnabled(), { what: '#login to enable' });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`);
    await page.screenshot({ path: join(ARTIFACTS, 'softphone-login-narrow.png'), fullPage: true });
    assert.deepEqual(await seen.cspViolations(), []);
    await context.close();
  });

  test('a login against a closed WebSocket never claims to be registered', async () => {
    const { context, page, seen } = await open();
    await login(page, '5001', 'pass5001');
    await waitForRegState(page, 'Connecting');
    // JsSIP reports the dropped socket; the page says so and keeps retrying.
    await waitForText(page, '#reg-detail', /Connection lost.*retrying/);
    assert.ok(await page.isVisible('#reg-detail'), 'the reason is on screen while signed in');
    assert.equal((await page.textContent('#reg-state')).trim(), 'Connecting');
    await page.screenshot({ path: join(ARTIFACTS, 'softphone-connecting.png'), fullPage: true });
    assert.equal((await phoneState(page)).registration, 'Connecting');
    assert.equal(await page.isDisabled('#call'), true, 'cannot call while not registered');
    assert.equal(await page.isDisabled('#echo-test'), true);
    assert.equal(await page.inputValue('#password').catch(() => ''), '', 'password field cleared');

    await page.click('#logout');
    await waitForRegState(page, 'Unregistered');
    assert.ok(await page.isVisible('#login'), 'login form is back');
    assert.equal(await page.isVisible('#reg-detail'), false, 'no stale reason after signing out');

    assert.deepEqual(await seen.cspViolations(), [], 'the WebSocket attempt is within the CSP');
    const unexpected = seen.consoleErrors.filter((text) => !WS_FAILURE.test(text));
    assert.deepEqual(unexpected, [], 'only the refused WebSocket shows up as an error');
    assert.deepEqual(seen.pageErrors, []);
    await context.close();
  });

  test('a missing /config.json is reported, not ignored', async () => {
    const bare = await startStaticServer({ config: null });
    const context = await newContext(browser);
    const page = await context.newPage();
    await page.goto(bare.url);
    await waitForText(page, '#notice', /cannot start: \/config\.json answered 404/);
    assert.equal(await page.isDisabled('#login'), true);
    await context.close();
    await bare.close();
  });
});
