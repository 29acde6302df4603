// Opus on the browser leg holds up under loss where G.711 does not: the same echo call ("Test my
// audio") once with media.agent_codecs = ["opus", ...] and once with G.711 only, each with 10 %
// random loss on the browser leg (in a network namespace the test creates, on UDP only, so the
// WebSocket carrying SIP is not touched). Chromium's own receive statistics decide: the share
// of the samples it played out that it had to conceal (concealedSamples / totalSamplesReceived)
// must be lower for Opus, whose in-band FEC lets the gateway rebuild a lost packet from the next
// one on the way in and lets the browser do the same on the way back. G.711 carries no
// redundancy, so every packet lost either way is concealed.
// The gateway and chromium run inside the namespace. The loss is nft's `numgen random` on the
// namespace's output hook, one independent draw per packet as netem's `loss random` makes:
// netem (and tc's u32 and gact) are not in every kernel, this machine kind's among them
// (CONFIG_NET_SCH_NETEM is not set), where nft is already needed for the firewall.
// Needs root, `ip netns` and nft.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CALL_ENDED, ROOT, capturePeerConnections, chromiumMissing, gatewayBinary, gatewayMissing,
  launchBrowserInNetns, openPhone, waitFor, waitForAudio, waitForCallState, waitForRegState, writeToneWav,
  netnsUnavailable, runChecked as run,
} from './lib.mjs';

const NS = `gwt-opusloss-${process.pid % 100000}`;
const LOSS_PERCENT = 10;
// Seconds of audio played out while the loss is on before the figures are taken.
const LOSSY_SECONDS = 12;

const nft = (...args) => run(['ip', 'netns', 'exec', NS, 'nft', ...args]);

// UDP leaving anything in the namespace (both directions of the browser leg: browser and
// gateway share its loopback) loses PERCENT of its packets, at random; TCP is never touched.
function setLoss(percent) {
  nft('flush', 'chain', 'inet', 'loss', 'out');
  if (percent > 0) nft('add', 'rule', 'inet', 'loss', 'out', 'meta', 'l4proto', 'udp', 'numgen', 'random', 'mod', '100', '<', String(percent), 'counter', 'drop');
}

function lossDrops() {
  const out = nft('list', 'chain', 'inet', 'loss', 'out');
  return Number((out.match(/counter packets (\d+)/) || [])[1] || 0);
}

// The page's inbound audio as Chromium counts it.
function inboundAudio(page) {
  return page.evaluate(async () => {
    const pc = window.__peerConnections.at(-1);
    if (!pc) return null;
    let found = null;
    let codecs = new Map();
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'codec') codecs.set(s.id, s.mimeType);
      if (s.type === 'inbound-rtp' && s.kind === 'audio') found = s;
    });
    if (!found) return null;
    return {
      codec: codecs.get(found.codecId) || null,
      packetsReceived: found.packetsReceived,
      packetsLost: found.packetsLost,
      concealedSamples: found.concealedSamples,
      totalSamplesReceived: found.totalSamplesReceived,
      totalSamplesDuration: found.totalSamplesDuration,
      fecPacketsReceived: found.fecPacketsReceived ?? null,
    };
  });
}

