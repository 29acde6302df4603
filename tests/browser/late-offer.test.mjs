// Genesys-style third-party call control: sipp, as the SIP server, sends an INVITE without SDP
// asking for auto-answer, answers the gateway's offer in its ACK, then re-INVITEs with its real
// media; the softphone answers by itself, hears sipp's tone through it, and sipp hangs up.
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

const SCENARIO = join(ROOT, 'tests', 'browser', 'sipp', 'inbound-late-offer.xml');
const sippMissing = existsSync(SIPP) ? false : `${SIPP} not found: apt-get install sip-tester`;
const TALK_MS = 12_000;

describe('inbound late offer and re-INVITE from the SIP server', { skip: chromiumMissing() || sippMissing || gatewayMissing(), timeout: 120_000 }, () => {
  let gateway;
  let browser;
  let tmp;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-late-offer-'));
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

  test('auto-answered late-offer call takes the re-INVITE and carries the tone', async () => {
    const { context, page, seen } = await openPhone(browser, gateway.url, '5006', 'pass5006', { query: '?raw-audio=1' });
    await waitForRegState(page, 'Registered', { timeout: 15_000 });

    // sipp resolves tone.ulaw against its working directory; a missing file would be silent.
    const output = [];
    const sipp = spawn(SIPP, [
      '-sf', SCENARIO, '-i', '127.0.0.1', '-p', '5080', '-mp', '30000', '-m', '1', '-s', '5006',
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
      await page.screenshot({ path: join(ARTIFACTS, 'softphone-late-offer.png'), fullPage: true });
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
  });
});
