// An agent dials out: the softphone calls a number the lab profile allows, the gateway places
// the call through the SIP server (sipp on 127.0.0.1:5080 answering and playing a tone), the
// agent hears the far end through both legs and hangs up; a number outside the
// profile's patterns is refused before it reaches the server.
// Skips when the gateway binary is absent (unless GATEWAYD_REQUIRE=1) or sipp is not installed.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CALL_ENDED, ROOT, SIPP, chromiumMissing, gatewayMissing, launchBrowser, openPhone, phoneState,
  startGateway, waitForAudio, waitForCallState, waitForRegState, writeToneUlaw, writeToneWav,
} from './lib.mjs';

const SCENARIO = join(ROOT, 'tests', 'browser', 'sipp', 'outbound-answer.xml');

const sippMissing = existsSync(SIPP) ? false : `${SIPP} not found: apt-get install sip-tester`;

describe('outbound call through the SIP server', { skip: chromiumMissing() || sippMissing || gatewayMissing(), timeout: 120_000 }, () => {
  let gateway;
  let browser;
  let tmp;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-outbound-'));
    await writeToneUlaw(join(tmp, 'tone.ulaw'), { freq: 440, seconds: 30 });
    gateway = await startGateway();
    browser = await launchBrowser({ fakeAudioFile: await writeToneWav(join(tmp, 'mic.wav'), { freq: 500, seconds: 30 }) });
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('the agent calls out, hears the far end, holds and resumes, and hangs up', async () => {
    const { context, page } = await openPhone(browser, gateway.url, '5003', 'pass5003', { query: '?raw-audio=1' });
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    const output = [];
    const sipp = spawn(SIPP, [
      '-sf', SCENARIO, '-i', '127.0.0.1', '-p', '5080', '-mp', '31000', '-m', '1',
      '-aa', '-nostdin', '-timeout', '60s', '-timeout_error',
    ], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    sipp.stdout.on('data', (d) => output.push(d.toString()));
    sipp.stderr.on('data', (d) => output.push(d.toString()));
    const exited = new Promise((r) => sipp.on('exit', (code) => r(code)));
    try {
      await page.fill('#number', '7000');
      await page.click('#call');
      await waitForCallState(page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });
      assert.equal((await phoneState(page)).direction, 'outgoing');
      const stats = await waitForAudio(page, { above: 0.05, minPackets: 50, timeout: 15_000, label: 'the far end\'s tone:' });
      assert.match(stats.codec, /PCM[UA]/);
      // Hold and resume from the browser: absorbed at the gateway (the scenario would fail on
      // an unexpected re-INVITE), and the far end is heard again afterwards.
      await page.click('#hold');
      await waitForCallState(page, 'On hold', { timeout: 10_000, failOn: CALL_ENDED });
      await page.click('#hold');
      await waitForCallState(page, 'In call', { timeout: 10_000, failOn: CALL_ENDED });
      const before = (await phoneState(page)).stats.packetsReceived;
      await waitForAudio(page, { above: 0.05, minPackets: before + 50, timeout: 15_000, label: 'the far end after resume:' });
      await page.click('#hangup');
      await waitForCallState(page, CALL_ENDED, { timeout: 10_000 });
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
      assert.equal(code, 0, `sipp saw the whole call, BYE included:\n${output.join('').slice(-3000)}`);
    } catch (err) {
      err.message += `\nsipp said:\n${output.join('').slice(-3000)}`;
      throw err;
    } finally {
      if (sipp.exitCode === null) sipp.kill('SIGKILL');
      await exited;
    }
    await context.close();
  });

  test('a number outside the profile\'s patterns is refused', async () => {
    const { context, page } = await openPhone(browser, gateway.url, '5004', 'pass5004');
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    await page.fill('#number', '12');
    await page.click('#call');
    await waitForCallState(page, CALL_ENDED, { timeout: 10_000 });
    await context.close();
  });
});
