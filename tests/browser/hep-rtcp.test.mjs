// RTCP as HEP: a HEP collector written for the test (a UDP socket decoding HEP3 chunks) gets
// the RTCP of both legs, both ways, as heplify's JSON (HEP type 5), with the call's
// correlation id and the real addresses: an echo call from the softphone (the browser leg's
// SRTCP decrypted), and an inbound call from sipp whose media peer sends receiver reports
// (the internal leg's plain RTCP, and the gateway's own sender reports). Then the admin API
// selects an agent and a Call-ID while calls run, and deselects them: capture of the call
// stops while the other selected call's goes on, and mode `all` brings both back.
// Skips when the gateway binary, chromium or sipp is missing (unless GATEWAYD_REQUIRE=1).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CALL_ENDED, ROOT, capturePeerConnections, chromiumMissing, gatewayMissing, launchBrowser, openPhone, startGateway,
  waitFor, waitForCallState, waitForRegState, writeToneWav,
} from './lib.mjs';
import { RtpPeer, sippMissing, startSipp } from './sip-server.mjs';

const ADMIN = 'http://127.0.0.1:9090';
// The lab profile's SIP server side media ports (RTP and RTCP).
const INTERNAL_PORTS = [41000, 42999];
const inRange = (addr, [lo, hi]) => {
  const port = Number(addr.split(':').pop());
  return port >= lo && port <= hi;
};

/**
 * The gateway's end of the page's media path, "ip:port", from the selected ICE pair. Legs are
 * told apart by exact addresses: on loopback the browser's and the media peer's ephemeral ports
 * can fall inside the gateway's own port ranges.
 */
function gatewayMediaAddress(page) {
  return waitFor(() => page.evaluate(async () => {
    const pc = window.__peerConnections?.at(-1);
    if (!pc) return null;
    const stats = new Map();
    (await pc.getStats()).forEach((s) => stats.set(s.id, s));
    for (const t of stats.values()) {
      if (t.type !== 'transport' || !t.selectedCandidatePairId) continue;
      const remote = stats.get(stats.get(t.selectedCandidatePairId)?.remoteCandidateId);
      if (remote?.port) return `${remote.address ?? remote.ip}:${remote.port}`;
    }
    return null;
  }), { what: 'the selected ICE pair of the page' });
}
/** A leg seen from the gateway whose own end there is exactly `addr`. */
const gatewayAt = (addr) => ({ gateway: (a) => a === addr, far: (a) => a !== addr });
/** A leg seen from the gateway towards a far end at exactly `addr`. */
const towards = (addr) => ({ gateway: (a) => a !== addr, far: (a) => a === addr });

/** One HEP3 packet's chunks of vendor 0 (the generic ones), or null if it is not HEP3. */
export function decodeHep(buf) {
  if (buf.length < 6 || buf.subarray(0, 4).toString('latin1') !== 'HEP3') return null;
  const total = buf.readUInt16BE(4);
  const p = {};
  let srcIp;
  let dstIp;
  let srcPort;
  let dstPort;
  let sec = 0;
  let usec = 0;
  for (let pos = 6; pos + 6 <= total;) {
    const vendor = buf.readUInt16BE(pos);
    const type = buf.readUInt16BE(pos + 2);
    const len = buf.readUInt16BE(pos + 4);
    if (len < 6 || pos + len > total) return null;
    const v = buf.subarray(pos + 6, pos + len);
    if (vendor === 0) {
      if (type === 3) srcIp = [...v].join('.');
      else if (type === 4) dstIp = [...v].join('.');
      else if (type === 7) srcPort = v.readUInt16BE(0);
      else if (type === 8) dstPort = v.readUInt16BE(0);
      else if (type === 9) sec = v.readUInt32BE(0);
      else if (type === 10) usec = v.readUInt32BE(0);
      else if (type === 11) p.proto = v[0];
      else if (type === 15) p.payload = Buffer.from(v);
      else if (type === 17) p.cid = v.toString('utf8');
    }
    pos += len;
  }
  p.src = `${srcIp}:${srcPort}`;
  p.dst = `${dstIp}:${dstPort}`;
  p.at = sec * 1000 + usec / 1000;
  return p;
}

/** A HEP collector on loopback keeping every packet it decodes, in arrival order. */
async function startCollector() {
  const sock = createSocket('udp4');
  const packets = [];
  sock.on('message', (msg) => {
    const p = decodeHep(msg);
    if (p) packets.push(p);
  });
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  return { port: sock.address().port, packets, close: () => new Promise((r) => sock.close(r)) };
}

const isRtcp = (p) => p.proto === 5;
const json = (p) => JSON.parse(p.payload.toString('utf8'));

