// The stock softphone (JsSIP) through an active/standby pair's failover. Namespaces internet,
// a, b and internal as in gatewayd/tests/ha_netns.rs: the public and internal sides are bridges
// both gateways sit on, a management link joins them, each runs gatewayd and Debian's keepalived
// on the configuration `gatewayd system render` wrote; sipp in the internal namespace is the SIP
// server's registrar. Chromium runs in the internet namespace and loads the softphone from the
// public virtual address. Killing the active gatewayd (kill -9): the softphone reconnects on its
// own and is registered on the standby within 10 s, and its echo call carries the tone. The
// active node's public link going down: nothing closes the softphone's connection, its next
// keepalive reaches the standby, which resets it, and it reconnects, within 10 s of the failure
// as well; and again with the standby dropping the packets of connections it does not know, so
// that the keepalive goes unanswered.
// Needs root, `ip netns`, nft, keepalived and sipp; skips with a message otherwise.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import {
  CALL_ENDED, CHROMIUM, CHROMIUM_ARGS, ROOT, SIPP, chromiumMissing, gatewayBinary, gatewayMissing, openPhone,
  waitFor, waitForAudio, waitForCallState, waitForRegState, writeToneWav, netnsUnavailable, runChecked as run,
} from './lib.mjs';

const ID = process.pid % 100000;
const NS = { inet: `gwhb-inet-${ID}`, a: `gwhb-a-${ID}`, b: `gwhb-b-${ID}`, internal: `gwhb-int-${ID}` };
const VIP_PUBLIC = '203.0.113.10';
const VIP_INTERNAL = '192.168.210.54';
const AGENT = '203.0.113.100';
const SIP_SERVER = '192.168.210.81';
const NODES = { a: { me: 11, peer: 12, priority: 150 }, b: { me: 12, peer: 11, priority: 100 } };

const sh = (line) => run(line.split(/\s+/));

// One node's profile: the pair's, as profiles/ha-pair-{a,b}.toml in lab form.
function profile({ me, peer, priority }) {
  return `
[site]
name = "ha-browser-test"
sip_domain = "${VIP_PUBLIC}"
lab_mode = true

[public]
interface = "pub0"
addresses = ["${VIP_PUBLIC}"]

[internal]
interface = "int0"
address = "${VIP_INTERNAL}"
networks = ["192.168.210.0/24"]

[management]
interface = "mgmt0"
address = "10.20.0.${me}"
allow_from = ["10.20.0.0/24"]

[ha]
priority = ${priority}
peer = "10.20.0.${peer}"
bans_key = "ha-browser-test-key-0123456789"

[ha.public]
virtual_address = "${VIP_PUBLIC}/24"
virtual_router_id = 51
peer = "203.0.113.${peer}"

[ha.internal]
virtual_address = "${VIP_INTERNAL}/24"
virtual_router_id = 52
peer = "192.168.210.${peer}"

[tls]
source = "self-signed"

[web]
https = ["${VIP_PUBLIC}:443"]
allowed_origins = ["https://${VIP_PUBLIC}"]

[sip]
listen = [{ address = "${VIP_INTERNAL}:5060", transport = "udp" }]
echo_number = "600"

[[agents]]
dn = "5001"
password = "pass5001"
upstream_password = "up5001"

[upstream]
registration = "register"
servers = [{ address = "${SIP_SERVER}:5060", transport = "udp" }]

[media]
public_ports = "40000-40010"
internal_ports = "41000-41020"
max_calls = 5

[firewall]
manage = true

[observe]
admin = "10.20.0.${me}:9090"
`;
}

// sipp as registrar and OPTIONS responder, shared with the Rust HA tests.
const REGISTRAR = join(ROOT, 'tests', 'sipp', 'registrar.xml');

function createNamespaces() {
  for (const ns of Object.values(NS)) {
    spawnSync('ip', ['netns', 'del', ns]);
    sh(`ip netns add ${ns}`);
    sh(`ip -n ${ns} link set lo up`);
  }
  for (const [ns, side] of [[NS.inet, 'pub'], [NS.internal, 'int']]) {
    sh(`ip -n ${ns} link add br0 type bridge`);
    sh(`ip -n ${ns} link set br0 up`);
    for (const n of ['a', 'b']) {
      sh(`ip -n ${NS[n]} link add ${side}0 type veth peer name ${side}${n} netns ${ns}`);
      sh(`ip -n ${ns} link set ${side}${n} master br0`);
      sh(`ip -n ${ns} link set ${side}${n} up`);
    }
  }
  sh(`ip -n ${NS.inet} addr add ${AGENT}/24 dev br0`);
  sh(`ip -n ${NS.internal} addr add ${SIP_SERVER}/24 dev br0`);
  sh(`ip -n ${NS.a} link add mgmt0 type veth peer name mgmt0 netns ${NS.b}`);
  for (const n of ['a', 'b']) {
    const { me } = NODES[n];
    sh(`ip -n ${NS[n]} addr add 203.0.113.${me}/24 dev pub0`);
    sh(`ip -n ${NS[n]} addr add 192.168.210.${me}/24 dev int0`);
    sh(`ip -n ${NS[n]} addr add 10.20.0.${me}/24 dev mgmt0`);
    for (const l of ['pub0', 'int0', 'mgmt0']) sh(`ip -n ${NS[n]} link set ${l} up`);
    // Listeners bind the virtual addresses whether or not this node holds them.
    sh(`ip netns exec ${NS[n]} sysctl -qw net.ipv4.ip_nonlocal_bind=1`);
  }
}

