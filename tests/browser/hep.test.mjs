// HEP capture, received by Debian's sngrep running headless as the collector
// (`sngrep -N -q -L udp:127.0.0.1:PORT -O out.pcap`): an echo call from the softphone and an
// inbound call from sipp, both legs of each, the WSS side decrypted, tied together (the second
// leg's capture names the first leg's Call-ID in X-CID, as sngrep joins dialogs), with the
// call's quality summary; then the admin API switching capture off and per agent.
// The pcap sngrep writes holds each captured message as a UDP frame between the real addresses.
// Skips when the gateway binary, chromium, sipp or sngrep is missing (unless GATEWAYD_REQUIRE=1).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CALL_ENDED, ROOT, SIPP, chromiumMissing, gatewayMissing, launchBrowser, openPhone, startGateway,
  waitFor, waitForAudio, waitForCallState, waitForRegState, writeToneUlaw, writeToneWav,
} from './lib.mjs';

const SNGREP = '/usr/bin/sngrep';
const ADMIN = 'http://127.0.0.1:9090';
const sippMissing = existsSync(SIPP) ? false : `${SIPP} not found: apt-get install sip-tester`;
const sngrepMissing = existsSync(SNGREP) ? false : `${SNGREP} not found: apt-get install sngrep`;

/** The frames of a classic pcap file (Ethernet, IPv4, UDP, as sngrep writes HEP captures). */
export function readPcap(buf) {
  assert.equal(buf.readUInt32LE(0), 0xa1b2c3d4, 'a little-endian pcap file');
  assert.equal(buf.readUInt32LE(20), 1, 'Ethernet frames');
  const frames = [];
  let off = 24;
  while (off + 16 <= buf.length) {
    const len = buf.readUInt32LE(off + 8);
    const frame = buf.subarray(off + 16, off + 16 + len);
    off += 16 + len;
    if (frame.length < len) break; // a frame still being written
    const ip = 14;
    const udp = ip + (frame[ip] & 0x0f) * 4;
    frames.push({
      src: `${frame.subarray(ip + 12, ip + 16).join('.')}:${frame.readUInt16BE(udp)}`,
      dst: `${frame.subarray(ip + 16, ip + 20).join('.')}:${frame.readUInt16BE(udp + 2)}`,
      text: frame.subarray(udp + 8).toString('utf8'),
    });
  }
  return frames;
}

const header = (text, name) => text.match(new RegExp(`^${name}:\\s*(.+?)\\s*$`, 'im'))?.[1];
const firstLine = (text) => text.split('\r\n')[0];

