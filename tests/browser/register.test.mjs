// The softphone as served by the gateway itself registers an agent over WSS, shows it, and
// reports a wrong password. Skips when the gateway binary is absent, unless GATEWAYD_REQUIRE=1.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ARTIFACTS, chromiumMissing, gatewayMissing, launchBrowser, openPhone, phoneState, startGateway, waitForRegState,
} from './lib.mjs';

describe('softphone registration through the gateway', { skip: chromiumMissing() || gatewayMissing() }, () => {
  let gateway;
  let browser;

  before(async () => {
    gateway = await startGateway();
    browser = await launchBrowser();
    await mkdir(ARTIFACTS, { recursive: true });
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
  });

  test('5001 registers and the page says Registered', async () => {
    const { context, page, seen } = await openPhone(browser, gateway.url, '5001', 'pass5001');
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    assert.equal((await phoneState(page)).registration, 'Registered');
    assert.equal(await page.isEnabled('#call'), true, 'calling is possible once registered');
    await page.screenshot({ path: join(ARTIFACTS, 'softphone-registered.png'), fullPage: true });
    assert.deepEqual(await seen.cspViolations(), [], 'the gateway CSP admits the page');
    assert.deepEqual(seen.consoleErrors, []);
    assert.deepEqual(seen.pageErrors, []);

    await page.click('#logout');
    await waitForRegState(page, 'Unregistered');
    await context.close();
  });

  test('a wrong password shows the failure', async () => {
    const { context, page } = await openPhone(browser, gateway.url, '5002', 'not-the-password');
    const text = await waitForRegState(page, /^Registration failed: .+/, { timeout: 15_000 });
    assert.notEqual((await phoneState(page)).registration, 'Registered', text);
    assert.ok(await page.isVisible('#login'), 'the login form is offered again');
    await context.close();
  });
});