describe('Opus conceals less than G.711 with 10 % loss on the browser leg', { skip: chromiumMissing() || gatewayMissing() || netnsUnavailable(), timeout: 240_000 }, () => {
  let tmp;
  let browser;
  let gateway = null;
  let output = '';
  const figures = {};

  async function startGatewayInNs(agentCodecs) {
    output = '';
    const proc = spawn('ip', ['netns', 'exec', NS, gatewayBinary(), 'run', '--profile', join(ROOT, 'profiles/lab.toml'), '--state-dir', join(tmp, 'state')], {
      cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: 'info', GATEWAYD_MEDIA__AGENT_CODECS: agentCodecs },
    });
    const keep = (c) => { output += c.toString(); if (output.length > 200_000) output = output.slice(-100_000); };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    gateway = proc;
    await waitFor(() => {
      if (proc.exitCode !== null) throw new Error(`gatewayd exited early:\n${output.slice(-3000)}`);
      return output.includes('gatewayd ready');
    }, { timeout: 30_000, what: 'the gateway in the namespace', describe: () => output.slice(-3000) });
  }

  async function stopGateway() {
    if (gateway && gateway.exitCode === null) {
      const exited = new Promise((r) => gateway.on('exit', r));
      gateway.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (gateway.exitCode === null) gateway.kill('SIGKILL');
    }
    gateway = null;
  }

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-opus-loss-'));
    spawnSync('ip', ['netns', 'del', NS]);
    run(['ip', 'netns', 'add', NS]);
    run(['ip', '-n', NS, 'link', 'set', 'lo', 'up']);
    run(['ip', 'netns', 'exec', NS, 'nft', '-f', '-'], 'table inet loss {\n  chain out {\n    type filter hook output priority 0; policy accept;\n  }\n}\n');
    // The first start makes the web certificate the browser is told to trust; the second
    // start keeps the same state directory and so the same certificate.
    await startGatewayInNs('["opus", "PCMU", "PCMA"]');
    browser = await launchBrowserInNetns(NS, tmp, {
      certPath: join(tmp, 'state', 'web.crt'),
      fakeAudioFile: await writeToneWav(join(tmp, 'tone.wav'), { freq: 620, seconds: 120 }),
    });
  });

  after(async () => {
    await browser?.close();
    await stopGateway();
    spawnSync('ip', ['netns', 'del', NS]);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  // One echo call: audio first without loss, then the figures over LOSSY_SAMPLES with loss.
  async function lossyEchoCall(t, label, wantCodec) {
    const { context, page, seen } = await openPhone(browser, 'https://127.0.0.1:8443', '5001', 'pass5001', {
      query: '?raw-audio=1', beforeLoad: capturePeerConnections,
    });
    try {
      await waitForRegState(page, 'Registered', { timeout: 15_000 });
      await page.click('#echo-test');
      await waitForCallState(page, 'In call', { timeout: 20_000, failOn: CALL_ENDED });
      await waitForAudio(page, { above: 0.05, minPackets: 50, timeout: 20_000, label: `${label}: the echoed tone` });
      const start = await inboundAudio(page);
      assert.equal(start.codec, wantCodec, `${label}: the browser leg's codec`);
      setLoss(LOSS_PERCENT);
      let end;
      let dropped;
      try {
        end = await waitFor(async () => {
          const s = await inboundAudio(page);
          return s && s.totalSamplesDuration - start.totalSamplesDuration >= LOSSY_SECONDS ? s : null;
        }, {
          timeout: (LOSSY_SECONDS + 15) * 1000, interval: 250, what: `${label}: ${LOSSY_SECONDS} s played out under loss`,
          describe: async () => JSON.stringify({ start, now: await inboundAudio(page) }),
        });
      } finally {
        dropped = lossDrops();
        setLoss(0);
      }
      const concealed = end.concealedSamples - start.concealedSamples;
      const total = end.totalSamplesReceived - start.totalSamplesReceived;
      const figure = {
        codec: end.codec,
        concealedRatio: Number((concealed / total).toFixed(4)),
        packetsLost: end.packetsLost - start.packetsLost,
        packetsReceived: end.packetsReceived - start.packetsReceived,
        fecPacketsReceived: end.fecPacketsReceived,
        lossDropped: dropped,
      };
      t.diagnostic(`${label}: ${JSON.stringify(figure)}`);
      assert.ok(dropped > 50, `${label}: the loss rule dropped packets of the call (${dropped})`);
      assert.ok(figure.packetsLost > 0, `${label}: the browser saw loss: ${JSON.stringify(figure)}`);
      assert.deepEqual(seen.pageErrors, []);
      await page.click('#hangup');
      await waitForCallState(page, CALL_ENDED, { timeout: 10_000 });
      return figure;
    } finally {
      await context.close();
    }
  }

  test('Opus echo call under 10 % loss', async (t) => {
    figures.opus = await lossyEchoCall(t, 'Opus', 'audio/opus');
    await stopGateway();
  });

  test('G.711 echo call under 10 % loss', async (t) => {
    await startGatewayInNs('["PCMU", "PCMA"]');
    figures.g711 = await lossyEchoCall(t, 'G.711', 'audio/PCMU');
  });

  test('Opus conceals a smaller share of the call than G.711', () => {
    assert.ok(figures.opus && figures.g711, 'both calls ran');
    // G.711 has nothing to rebuild a lost packet from: about a tenth of what the page plays
    // is concealed (0.10-0.11 seen). Much less would mean the loss did not reach the call and
    // the comparison means nothing.
    assert.ok(figures.g711.concealedRatio > 0.08, `G.711 under loss conceals a real share: ${JSON.stringify(figures.g711)}`);
    assert.ok(figures.opus.concealedRatio < figures.g711.concealedRatio,
      `Opus ${figures.opus.concealedRatio} < G.711 ${figures.g711.concealedRatio}`);
  });
});