/** A free UDP port on loopback, and a probe telling whether something listens on it. */
async function freeUdpPort() {
  const s = createSocket('udp4');
  await new Promise((r) => s.bind(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}
async function udpPortTaken(port) {
  const s = createSocket('udp4');
  return new Promise((r) => {
    s.once('error', () => r(true));
    s.bind(port, '127.0.0.1', () => s.close(() => r(false)));
  });
}

describe('HEP capture into sngrep', { skip: chromiumMissing() || sippMissing || sngrepMissing || gatewayMissing(), timeout: 240_000 }, () => {
  let gateway;
  let browser;
  let tmp;
  let sngrep;
  let sngrepOutput = '';
  let pcap;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'gatewayd-hep-'));
    pcap = join(tmp, 'capture.pcap');
    const port = await freeUdpPort();
    sngrep = spawn(SNGREP, ['-N', '-q', '-L', `udp:127.0.0.1:${port}`, '-O', pcap], { stdio: ['ignore', 'pipe', 'pipe'] });
    sngrep.stdout.on('data', (d) => { sngrepOutput += d; });
    sngrep.stderr.on('data', (d) => { sngrepOutput += d; });
    await waitFor(async () => {
      if (sngrep.exitCode !== null) throw new Error(`sngrep exited ${sngrep.exitCode}: ${sngrepOutput}`);
      return udpPortTaken(port);
    }, { what: `sngrep listening on udp:127.0.0.1:${port}` });
    await writeToneUlaw(join(tmp, 'tone.ulaw'), { freq: 440, seconds: 20 });
    // The lab profile with its HEP collector moved to sngrep's port.
    process.env.GATEWAYD_OBSERVE__HEP__COLLECTOR = `127.0.0.1:${port}`;
    try {
      gateway = await startGateway();
    } finally {
      delete process.env.GATEWAYD_OBSERVE__HEP__COLLECTOR;
    }
    browser = await launchBrowser({ fakeAudioFile: await writeToneWav(join(tmp, 'mic.wav'), { freq: 660, seconds: 30 }) });
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
    if (sngrep?.exitCode === null) sngrep.kill('SIGTERM');
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  const frames = async () => (existsSync(pcap) ? readPcap(await readFile(pcap)) : []);
  /** Waits until the capture holds a frame `match` accepts; returns every frame. */
  const captured = (what, match) => waitFor(async () => {
    const all = await frames();
    return all.some(match) ? all : null;
  }, { what: `${what} in sngrep's pcap`, timeout: 15_000, describe: () => `sngrep: ${sngrepOutput}` });

  test('an echo call: the decrypted WSS dialog both ways, and its quality summary', async () => {
    const { context, page } = await openPhone(browser, gateway.url, '5001', 'pass5001');
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    await page.click('#echo-test');
    await waitForCallState(page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });
    await waitForAudio(page, { above: 0.05, minPackets: 25, label: 'the echoed tone:' });
    await page.click('#hangup');
    await waitForCallState(page, 'Ended: Terminated');

    const all = await captured('the echo call quality report', (f) => f.text.includes('"direction":"echo"'));
    const invite = all.find((f) => /^INVITE sip:600@/.test(f.text));
    assert.ok(invite, 'the INVITE to the echo number');
    const callId = header(invite.text, 'Call-ID');
    const dialog = all.filter((f) => header(f.text, 'Call-ID') === callId);
    // Inside TLS: the softphone's own WSS Via, between the browser's address and the listener.
    assert.match(invite.text, /^Via: SIP\/2\.0\/WSS /im);
    assert.equal(invite.dst, '127.0.0.1:8443');
    assert.ok(dialog.some((f) => /^SIP\/2\.0 200 /.test(f.text) && f.src === '127.0.0.1:8443' && f.dst === invite.src), 'our 200 to the browser');
    assert.ok(dialog.some((f) => /^ACK /.test(f.text)), 'the ACK');
    assert.ok(dialog.some((f) => /^BYE /.test(f.text) && f.src === invite.src), 'the agent\'s BYE');
    const report = JSON.parse(all.find((f) => f.text.includes('"direction":"echo"')).text);
    assert.equal(report.agent_call_id, callId);
    assert.equal(report.dn, '5001');
    assert.match(report.user_agent, /JsSIP/);
    assert.ok(report.media?.browser?.packets_received > 0, `media figures in ${JSON.stringify(report)}`);
    await context.close();
  });

  test('an inbound call from sipp: both dialogs, the agent leg linked to the server\'s, the Genesys UUID recorded', async () => {
    const { context, page } = await openPhone(browser, gateway.url, '5002', 'pass5002');
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    const output = [];
    const sipp = spawn(SIPP, [
      '-sf', join(ROOT, 'tests', 'browser', 'sipp', 'inbound-genesys-uuid.xml'), '-i', '127.0.0.1', '-p', '5080', '-mp', '30000',
      '-m', '1', '-s', '5002', '-d', '3000', '-aa', '-nostdin', '-timeout', '60s', '-timeout_error', '127.0.0.1:5060',
    ], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    sipp.stdout.on('data', (d) => output.push(d.toString()));
    sipp.stderr.on('data', (d) => output.push(d.toString()));
    const exited = new Promise((r) => sipp.on('exit', (code) => r(code)));
    try {
      await waitForCallState(page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });
      await waitForCallState(page, 'Ended: Terminated', { timeout: 20_000 });
      assert.equal(await exited, 0, `sipp finished the scenario:\n${output.join('').slice(-3000)}`);
    } finally {
      if (sipp.exitCode === null) sipp.kill('SIGKILL');
    }

    const all = await captured('the inbound call quality report', (f) => f.text.includes('"direction":"inbound"'));
    // The server's leg, over UDP between sipp and the internal listener.
    const upInvite = all.find((f) => /^INVITE sip:5002@/.test(f.text) && f.src === '127.0.0.1:5080');
    assert.ok(upInvite, 'the SIP server\'s INVITE');
    assert.equal(upInvite.dst, '127.0.0.1:5060');
    const upCallId = header(upInvite.text, 'Call-ID');
    const upLeg = all.filter((f) => header(f.text, 'Call-ID') === upCallId);
    assert.ok(upLeg.some((f) => /^SIP\/2\.0 200 /.test(f.text) && f.src === '127.0.0.1:5060' && f.dst === '127.0.0.1:5080'), 'our 200 to the server');
    assert.ok(upLeg.some((f) => /^BYE /.test(f.text) && f.src === '127.0.0.1:5080'), 'the server\'s BYE');
    // The agent's leg, inside TLS, names the server's Call-ID as sngrep links dialogs.
    const agentInvite = all.find((f) => /^INVITE /.test(f.text) && f.src === '127.0.0.1:8443' && header(f.text, 'X-CID') === upCallId);
    assert.ok(agentInvite, `the agent leg's INVITE with X-CID: ${upCallId}; INVITEs seen: ${all.filter((f) => /^INVITE/.test(f.text)).map((f) => `${f.src}>${f.dst} ${firstLine(f.text)}`).join('; ')}`);
    const agentCallId = header(agentInvite.text, 'Call-ID');
    assert.notEqual(agentCallId, upCallId);
    const agentLeg = all.filter((f) => header(f.text, 'Call-ID') === agentCallId);
    assert.ok(agentLeg.some((f) => /^SIP\/2\.0 200 /.test(f.text) && f.dst === '127.0.0.1:8443'), 'the softphone\'s 200');
    assert.ok(agentLeg.some((f) => /^BYE /.test(f.text) && f.src === '127.0.0.1:8443'), 'our BYE to the agent');
    assert.ok(agentLeg.every((f) => header(f.text, 'X-CID') === upCallId), 'every capture of the second leg is linked');
    assert.ok(upLeg.every((f) => header(f.text, 'X-CID') === undefined), 'the first leg is captured as it was');

    const report = JSON.parse(all.find((f) => f.text.includes('"direction":"inbound"')).text);
    assert.equal(report.upstream_call_id, upCallId);
    assert.equal(report.agent_call_id, agentCallId);
    assert.deepEqual(report.upstream_ids, { 'X-Genesys-CallUUID': '01HEPTEST1UUID' });
    assert.match(report.user_agent, /JsSIP/);
    // The journal record carries them too.
    const record = await waitFor(() => gateway.logs().split('\n').find((l) => l.includes('call ended') && l.includes('dn=5002')), { what: 'the call record' });
    assert.match(record, /01HEPTEST1UUID/);
    assert.match(record, /user_agent="?JsSIP/);
    await context.close();
  });

  test('the admin API switches capture off, and on for one agent only', async () => {
    const put = (path) => fetch(`${ADMIN}${path}`, { method: 'PUT' });
    assert.equal((await put('/capture/mode/off')).status, 200);
    const quiet = await openPhone(browser, gateway.url, '5003', 'pass5003');
    await waitForRegState(quiet.page, 'Registered', { timeout: 15_000 });
    assert.equal((await put('/capture/mode/selected')).status, 200);
    assert.equal((await put('/capture/agents/5005')).status, 200);
    assert.equal((await put('/capture/mode/bogus')).status, 400);
    const status = await (await fetch(`${ADMIN}/capture`)).json();
    assert.equal(status.mode, 'selected');
    assert.deepEqual(status.agents, ['5005']);
    const other = await openPhone(browser, gateway.url, '5004', 'pass5004');
    await waitForRegState(other.page, 'Registered', { timeout: 15_000 });
    const chosen = await openPhone(browser, gateway.url, '5005', 'pass5005');
    await waitForRegState(chosen.page, 'Registered', { timeout: 15_000 });

    // One sender, in order: once 5005's REGISTER is there, the others would be before it.
    const registerOf = (dn) => (f) => /^REGISTER /.test(f.text) && header(f.text, 'From')?.includes(`sip:${dn}@`);
    const all = await captured('the REGISTER of 5005', registerOf('5005'));
    assert.equal(all.filter(registerOf('5003')).length, 0, 'nothing captured while off');
    assert.equal(all.filter(registerOf('5004')).length, 0, 'an agent not selected is not captured');
    const metrics = await (await fetch(`${ADMIN}/metrics`)).text();
    const sent = Number(metrics.match(/^gatewayd_hep_packets_sent_total (\d+)/m)?.[1]);
    assert.ok(sent >= all.length, `HEP packets sent (${sent}) cover the ${all.length} captured`);
    await put('/capture/mode/all');
    for (const p of [quiet, other, chosen]) await p.context.close();
  });
});
