// The caller gives up while the agent's phone rings: sipp, as the SIP server, sends an INVITE
// without auto-answer, then CANCEL; the softphone stops ringing and shows the call ended, and
// the server gets 200 for its CANCEL and 487 for its INVITE.
// Skips when the gateway binary is absent (unless GATEWAYD_REQUIRE=1) or sipp is not installed.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  CALL_ENDED, ROOT, SIPP, chromiumMissing, gatewayMissing, launchBrowser, openPhone,
  startGateway, waitForCallState, waitForRegState,
} from './lib.mjs';

const SCENARIO = join(ROOT, 'tests', 'browser', 'sipp', 'inbound-cancel.xml');
const sippMissing = existsSync(SIPP) ? false : `${SIPP} not found: apt-get install sip-tester`;

describe('inbound call cancelled before answer', { skip: chromiumMissing() || sippMissing || gatewayMissing(), timeout: 90_000 }, () => {
  let gateway;
  let browser;

  before(async () => {
    gateway = await startGateway();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
  });

  test('the ringing stops and the server gets 487', async () => {
    const { context, page } = await openPhone(browser, gateway.url, '5005', 'pass5005');
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    const output = [];
    const sipp = spawn(SIPP, [
      '-sf', SCENARIO, '-i', '127.0.0.1', '-p', '5080', '-mp', '32000', '-m', '1', '-s', '5005',
      '-d', '2000', '-aa', '-nostdin', '-timeout', '30s', '-timeout_error', '127.0.0.1:5060',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    sipp.stdout.on('data', (d) => output.push(d.toString()));
    sipp.stderr.on('data', (d) => output.push(d.toString()));
    const exited = new Promise((r) => sipp.on('exit', (code) => r(code)));
    try {
      await waitForCallState(page, 'Ringing', { timeout: 15_000, failOn: CALL_ENDED });
      await waitForCallState(page, CALL_ENDED, { timeout: 15_000 });
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
      assert.equal(code, 0, `sipp got 200 for CANCEL and 487 for INVITE:\n${output.join('').slice(-3000)}`);
    } finally {
      if (sipp.exitCode === null) sipp.kill('SIGKILL');
      await exited;
    }
    await context.close();
  });
});
