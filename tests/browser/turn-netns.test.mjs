// An agent whose network drops UDP to the gateway's media range still gets audio, through TURN.
// The gateway (lab profile) and chromium run in a network namespace this test creates; nft in
// that namespace drops every UDP packet to the media ports except those leaving the gateway's
// TURN relay range, as a corporate firewall that allows only 443/3478 would. The softphone uses
// its normal ICE policy: the direct path is tried and dropped (the rule's counter says so), the
// relayed one carries the echo call.
// Needs root, `ip netns` and nft; skips with a message otherwise.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CALL_ENDED, ROOT, chromiumMissing, gatewayBinary, gatewayMissing, launchBrowserInNetns, openPhone,
  waitFor, waitForAudio, waitForCallState, waitForRegState, writeToneWav,
  netnsUnavailable, runChecked as run,
} from './lib.mjs';

const NS = `gwt-turnmedia-${process.pid % 100000}`;

function skipReason() {
  return chromiumMissing() || gatewayMissing() || netnsUnavailable();
}

// Drops UDP toward the media range unless it comes from the TURN relay range.
const RULES = `
table inet agentnet {
  chain out {
    type filter hook output priority 0; policy accept;
    udp dport 40000-40999 udp sport != 43000-43999 counter drop
  }
}
`;

describe('audio through TURN when the agent network drops direct UDP', { skip: skipReason(), timeout: 120_000 }, () => {
  let tmp;
  let gateway;
  let output = '';
  let browser;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-turn-netns-'));
    spawnSync('ip', ['netns', 'del', NS]);
    run(['ip', 'netns', 'add', NS]);
    run(['ip', '-n', NS, 'link', 'set', 'lo', 'up']);
    run(['ip', 'netns', 'exec', NS, 'nft', '-f', '-'], RULES);

    gateway = spawn('ip', ['netns', 'exec', NS, gatewayBinary(), 'run', '--profile', join(ROOT, 'profiles/lab.toml'), '--state-dir', join(tmp, 'state')], {
      cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'info' },
    });
    const keep = (c) => { output += c.toString(); };
    gateway.stdout.on('data', keep);
    gateway.stderr.on('data', keep);
    await waitFor(() => output.includes('gatewayd ready'), { timeout: 30_000, what: 'the gateway in the namespace', describe: () => output.slice(-3000) });

    browser = await launchBrowserInNetns(NS, tmp, {
      certPath: join(tmp, 'state', 'web.crt'),
      fakeAudioFile: await writeToneWav(join(tmp, 'tone.wav'), { seconds: 60 }),
    });
  });

  after(async () => {
    await browser?.close();
    if (gateway && gateway.exitCode === null) {
      gateway.kill('SIGTERM');
      await new Promise((r) => { gateway.on('exit', r); setTimeout(r, 10_000); });
    }
    spawnSync('ip', ['netns', 'del', NS]);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('the echo call has audio over a relayed candidate and the direct path was dropped', async () => {
    const { context, page, seen } = await openPhone(browser, 'https://127.0.0.1:8443', '5001', 'pass5001', { query: '?raw-audio=1' });
    try {
      await waitForRegState(page, 'Registered', { timeout: 15_000 });
      await waitFor(async () => (await page.evaluate(() => window.gatewaydPhone.turn))?.state === 'ready', { what: 'TURN credentials', timeout: 10_000 });
      await page.click('#echo-test');
      await waitForCallState(page, 'In call', { timeout: 20_000, failOn: CALL_ENDED });
      const stats = await waitForAudio(page, { above: 0.05, minPackets: 50, timeout: 20_000, label: 'the echoed tone past the firewall:' });
      assert.equal(stats.localCandidateType, 'relay', 'only the relayed path can carry media here');
      const counter = run(['ip', 'netns', 'exec', NS, 'nft', 'list', 'chain', 'inet', 'agentnet', 'out']);
      const dropped = Number((counter.match(/counter packets (\d+)/) || [])[1] || 0);
      assert.ok(dropped > 0, `the direct path was tried and dropped:\n${counter}`);
      assert.deepEqual(seen.pageErrors, []);
      await page.click('#hangup');
      await waitForCallState(page, CALL_ENDED, { timeout: 10_000 });
    } finally {
      await context.close();
    }
  });
});
