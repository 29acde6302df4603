// The SIP server's side of the browser tests: sipp (Debian sip-tester) runs the signalling,
// a scenario waits for the test at `<recv request="INFO">` steps, and RtpPeer stands in for the
// server's media (sipp cannot assert on the RTP it receives).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { SIPP, ulaw, waitFor } from './lib.mjs';

export const sippMissing = () => (existsSync(SIPP) ? false : `${SIPP} not found: apt-get install sip-tester`);

/**
 * Runs sipp with `args` in `cwd` (where -trace_err/-trace_msg logs land). exited resolves to
 * the exit code; finished(ms) to the code or 'still running'; said() is its output and logs.
 */
export function startSipp(args, cwd) {
  const output = [];
  const proc = spawn(SIPP, [...args, '-nostdin', '-timeout', '60s', '-timeout_error', '-trace_err', '-trace_msg'], {
    cwd, stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout.on('data', (d) => output.push(d.toString()));
  proc.stderr.on('data', (d) => output.push(d.toString()));
  const exited = new Promise((r) => proc.on('exit', (code) => r(code)));
  const said = async () => {
    const logs = (await readdir(cwd)).filter((f) => /_(errors|messages)\.log$/.test(f)).sort();
    const text = (await Promise.all(logs.map((f) => readFile(join(cwd, f), 'utf8')))).join('');
    return `${output.join('').slice(-2000)}\n${text.slice(-8000) || '(no sipp log)'}`;
  };
  const finished = (ms) => Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), ms))]);
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  };
  return { proc, exited, finished, said, stop };
}

/**
 * Moves a sipp scenario on at a `<recv request="INFO">`. The scenario says where it stands in
 * `steps.txt` in its working directory `dir` (`waiting STEP` just before the recv, `took STEP`
 * after it); this waits for `waiting STEP`, sends an INFO with the call's Call-ID to sipp at
 * `port`, and waits for `took STEP`. (sipp sends its answers to the peer it was started with,
 * not to the Via, so the INFO gets no answer here.)
 */
export async function sippStep(dir, callId, step, { port = 5080, timeout = 10_000 } = {}) {
  const steps = () => readFile(join(dir, 'steps.txt'), 'utf8').then((t) => t.split('\n'), () => []);
  await waitFor(async () => (await steps()).includes(`waiting ${step}`), {
    timeout, what: `sipp to wait for step "${step}"`, describe: async () => JSON.stringify(await steps()),
  });
  const sock = dgram.createSocket('udp4');
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  const local = sock.address().port;
  let cseq = 0;
  const sent = Date.now();
  try {
    await waitFor(async () => {
      if ((await steps()).includes(`took ${step}`)) return true;
      // Sent once, and again only if sipp has not taken it within a second (UDP).
      if (cseq === 0 || cseq * 1000 < Date.now() - sent) {
        cseq += 1;
        const info = [
          'INFO sip:sipp@127.0.0.1 SIP/2.0',
          `Via: SIP/2.0/UDP 127.0.0.1:${local};branch=z9hG4bK${randomBytes(6).toString('hex')}`,
          'From: <sip:test@127.0.0.1>;tag=step', 'To: <sip:sipp@127.0.0.1>', `Call-ID: ${callId}`,
          `CSeq: ${cseq} INFO`, 'Max-Forwards: 70', `X-Step: ${step}`, 'Content-Length: 0', '', '',
        ].join('\r\n');
        sock.send(info, port, '127.0.0.1');
      }
      return false;
    }, { timeout, interval: 50, what: `sipp to take step "${step}"`, describe: async () => JSON.stringify(await steps()) });
  } finally {
    sock.close();
  }
}

// ---- the SIP server's media: an RTP peer ------------------------------------------------

const DTMF_EVENTS = '0123456789*#ABCD';
const PCMU_TONE = (() => {
  const rate = 8000;
  const out = Buffer.alloc(rate); // one second of 400 Hz, loops seamlessly
  for (let i = 0; i < out.length; i++) out[i] = ulaw(Math.round(Math.sin((2 * Math.PI * 400 * i) / rate) * 0.5 * 32767));
  return out;
})();

/** Decodes an RFC 4733 telephone-event payload (4 bytes). */
export function decodeTelephoneEvent(payload) {
  if (payload.length < 4) return null;
  return {
    event: payload[0],
    end: (payload[1] & 0x80) !== 0,
    volume: payload[1] & 0x3f,
    duration: payload.readUInt16BE(2),
  };
}