describe('RTCP as HEP, and capture switched per agent and per call', { skip: chromiumMissing() || sippMissing() || gatewayMissing(), timeout: 300_000 }, () => {
  let gateway;
  let browser;
  let tmp;
  let collector;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'gatewayd-hep-rtcp-'));
    collector = await startCollector();
    gateway = await startGateway({ env: { GATEWAYD_OBSERVE__HEP__COLLECTOR: `127.0.0.1:${collector.port}` } });
    browser = await launchBrowser({ fakeAudioFile: await writeToneWav(join(tmp, 'mic.wav'), { freq: 660, seconds: 120 }) });
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
    await collector?.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  const rtcpOf = (cid, since = 0) => collector.packets.filter((p) => isRtcp(p) && p.cid === cid && p.at > since);
  const describeRtcp = () => JSON.stringify(collector.packets.filter(isRtcp).slice(-12).map((p) => ({ cid: p.cid, src: p.src, dst: p.dst })));
  /** The live call of `dn` as GET /calls shows it. */
  const callOf = (dn) => waitFor(async () => {
    const calls = await (await fetch(`${ADMIN}/calls`)).json();
    return calls.find((c) => c.dn === dn && c.answered_ms) ?? null;
  }, { what: `the call of ${dn} in GET /calls` });
  /**
   * Registers `dn` and dials the echo number; resolves to the page, the call's Call-ID and
   * the browser leg as the gateway sees it.
   */
  async function echoCall(dn) {
    const phone = await openPhone(browser, gateway.url, dn, `pass${dn}`, { beforeLoad: capturePeerConnections });
    await waitForRegState(phone.page, 'Registered', { timeout: 15_000 });
    await phone.page.click('#echo-test');
    await waitForCallState(phone.page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });
    const call = await callOf(dn);
    return { ...phone, callId: call.agent_call_id, leg: gatewayAt(await gatewayMediaAddress(phone.page)) };
  }
  async function hangUp(phone) {
    await phone.page.click('#hangup');
    await waitForCallState(phone.page, /^Ended: /);
    await phone.context.close();
  }
  /**
   * Waits until `leg` (gatewayAt or towards) of `cid` has RTCP both ways since `since` between
   * the same two addresses; resolves to one report each way, as the gateway sent and received.
   */
  const bothWays = (cid, leg, what, since = 0) => waitFor(() => {
    const reports = rtcpOf(cid, since);
    for (const sent of reports.filter((p) => leg.gateway(p.src) && leg.far(p.dst))) {
      const back = reports.find((r) => r.src === sent.dst && r.dst === sent.src);
      if (back) return { sent, received: back };
    }
    return null;
  }, { timeout: 25_000, what, describe: describeRtcp });

  test('an echo call: the browser leg\'s decrypted RTCP both ways, as heplify JSON tied to the call', async () => {
    const phone = await echoCall('5006');
    const { sent, received } = await bothWays(phone.callId, phone.leg, `RTCP both ways on the echo call ${phone.callId}`);
    // The gateway's report goes back to where the browser's came from (one ICE pair).
    assert.equal(sent.src, received.dst);
    for (const p of [sent, received]) {
      const r = json(p);
      assert.ok([200, 201].includes(r.type), `a sender or receiver report: ${p.payload}`);
      assert.equal(typeof r.ssrc, 'number');
      assert.ok(Array.isArray(r.report_blocks));
      assert.ok('sender_information' in r && 'report_blocks_xr' in r && 'sdes_ssrc' in r, `heplify's fields: ${p.payload}`);
    }
    // The browser reports on the stream the gateway sends it (whose SSRC our reports carry).
    assert.notEqual(json(sent).ssrc, json(received).ssrc);
    await waitFor(() => {
      const leg = rtcpOf(phone.callId);
      const ours = new Set(leg.filter((p) => phone.leg.gateway(p.src)).map((p) => json(p).ssrc));
      return leg.some((p) => phone.leg.gateway(p.dst) && json(p).report_blocks.some((b) => ours.has(b.source_ssrc)));
    }, { timeout: 20_000, what: 'a browser report about the gateway\'s stream', describe: describeRtcp });
    await hangUp(phone);
    // The quality summary at the end carries the same correlation id.
    await waitFor(() => collector.packets.some((p) => p.proto === 0x22 && p.cid === phone.callId), { what: 'the quality summary (HEP 0x22)' });
  });

  test('an inbound call from sipp: RTCP of the internal leg both ways and of the browser leg, all with the server\'s Call-ID', async () => {
    const dn = '5008';
    const phone = await openPhone(browser, gateway.url, dn, `pass${dn}`, { beforeLoad: capturePeerConnections });
    await waitForRegState(phone.page, 'Registered', { timeout: 15_000 });
    const peer = await RtpPeer.start({ telephoneEvent: 96, rtcp: true });
    const callId = `hep-rtcp-${Date.now()}-1`;
    const sipp = startSipp([
      '-sf', join(ROOT, 'tests', 'browser', 'sipp', 'inbound-rtp-peer.xml'), '-i', '127.0.0.1', '-p', '5080', '-mp', '30400',
      '-m', '1', '-s', dn, '-aa', '-key', 'rtp_port', String(peer.port), '-cid_str', callId.replace(/-1$/, '-%u'), '127.0.0.1:5060',
    ], tmp);
    try {
      await waitForCallState(phone.page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });
      const call = await callOf(dn);
      assert.equal(call.upstream_call_id, callId);
      // The internal leg: the server's reports arrive at our RTCP port (RTP + 1), ours leave it.
      const internal = await bothWays(callId, towards(`127.0.0.1:${peer.port}`), 'RTCP both ways on the internal leg');
      assert.ok(inRange(internal.received.dst, INTERNAL_PORTS), `the internal side's ports: ${internal.received.dst}`);
      assert.equal(Number(internal.received.dst.split(':')[1]) % 2, 1, 'the odd port of the pair');
      const theirs = json(internal.received);
      assert.equal(theirs.type, 201);
      assert.equal(theirs.report_blocks[0].ia_jitter, 12);
      assert.equal(theirs.sdes_ssrc, peer.ssrc);
      const ours = json(internal.sent);
      assert.equal(ours.type, 200, 'the gateway\'s sender report');
      assert.ok(ours.sender_information.packets > 0);
      // The browser leg of the same call is tied to the server's Call-ID too.
      await bothWays(callId, gatewayAt(await gatewayMediaAddress(phone.page)), 'RTCP both ways on the browser leg of the inbound call');
      assert.ok(!collector.packets.some((p) => isRtcp(p) && p.cid === call.agent_call_id), 'the agent leg\'s Call-ID is not a correlation id of its own');
      assert.ok(peer.reportsSent > 0);
      await hangUp(phone);
      assert.equal(await sipp.finished(15_000), 0, `sipp finished the scenario:\n${await sipp.said()}`);
    } finally {
      await sipp.stop();
      peer.close();
    }
  });

  test('capture per agent and per Call-ID switched on and off while calls run', async () => {
    const put = (path) => fetch(`${ADMIN}${path}`, { method: 'PUT' });
    const del = (path) => fetch(`${ADMIN}${path}`, { method: 'DELETE' });
    assert.equal((await put('/capture/mode/selected')).status, 200);
    assert.equal((await put('/capture/agents/5007')).status, 200);
    try {
      const b = await echoCall('5007');
      const a = await echoCall('5009');
      await bothWays(b.callId, b.leg, 'RTCP of the selected agent\'s call');
      const ofA = (since = 0) => collector.packets.filter((p) => p.cid === a.callId && p.at > since);
      assert.equal(ofA().length, 0, 'nothing of a call not selected, SIP included');

      // Selected by Call-ID while it runs: its RTCP follows.
      assert.equal((await put(`/capture/calls/${encodeURIComponent(a.callId)}`)).status, 200);
      const selectedAt = Date.now();
      await bothWays(a.callId, a.leg, 'RTCP of the call selected by Call-ID', selectedAt);

      // Deselected: nothing seen after that goes out, while the agent's call goes on.
      assert.equal((await del(`/capture/calls/${encodeURIComponent(a.callId)}`)).status, 200);
      const offA = Date.now();
      await waitFor(() => rtcpOf(b.callId, offA).length >= 3, { timeout: 30_000, what: 'three more reports of the agent\'s call', describe: describeRtcp });
      const late = ofA().filter((p) => p.at >= offA);
      assert.equal(late.length, 0, `captures of the deselected call after ${offA}: ${JSON.stringify(late.map((p) => p.at))}`);
      let status = await (await fetch(`${ADMIN}/capture`)).json();
      assert.deepEqual(status.call_ids, []);
      assert.deepEqual(status.agents, ['5007']);

      // The agent deselected, the call selected again: the roles swap.
      assert.equal((await del('/capture/agents/5007')).status, 200);
      const offB = Date.now();
      assert.equal((await put(`/capture/calls/${encodeURIComponent(a.callId)}`)).status, 200);
      await waitFor(() => rtcpOf(a.callId, offB).length >= 3, { timeout: 30_000, what: 'three reports of the reselected call', describe: describeRtcp });
      const lateB = collector.packets.filter((p) => p.cid === b.callId && p.at >= offB);
      assert.equal(lateB.length, 0, 'nothing of the deselected agent\'s call');
      status = await (await fetch(`${ADMIN}/capture`)).json();
      assert.deepEqual(status.agents, []);
      assert.deepEqual(status.call_ids, [a.callId]);

      // Mode all: both flow again, whatever is selected.
      assert.equal((await put('/capture/mode/all')).status, 200);
      const allAt = Date.now();
      await bothWays(b.callId, b.leg, 'RTCP of the agent\'s call in mode all', allAt);
      await bothWays(a.callId, a.leg, 'RTCP of the other call in mode all', allAt);
      await hangUp(a);
      await hangUp(b);
    } finally {
      await put('/capture/mode/all');
      await del('/capture/agents/5007');
    }
  });
});
