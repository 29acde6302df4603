// The contact centre calls an agent: sipp plays the internal SIP server (127.0.0.1:5080 in
// the lab profile) and sends an INVITE with Call-Info answer-after=0 to the gateway's internal
// side; the softphone answers by itself and hears the G.711 tone sipp streams; sipp hangs up.
// Two ways in: an early offer (INVITE with SDP), and Genesys-style third-party call control (an
// INVITE without SDP whose ACK answers the gateway's offer, then a re-INVITE with real media).
// Skips when the gateway binary is absent (unless GATEWAYD_REQUIRE=1) or sipp is not installed.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ARTIFACTS, CALL_ENDED, ROOT, SIPP, chromiumMissing, gatewayMissing, launchBrowser, openPhone, phoneState,
  startGateway, waitFor, waitForAudio, waitForCallState, waitForRegState, writeToneUlaw, writeToneWav,
} from './lib.mjs';

const scenario = (name) => join(ROOT, 'tests', 'browser', 'sipp', name);
const sippMissing = existsSync(SIPP) ? false : `${SIPP} not found: apt-get install sip-tester`;
const TALK_MS = 12_000;

describe('inbound call from the SIP server', { skip: chromiumMissing() || sippMissing || gatewayMissing(), timeout: 240_000 }, () => {
  let gateway;
  let browser;
  let tmp;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-inbound-'));
    await mkdir(ARTIFACTS, { recursive: true });
    await writeToneUlaw(join(tmp, 'tone.ulaw'), { freq: 440, seconds: 20 });
    gateway = await startGateway();
    browser = await launchBrowser({ fakeAudioFile: await writeToneWav(join(tmp, 'mic.wav'), { freq: 660, seconds: 30 }) });
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('auto-answered call carries the tone, and the far end hangs up', () =>
    autoAnsweredCall('inbound-auto-answer.xml', '5001', 'softphone-inbound.png'));

  test('late offer, then the re-INVITE with real media: auto-answered, tone heard', () =>
    autoAnsweredCall('inbound-late-offer.xml', '5006', 'softphone-late-offer.png'));

  async function autoAnsweredCall(scenarioFile, dn, screenshot) {
    const { context, page, seen } = await openPhone(browser, gateway.url, dn, `pass${dn}`, { query: '?raw-audio=1' });
    await waitForRegState(page, 'Registered', { timeout: 15_000 });

    // sipp resolves tone.ulaw against its working directory; a missing file would be silent.
    const output = [];
    const sipp = spawn(SIPP, [
      '-sf', scenario(scenarioFile), '-i', '127.0.0.1', '-p', '5080', '-mp', '30000', '-m', '1', '-s', dn,
      '-d', String(TALK_MS), '-aa', '-nostdin', '-timeout', '60s', '-timeout_error', '-trace_err', '-trace_msg',
      '127.0.0.1:5060',
    ], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    sipp.stdout.on('data', (d) => output.push(d.toString()));
    sipp.stderr.on('data', (d) => output.push(d.toString()));
    const exited = new Promise((r) => sipp.on('exit', (code) => r(code)));
    try {
      await waitForCallState(page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });
      assert.equal((await phoneState(page)).direction, 'incoming');
      const stats = await waitForAudio(page, { above: 0.05, minPackets: 50, timeout: 10_000, label: 'the tone from sipp:' });
      assert.equal(stats.codec, 'PCMU');
      await page.screenshot({ path: join(ARTIFACTS, screenshot), fullPage: true });
      await page.click('#dtmf-1');
      await waitFor(async () => (await phoneState(page)).dtmfSent === '1', { what: 'DTMF 1 sent' });

      await waitForCallState(page, 'Ended: Terminated', { timeout: TALK_MS + 10_000 });
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
      assert.equal(code, 0, `sipp finished the scenario:\n${output.join('').slice(-3000)}`);
    } catch (err) {
      // -trace_err and -trace_msg write sipp's complaints and messages into its working directory.
      const logs = (await readdir(tmp)).filter((f) => /_(errors|messages)\.log$/.test(f)).sort();
      const errors = (await Promise.all(logs.map((f) => readFile(join(tmp, f), 'utf8')))).join('');
      err.message += `\nsipp said:\n${output.join('').slice(-2000)}\n${errors.slice(-4000) || '(no sipp log)'}`;
      throw err;
    } finally {
      if (sipp.exitCode === null) sipp.kill('SIGKILL');
      await exited;
    }
    assert.deepEqual(await seen.cspViolations(), []);
    assert.deepEqual(seen.consoleErrors, []);
    assert.deepEqual(seen.pageErrors, []);
    await context.close();
  }
});