/**
 * The SIP server's media endpoint: the address sipp's SDP names (pass `port` to sipp with
 * `-key rtp_port`). It counts the RTP it receives by payload type (audio PCMU/PCMA apart from
 * RFC 4733 events on `telephoneEvent`), collects the DTMF digits, and, like a symmetric-RTP
 * server, sends a steady 400 Hz PCMU tone back to where the gateway's RTP comes from while
 * `sending` is on. With `rtcp`, it also sends a receiver report (with an SDES CNAME) about the
 * gateway's stream every second to the gateway's RTCP port (its RTP port + 1), as a server
 * without rtcp-mux does; `reportsSent` counts them.
 */
export class RtpPeer {
  static async start({ telephoneEvent = 101, basePort = 35000, rtcp = false } = {}) {
    const peer = new RtpPeer(telephoneEvent);
    peer.rtcp = rtcp;
    // A port of its own outside the gateway's media ranges (the ephemeral range overlaps them).
    for (let port = basePort; ; port += 2) {
      if (port > basePort + 200) throw new Error(`no free UDP port from ${basePort}`);
      const sock = dgram.createSocket('udp4');
      const ok = await new Promise((r) => {
        sock.once('error', () => r(false));
        sock.bind(port, '127.0.0.1', () => r(true));
      });
      if (ok) {
        peer.attach(sock, port);
        return peer;
      }
      sock.close();
    }
  }

  constructor(telephoneEvent) {
    this.telephoneEvent = telephoneEvent;
    this.audio = 0;
    this.events = 0;
    this.other = 0;
    this.byPt = {};
    this.tones = []; // one entry per DTMF event (RTP timestamp): {digit, end, duration, volume}
    this.remote = null;
    this.pcmu = []; // the last PCMU payloads received (about 4 s), for checking what they carry
    this.digit = null; // an RFC 4733 event being sent in place of the tone
    this.sending = true;
    this.sent = 0;
    this.seq = randomBytes(2).readUInt16BE();
    this.ts = randomBytes(4).readUInt32BE();
    this.ssrc = randomBytes(4).readUInt32BE();
    this.rtcp = false;
    this.reportsSent = 0;
    this.gatewaySsrc = 0;
    this.highestSeq = 0;
  }

  attach(sock, port) {
    this.sock = sock;
    this.port = port;
    sock.on('message', (msg, rinfo) => this.receive(msg, rinfo));
    this.timer = setInterval(() => this.tick(), 20);
  }

  receive(msg, rinfo) {
    if (msg.length < 12 || msg[0] >> 6 !== 2) return;
    if (msg[1] >= 192 && msg[1] <= 223) return; // RTCP multiplexed on the RTP port
    this.remote = { address: rinfo.address, port: rinfo.port };
    this.gatewaySsrc = msg.readUInt32BE(8);
    this.highestSeq = msg.readUInt16BE(2);
    const pt = msg[1] & 0x7f;
    this.byPt[pt] = (this.byPt[pt] || 0) + 1;
    const cc = msg[0] & 0x0f;
    const offset = 12 + 4 * cc + (msg[0] & 0x10 ? 4 + 4 * msg.readUInt16BE(14 + 4 * cc) : 0);
    if (pt === 0 || pt === 8) {
      this.audio += 1;
      if (pt === 0) {
        this.pcmu.push(Buffer.from(msg.subarray(offset)));
        if (this.pcmu.length > 200) this.pcmu.shift();
      }
    }
    else if (pt === this.telephoneEvent) {
      this.events += 1;
      const e = decodeTelephoneEvent(msg.subarray(offset));
      if (!e) return;
      const ts = msg.readUInt32BE(4);
      let tone = this.tones.find((t) => t.ts === ts);
      if (!tone) this.tones.push((tone = { ts, event: e.event, digit: DTMF_EVENTS[e.event] ?? `?${e.event}`, end: false, duration: 0, volume: e.volume }));
      tone.end ||= e.end;
      tone.duration = Math.max(tone.duration, e.duration);
    } else this.other += 1;
  }

  /**
   * Sends `digit` as RFC 4733 events for `ms` in place of the tone (every 20 ms, the duration
   * growing, the end packet three times), as a SIP server sends DTMF toward the agent.
   */
  sendDigit(digit, { ms = 800, volume = 10 } = {}) {
    this.digit = { event: DTMF_EVENTS.indexOf(digit), ts: this.ts >>> 0, steps: Math.round(ms / 20), sent: 0, volume };
  }

