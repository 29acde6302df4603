// Failover between SIP servers: the profile lists two upstream servers (by priority); the first
// (sipp on 127.0.0.1:5080) answers the agent's outbound INVITE with 503, the gateway tries the
// second (sipp on 127.0.0.1:5082), which answers and plays a tone the agent hears. The agent
// never sees the first refusal.
// Skips when the gateway binary is absent (unless GATEWAYD_REQUIRE=1) or sipp is not installed.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CALL_ENDED, ROOT, SIPP, chromiumMissing, gatewayMissing, launchBrowser, openPhone,
  startGateway, waitForAudio, waitForCallState, waitForRegState, writeToneUlaw, writeToneWav,
} from './lib.mjs';

const sippMissing = existsSync(SIPP) ? false : `${SIPP} not found: apt-get install sip-tester`;
const scenario = (name) => join(ROOT, 'tests', 'browser', 'sipp', name);

function sipp(args, cwd) {
  const output = [];
  const proc = spawn(SIPP, [...args, '-i', '127.0.0.1', '-m', '1', '-aa', '-nostdin', '-timeout', '60s', '-timeout_error'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout.on('data', (d) => output.push(d.toString()));
  proc.stderr.on('data', (d) => output.push(d.toString()));
  const exited = new Promise((r) => proc.on('exit', (code) => r(code)));
  return { proc, output, exited };
}

describe('failover to the second SIP server', { skip: chromiumMissing() || sippMissing || gatewayMissing(), timeout: 120_000 }, () => {
  let gateway;
  let browser;
  let tmp;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-failover-'));
    await writeToneUlaw(join(tmp, 'tone.ulaw'), { freq: 440, seconds: 30 });
    // The lab profile with a standby server, through the documented environment override.
    process.env.GATEWAYD_UPSTREAM__SERVERS = '[{address="127.0.0.1:5080",transport="udp",priority=1},{address="127.0.0.1:5082",transport="udp",priority=2}]';
    gateway = await startGateway();
    delete process.env.GATEWAYD_UPSTREAM__SERVERS;
    browser = await launchBrowser({ fakeAudioFile: await writeToneWav(join(tmp, 'mic.wav'), { freq: 500, seconds: 30 }) });
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('a 503 from the first server sends the call to the second', async () => {
    const { context, page } = await openPhone(browser, gateway.url, '5007', 'pass5007', { query: '?raw-audio=1' });
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    const first = sipp(['-sf', scenario('outbound-503.xml'), '-p', '5080', '-mp', '33000'], tmp);
    const second = sipp(['-sf', scenario('outbound-answer.xml'), '-p', '5082', '-mp', '34000'], tmp);
    try {
      await page.fill('#number', '7000');
      await page.click('#call');
      await waitForCallState(page, 'In call', { timeout: 20_000, failOn: CALL_ENDED });
      await waitForAudio(page, { above: 0.05, minPackets: 50, timeout: 15_000, label: 'the second server\'s tone:' });
      await page.click('#hangup');
      await waitForCallState(page, CALL_ENDED, { timeout: 10_000 });
      for (const [name, s] of [['first (503)', first], ['second (answers)', second]]) {
        const code = await Promise.race([s.exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
        assert.equal(code, 0, `${name} sipp finished its scenario:\n${s.output.join('').slice(-2000)}`);
      }
    } finally {
      for (const s of [first, second]) {
        if (s.proc.exitCode === null) s.proc.kill('SIGKILL');
        await s.exited;
      }
    }
    await context.close();
  });
});
