// The softphone as served by the gateway itself registers an agent over WSS, shows it, keeps
// the idle connection alive with CRLF keepalives the gateway answers, and reports a wrong
// password. Skips when the gateway binary is absent, unless GATEWAYD_REQUIRE=1.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ARTIFACTS, chromiumMissing, gatewayMissing, launchBrowser, openPhone, phoneState, startGateway, waitFor, waitForRegState,
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

  test('an idle registered page pings the gateway, which answers, and the connection stays', async () => {
    // Frames on the page's SIP WebSocket, as Chromium's network layer sees them.
    const frames = [];
    let closed = 0;
    const { context, page } = await openPhone(browser, gateway.url, '5003', 'pass5003', {
      beforeLoad: (p) => p.on('websocket', (ws) => {
        ws.on('framesent', (f) => frames.push({ dir: 'out', data: String(f.payload), at: Date.now() }));
        ws.on('framereceived', (f) => frames.push({ dir: 'in', data: String(f.payload), at: Date.now() }));
        ws.on('close', () => { closed += 1; });
      }),
    });
    try {
      await waitForRegState(page, 'Registered', { timeout: 15_000 });
      const pings = () => frames.filter((f) => f.dir === 'out' && f.data === '\r\n\r\n');
      // Three pings (4 s apart while idle), each answered with a lone CRLF within the 2 s the
      // page allows: had the gateway not answered, the page would have dropped the connection
      // 2 s after the first.
      await waitFor(() => pings().length >= 3 && frames.filter((f) => f.dir === 'in' && f.data === '\r\n').length >= 3,
        { timeout: 20_000, what: 'three keepalives answered', describe: () => JSON.stringify(frames.slice(-6)) });
      for (const ping of pings()) {
        const pong = frames.find((f) => f.dir === 'in' && f.data === '\r\n' && f.at >= ping.at);
        assert.ok(pong && pong.at - ping.at < 2000, `keepalive at ${ping.at} answered: ${JSON.stringify(pong)}`);
      }
      const gaps = pings().slice(1).map((p, i) => p.at - pings()[i].at);
      assert.ok(gaps.every((g) => g >= 3500 && g < 6000), `pings 4 s apart while idle: ${gaps}`);
      assert.equal(closed, 0, 'the connection was kept');
      assert.equal((await phoneState(page)).registration, 'Registered');
    } finally {
      await context.close();
    }
  });

  test('a wrong password shows the failure', async () => {
    const { context, page } = await openPhone(browser, gateway.url, '5002', 'not-the-password');
    const text = await waitForRegState(page, /^Registration failed: .+/, { timeout: 15_000 });
    assert.notEqual((await phoneState(page)).registration, 'Registered', text);
    assert.ok(await page.isVisible('#login'), 'the login form is offered again');
    await context.close();
  });
});