  tickDigit() {
    const d = this.digit;
    const pkt = Buffer.alloc(12 + 4);
    pkt[0] = 0x80;
    pkt[1] = this.telephoneEvent | (d.sent === 0 ? 0x80 : 0);
    pkt.writeUInt16BE(this.seq, 2);
    pkt.writeUInt32BE(d.ts, 4);
    pkt.writeUInt32BE(this.ssrc, 8);
    const end = d.sent >= d.steps - 1;
    pkt[12] = d.event;
    pkt[13] = (end ? 0x80 : 0) | d.volume;
    pkt.writeUInt16BE(Math.min(d.sent + 1, d.steps) * 160, 14);
    d.sent += 1;
    if (d.sent >= d.steps + 2) this.digit = null;
    this.seq = (this.seq + 1) & 0xffff;
    this.ts = (this.ts + 160) >>> 0;
    this.sock.send(pkt, this.remote.port, this.remote.address);
  }

  /** RR about the gateway's stream, then SDES with a CNAME: one compound packet (RFC 3550). */
  sendReport() {
    const rr = Buffer.alloc(8 + 24);
    rr[0] = 0x81;
    rr[1] = 201;
    rr.writeUInt16BE(rr.length / 4 - 1, 2);
    rr.writeUInt32BE(this.ssrc, 4);
    rr.writeUInt32BE(this.gatewaySsrc, 8);
    rr.writeUInt32BE(this.highestSeq, 16);
    rr.writeUInt32BE(12, 20); // interarrival jitter
    const cname = Buffer.from('rtp-peer');
    const sdes = Buffer.alloc(Math.ceil((8 + 2 + cname.length + 1) / 4) * 4);
    sdes[0] = 0x81;
    sdes[1] = 202;
    sdes.writeUInt16BE(sdes.length / 4 - 1, 2);
    sdes.writeUInt32BE(this.ssrc, 4);
    sdes[8] = 1;
    sdes[9] = cname.length;
    cname.copy(sdes, 10);
    this.sock.send(Buffer.concat([rr, sdes]), this.remote.port + 1, this.remote.address);
    this.reportsSent += 1;
  }

  tick() {
    this.ticks = (this.ticks || 0) + 1;
    if (this.rtcp && this.remote && this.ticks % 50 === 0) this.sendReport();
    if (!this.sending || !this.remote) return;
    if (this.digit) {
      this.tickDigit();
      return;
    }
    const pkt = Buffer.alloc(12 + 160);
    pkt[0] = 0x80;
    pkt[1] = 0; // PCMU
    pkt.writeUInt16BE(this.seq, 2);
    pkt.writeUInt32BE(this.ts >>> 0, 4);
    pkt.writeUInt32BE(this.ssrc, 8);
    const at = (this.sent * 160) % PCMU_TONE.length;
    PCMU_TONE.copy(pkt, 12, at, at + 160);
    this.seq = (this.seq + 1) & 0xffff;
    this.ts = (this.ts + 160) >>> 0;
    this.sent += 1;
    this.sock.send(pkt, this.remote.port, this.remote.address);
  }

  /** Digits whose end packet arrived, in order. */
  digits() {
    return this.tones.filter((t) => t.end).map((t) => t.digit).join('');
  }

  summary() {
    return JSON.stringify({ port: this.port, remote: this.remote, audio: this.audio, events: this.events, other: this.other, byPt: this.byPt, sent: this.sent, tones: this.tones });
  }

  /** Waits until at least `count` more audio packets than `from` have arrived. */
  waitForAudio(count, { from = this.audio, timeout = 15_000, what = 'audio at the SIP server' } = {}) {
    return waitFor(() => this.audio >= from + count, { timeout, what: `${count} ${what}`, describe: () => this.summary() });
  }

  /**
   * Waits until no audio arrives for `quietMs` (measured between two counts), i.e. the
   * gateway stopped sending; resolves to the count then.
   */
  async waitForAudioToStop({ quietMs = 600, timeout = 10_000 } = {}) {
    let prev = -1;
    let at = 0;
    return waitFor(() => {
      const now = Date.now();
      if (this.audio !== prev) {
        prev = this.audio;
        at = now;
        return null;
      }
      return now - at >= quietMs ? { count: this.audio } : null;
    }, { timeout, interval: 100, what: `audio at the SIP server to stop for ${quietMs} ms`, describe: () => this.summary() });
  }

  close() {
    clearInterval(this.timer);
    this.sock?.close();
  }
}