/** A process whose output is kept; `exited` resolves with its exit code. */
function start(args, opts = {}) {
  const proc = spawn(args[0], args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  const out = [];
  const keep = (c) => {
    out.push(c.toString());
    if (out.length > 2000) out.splice(0, out.length - 2000);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const exited = new Promise((r) => proc.on('exit', (code, signal) => r({ code, signal })));
  return { proc, exited, logs: () => out.join('') };
}

const holds = (n, addr, dev) => run(['ip', '-n', NS[n], '-o', 'addr', 'show', 'dev', dev]).includes(` ${addr}/`);
const active = (n) => {
  const other = n === 'a' ? 'b' : 'a';
  return holds(n, VIP_PUBLIC, 'pub0') && holds(n, VIP_INTERNAL, 'int0') && !holds(other, VIP_PUBLIC, 'pub0') && !holds(other, VIP_INTERNAL, 'int0');
};

// One pair per failure: `fail(gateways)` breaks node a, `label` names it in figures.
function failoverSuite(title, label, fail) {
describe(title, { skip: chromiumMissing() || gatewayMissing() || netnsUnavailable(['nft', 'keepalived', SIPP]), timeout: 180_000 }, () => {
  let tmp;
  const procs = [];
  const gateways = {};
  let browser;

  const keepalivedLogs = () => procs.filter((p) => p.name.startsWith('keepalived')).map((p) => `--- ${p.name}\n${p.logs().slice(-2000)}`).join('\n');

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-ha-'));
    createNamespaces();
    const registrar = start(['ip', 'netns', 'exec', NS.internal, SIPP, '-sf', REGISTRAR, '-i', SIP_SERVER, '-p', '5060', '-nostdin',
      '-trace_msg', '-message_file', join(tmp, 'registrar.log')]);
    procs.push({ name: 'sipp', ...registrar });
    for (const n of ['a', 'b']) {
      const dir = join(tmp, n);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'profile.toml'), profile(NODES[n]));
      run([gatewayBinary(), 'system', 'render', '--profile', join(dir, 'profile.toml'), '--out', join(dir, 'rendered')]);
      const gw = start(['ip', 'netns', 'exec', NS[n], gatewayBinary(), 'run', '--profile', join(dir, 'profile.toml'), '--state-dir', join(dir, 'state')],
        { env: { ...process.env, RUST_LOG: 'info' } });
      gateways[n] = gw;
      procs.push({ name: `gatewayd-${n}`, ...gw });
      await waitFor(() => gw.logs().includes('gatewayd ready'), { timeout: 60_000, what: `gatewayd on ${n}`, describe: () => gw.logs().slice(-3000) });
    }
    for (const n of ['a', 'b']) {
      const dir = join(tmp, n);
      const k = start(['ip', 'netns', 'exec', NS[n], 'keepalived', '--dont-fork', '--log-console', '--vrrp', '-f', join(dir, 'rendered', 'keepalived.conf'),
        '-p', join(dir, 'keepalived.pid'), '-r', join(dir, 'vrrp.pid'), '-c', join(dir, 'checkers.pid')]);
      procs.push({ name: `keepalived-${n}`, ...k });
    }
    await waitFor(() => active('a'), { timeout: 15_000, what: 'node a to hold both virtual addresses', describe: keepalivedLogs });

    // Chromium in the internet namespace: the agent's browser. The two nodes' lab certificates
    // differ (production pairs share one), so certificate errors are ignored.
    const wrapper = join(tmp, 'chromium-in-netns');
    await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${NS.inet} ${CHROMIUM} "$@"\n`);
    await chmod(wrapper, 0o755);
    const tone = await writeToneWav(join(tmp, 'tone.wav'), { seconds: 60 });
    browser = await chromium.launch({ executablePath: wrapper, headless: true, args: [...CHROMIUM_ARGS, `--use-file-for-fake-audio-capture=${tone}`, '--ignore-certificate-errors'] });
  });

  after(async () => {
    await browser?.close();
    for (const p of procs.reverse()) {
      if (p.proc.exitCode === null && p.proc.signalCode === null) {
        p.proc.kill('SIGKILL');
        await Promise.race([p.exited, new Promise((r) => setTimeout(r, 5_000))]);
      }
    }
    for (const ns of Object.values(NS)) spawnSync('ip', ['netns', 'del', ns]);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('registered on the standby within 10 s, and the echo call has audio', async () => {
    // The keepalive answers the page receives (a lone CRLF on its SIP WebSocket).
    const pongs = [];
    const closes = [];
    const { context, page, seen } = await openPhone(browser, `https://${VIP_PUBLIC}`, '5001', 'pass5001', {
      query: '?raw-audio=1',
      beforeLoad: (p) => p.on('websocket', (ws) => {
        ws.on('framereceived', (f) => String(f.payload) === '\r\n' && pongs.push(Date.now()));
        ws.on('close', () => closes.push(Date.now()));
      }),
    });
    try {
      await waitForRegState(page, 'Registered', { timeout: 15_000 });
      const registrations = async () => ((await readFile(join(tmp, 'registrar.log'), 'utf8').catch(() => '')).match(/\nREGISTER sip:/g) || []).length;
      await waitFor(async () => (await registrations()) > 0, { what: "a's REGISTER for 5001 at sipp" });
      const before = await registrations();

      // The worst moment to fail: just after a keepalive was answered, so the next one is a
      // whole interval away.
      const since = Date.now();
      await waitFor(() => pongs.some((t) => t >= since), { timeout: 10_000, what: 'a keepalive answered' });
      const failed = Date.now();
      await fail(gateways);
      await waitFor(() => active('b'), { timeout: 3_000, interval: 20, what: 'the virtual addresses on b', describe: keepalivedLogs });
      console.log(`FIGURE ha browser ${label}: virtual addresses on b ${Date.now() - failed} ms after the failure`);

      // Registered again means registered on b: b's registrar lists the agent, and sipp saw the
      // new REGISTER b sent upstream.
      const onB = async () => {
        const agents = JSON.parse(run(['ip', 'netns', 'exec', NS.b, gatewayBinary(), 'agents', '--json', '--admin', '10.20.0.12:9090']));
        return JSON.stringify(agents).includes('"5001"');
      };
      await waitFor(async () => (await onB()) && (await page.locator('#reg-state').textContent()).trim() === 'Registered',
        { timeout: 10_000 - (Date.now() - failed), what: 'the softphone registered on b', describe: async () => `${await page.locator('#reg-state').textContent()} / ${await page.locator('#reg-detail').textContent().catch(() => '')}` });
      const registered = Date.now() - failed;
      const gaveUp = closes.find((t) => t >= failed);
      // A connection the page gave up without a closing handshake closes later, for Chromium.
      console.log(`FIGURE ha browser ${label}: the softphone's connection to a ${gaveUp ? `ended ${gaveUp - failed} ms after the failure` : 'given up by the page, still closing'}`);
      console.log(`FIGURE ha browser ${label}: JsSIP registered on b ${registered} ms after the failure`);
      assert.ok(registered < 10_000);
      await waitFor(async () => (await registrations()) > before, { timeout: 10_000, what: "b's REGISTER for 5001 at sipp" });

      await page.click('#echo-test');
      await waitForCallState(page, 'In call', { timeout: 20_000, failOn: CALL_ENDED });
      const stats = await waitForAudio(page, { above: 0.05, minPackets: 50, timeout: 20_000, label: 'the echoed tone through b:' });
      console.log(`FIGURE ha browser ${label}: echoed tone through b ${Date.now() - failed} ms after the failure (level ${stats.audioLevel.toFixed(2)})`);
      assert.deepEqual(seen.pageErrors, []);
      await page.click('#hangup');
      await waitForCallState(page, CALL_ENDED, { timeout: 10_000 });
      // b carried the call: its record is in b's log.
      await waitFor(() => gateways.b.logs().split('\n').some((l) => l.includes('call ended') && l.includes('dn=5001')), { what: "the call's record on b" });
    } finally {
      await context.close();
    }
  });
});
}

