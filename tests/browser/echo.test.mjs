// "Test my audio" against the gateway's echo endpoint: the page dials the echo number from
// /config.json, the call is answered by the gateway, and the agent's own tone comes back over
// G.711. Skips when the gateway binary is absent, unless GATEWAYD_REQUIRE=1.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ARTIFACTS, CALL_ENDED, chromiumMissing, gatewayMissing, launchBrowser, openPhone, phoneState,
  startGateway, waitFor, waitForAudio, waitForCallState, waitForRegState, writeToneWav,
} from './lib.mjs';

describe('echo test through the gateway', { skip: chromiumMissing() || gatewayMissing(), timeout: 120_000 }, () => {
  let gateway;
  let browser;
  let tmp;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-echo-'));
    await mkdir(ARTIFACTS, { recursive: true });
    gateway = await startGateway();
    browser = await launchBrowser({ fakeAudioFile: await writeToneWav(join(tmp, 'tone.wav'), { seconds: 30 }) });
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('Test my audio: the echo number answers and the tone comes back', async () => {
    const { context, page, seen } = await openPhone(browser, gateway.url, '5001', 'pass5001', { query: '?raw-audio=1' });
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    await page.click('#echo-test');
    await waitForCallState(page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });

    const stats = await waitForAudio(page, { above: 0.05, minPackets: 50, label: 'the echoed tone:' });
    assert.match(stats.codec, /^(PCMU|PCMA)$/, 'G.711 end to end');
    assert.ok(stats.packetsSent > 50);
    await page.screenshot({ path: join(ARTIFACTS, 'softphone-echo.png'), fullPage: true });

    // The operator's view on the management side: the call is listed with the bridge's live figures.
    const listed = await waitFor(async () => {
      const calls = await (await fetch('http://127.0.0.1:9090/calls')).json();
      const echo = calls.find((c) => c.dn === '5001' && c.direction === 'echo');
      return echo?.media?.browser?.packets_received > 50 && echo.answered_ms ? echo : null;
    }, { what: 'the echo call in GET /calls with packets from the browser' });
    assert.ok(listed.media.browser.packets_sent > 0, 'the echo goes back');

    // In-band DTMF must not upset the call.
    await page.click('#dtmf-1');
    await waitFor(async () => (await phoneState(page)).dtmfSent === '1', { what: 'DTMF 1 sent' });

    await page.click('#hangup');
    await waitForCallState(page, 'Ended: Terminated');
    // One record for the call, with its cause and both legs' quality figures.
    const record = await waitFor(() => gateway.logs().split('\n').find((l) => l.includes('call ended') && l.includes('dn=5001')),
      { what: 'the call record in the log' });
    assert.match(record, /direction=Echo/);
    assert.match(record, /cause=agent hung up/);
    assert.match(record, /"mos":\s*[1-4]\.\d/, `a MOS estimate in ${record}`);
    assert.deepEqual(await seen.cspViolations(), []);
    assert.deepEqual(seen.consoleErrors, []);
    assert.deepEqual(seen.pageErrors, []);
    await context.close();
  });
});