failoverSuite('a JsSIP softphone through kill -9 of the active gatewayd', 'kill', async (gateways) => {
  gateways.a.proc.kill('SIGKILL');
  await gateways.a.exited;
});

// The old node neither closes the connection nor answers any more: only the softphone's
// keepalive (web/src/keepalive.js) finds out, at worst (the link fails just after a keepalive
// was answered, as here) 4 s + 2 s later, and JsSIP reconnects 2 s after that. See docs/ha.md.
failoverSuite("a JsSIP softphone through the active node's public link going down", 'link', async () => {
  sh(`ip -n ${NS.a} link set pub0 down`);
});

// The same with no reset either: the standby drops what arrives for connections it does not
// know instead of resetting them (as a stateful firewall in front of it may), so only the
// keepalive's answer deadline finds out: at worst 4 s + 2 s, and JsSIP reconnects 2 s after.
failoverSuite("a JsSIP softphone through the active node's public link going down, unknown connections dropped silently", 'silent', async () => {
  sh(`ip netns exec ${NS.b} sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0`);
  run(['ip', 'netns', 'exec', NS.b, 'nft', '-f', '-'],
    'table inet silent {\n  chain input {\n    type filter hook input priority 10;\n    tcp dport 443 ct state invalid drop\n  }\n}\n');
  sh(`ip -n ${NS.a} link set pub0 down`);
});
