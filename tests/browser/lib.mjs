// Shared pieces of the browser tests: Debian chromium through playwright-core, the gateway
// process, a static server for testing the page on its own, and deadline-bound waits.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const WEB_DIST = join(ROOT, 'web', 'dist');
export const ARTIFACTS = join(ROOT, 'target', 'artifacts');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const GATEWAY_URL = 'https://127.0.0.1:8443';

// ---- waiting -------------------------------------------------------------------------

/**
 * Polls `probe` until it returns a truthy value or the deadline passes; returns that value.
 * `describe` is called on timeout to say what was last seen.
 */
export async function waitFor(probe, { timeout = 10_000, interval = 100, what = 'condition', describe } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      const seen = describe ? await describe() : last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last seen: ${seen}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

const matches = (text, expected) =>
  expected instanceof RegExp ? expected.test(text) : typeof expected === 'function' ? expected(text) : text === expected;

/**
 * Waits until the text of `selector` matches `expected` (string, RegExp or predicate); gives up
 * at once when it matches `failOn` instead (a state the expected one can no longer follow).
 */
export async function waitForText(page, selector, expected, { timeout = 10_000, failOn = null } = {}) {
  const read = async () => ((await page.locator(selector).textContent({ timeout: 1000 })) ?? '').trim();
  let failed = null;
  const found = await waitFor(async () => {
    const text = await read();
    if (matches(text, expected)) return text;
    if (failOn && matches(text, failOn)) {
      failed = text;
      return true;
    }
    return null;
  }, { timeout, what: `${selector} to read ${expected}`, describe: () => read().catch((e) => e.message) });
  if (failed !== null) throw new Error(`${selector} reads "${failed}" while waiting for ${expected}`);
  return found;
}

export const waitForRegState = (page, expected, opts) => waitForText(page, '#reg-state', expected, opts);
export const waitForCallState = (page, expected, opts) => waitForText(page, '#call-state', expected, opts);
// For a call already under way: an end state means the expected state will never come.
export const CALL_ENDED = /^Ended: /;

/** Reads the page's read-only test hook. */
export function phoneState(page) {
  return page.evaluate(() => {
    const p = window.gatewaydPhone;
    return p
      ? {
          registration: p.registrationState,
          call: p.callState,
          stats: p.stats,
          quality: p.quality,
          dtmfSent: p.dtmfSent,
          inputDevice: p.inputDevice,
          direction: p.direction,
        }
      : null;
  });
}

// ---- browser ------------------------------------------------------------------------

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
];

export function chromiumMissing() {
  return existsSync(CHROMIUM) ? false : `${CHROMIUM} not found: apt-get install chromium`;
}

/** Launches headless Debian chromium; `fakeAudioFile` feeds a WAV file as the microphone. */
export async function launchBrowser({ fakeAudioFile } = {}) {
  const args = [...CHROMIUM_ARGS];
  if (fakeAudioFile) args.push(`--use-file-for-fake-audio-capture=${fakeAudioFile}`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

export async function newContext(browser) {
  return browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 800 } });
}

/**
 * Records what a page complains about: console errors, uncaught exceptions and CSP violations
 * (collected in the page through an init script, which the page's CSP does not govern).
 */
export async function watchPage(page) {
  const seen = { consoleErrors: [], pageErrors: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error') seen.consoleErrors.push(msg.text());
  });
  page.on('pageerror', (err) => seen.pageErrors.push(String(err)));
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
  seen.cspViolations = () => page.evaluate(() => window.__cspViolations || []);
  return seen;
}

/**
 * Opens the softphone at `baseUrl` (plus `query`, e.g. `?raw-audio=1`) in a fresh context,
 * watching it for errors, and signs in. The caller waits for the state it expects.
 * `beforeLoad(page)` runs before the page loads (to watch its WebSocket, say).
 */
export async function openPhone(browser, baseUrl, dn, password, { query = '', beforeLoad = null } = {}) {
  const context = await newContext(browser);
  const page = await context.newPage();
  const seen = await watchPage(page);
  if (beforeLoad) await beforeLoad(page);
  await page.goto(`${baseUrl}/${query}`);
  await login(page, dn, password);
  return { dn, context, page, seen };
}

/**
 * Waits until the page's inbound audio level is above `above` (or below `below`) with at least
 * `minPackets` received; returns the stats. The page refreshes them once a second.
 */
export async function waitForAudio(page, { above = null, below = null, minPackets = 0, timeout = 15_000, label = 'page' } = {}) {
  const read = async () => (await phoneState(page)).stats;
  return waitFor(async () => {
    const s = await read();
    if (!s || s.audioLevel === null || s.packetsReceived < minPackets) return null;
    if (above !== null && !(s.audioLevel > above)) return null;
    if (below !== null && !(s.audioLevel < below)) return null;
    return s;
  }, {
    timeout,
    what: `${label} inbound audio level ${above !== null ? `> ${above}` : `< ${below}`}`,
    describe: async () => JSON.stringify(await read()),
  });
}

export async function login(page, dn, password) {
  await page.locator('#login').waitFor({ state: 'visible' });
  await waitFor(() => page.locator('#login').isEnabled(), { what: '#login to be enabled' });
  await page.fill('#dn', dn);
  await page.fill('#password', password);
  await page.click('#login');
}

// ---- gateway ------------------------------------------------------------------------

// Where `cargo build` puts the binary (it honours CARGO_TARGET_DIR), unless GATEWAYD_BIN says.
export const gatewayBinary = () =>
  process.env.GATEWAYD_BIN || join(resolve(ROOT, process.env.CARGO_TARGET_DIR || 'target'), 'debug', 'gatewayd');

/**
 * Returns false when the gateway binary is there; otherwise a skip message, or throws when
 * GATEWAYD_REQUIRE=1 so a missing binary fails the run instead of skipping it.
 */
export function gatewayMissing() {
  const bin = gatewayBinary();
  if (existsSync(bin)) return false;
  const msg = `gateway binary ${bin} not found (build it with cargo build, or set GATEWAYD_BIN)`;
  if (process.env.GATEWAYD_REQUIRE === '1') throw new Error(`${msg}; GATEWAYD_REQUIRE=1`);
  return msg;
}

/** One HTTPS GET that accepts the lab's self-signed certificate; resolves to the status code. */
export function probeHttps(url, { timeout = 1000 } = {}) {
  return new Promise((resolvePromise, reject) => {
    const req = https.get(url, { rejectUnauthorized: false, timeout }, (res) => {
      res.resume();
      resolvePromise(res.statusCode);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/**
 * Starts `gatewayd run --profile profiles/lab.toml` with a fresh state directory and waits
 * until https://127.0.0.1:8443/ answers. stop() ends it and removes the state directory.
 */
export async function startGateway({ profile = 'profiles/lab.toml', timeout = 30_000 } = {}) {
  // Another gateway answering already would make this test talk to the wrong process.
  const busy = await probeHttps(`${GATEWAY_URL}/`).then(() => true, () => false);
  if (busy) throw new Error(`${GATEWAY_URL} already answers: stop the other gateway first`);

  const stateDir = await mkdtemp(join(tmpdir(), 'gatewayd-browser-'));
  const output = [];
  const proc = spawn(gatewayBinary(), ['run', '--profile', profile, '--state-dir', stateDir], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  const keep = (chunk) => {
    output.push(chunk.toString());
    if (output.length > 2000) output.splice(0, output.length - 2000);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exited = null;
  const exitPromise = new Promise((r) => proc.on('exit', (code, signal) => r((exited = { code, signal }))));
  const logs = () => output.join('');

  const stop = async () => {
    if (!exited) {
      proc.kill('SIGTERM');
      const done = await Promise.race([exitPromise, new Promise((r) => setTimeout(() => r(null), 10_000))]);
      if (!done) {
        proc.kill('SIGKILL');
        await exitPromise;
      }
    }
    await rm(stateDir, { recursive: true, force: true });
  };

  try {
    await waitFor(async () => {
      if (exited) throw new Error(`gatewayd exited early (${JSON.stringify(exited)}):\n${logs()}`);
      return probeHttps(`${GATEWAY_URL}/`).then(() => true, () => false);
    }, { timeout, interval: 200, what: `${GATEWAY_URL}/ to answer`, describe: () => logs().slice(-4000) || '(no output)' });
  } catch (err) {
    await stop();
    throw err;
  }
  return { proc, stateDir, url: GATEWAY_URL, logs, stop, exited: () => exited };
}

/** A throwaway self-signed certificate for 127.0.0.1, made with the openssl command. */
export async function selfSignedCert() {
  const dir = await mkdtemp(join(tmpdir(), 'softphone-tls-'));
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  const run = spawnSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1',
  ], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`openssl failed: ${run.error || run.stderr}`);
  const pair = { key: await readFile(key), cert: await readFile(cert) };
  await rm(dir, { recursive: true, force: true });
  return pair;
}

/**
 * Writes a mono 16-bit WAV with a steady sine tone, for --use-file-for-fake-audio-capture.
 */
export async function writeToneWav(path, { freq = 440, seconds = 10, rate = 48000, amplitude = 0.5 } = {}) {
  const samples = seconds * rate;
  const buf = Buffer.alloc(44 + samples * 2);
  buf.write('RIFF', 0);
  buf.writeUInt32LE(36 + samples * 2, 4);
  buf.write('WAVEfmt ', 8);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write('data', 36);
  buf.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) {
    buf.writeInt16LE(Math.round(Math.sin((2 * Math.PI * freq * i) / rate) * amplitude * 32767), 44 + i * 2);
  }
  await writeFile(path, buf);
  return path;
}

// G.711 u-law of one 16-bit sample (ITU-T G.711, the usual segment search).
function ulaw(sample) {
  let s = Math.max(-32635, Math.min(32635, sample));
  const sign = s < 0 ? 0x80 : 0;
  if (sign) s = -s;
  s += 0x84;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

/** Writes headerless 8 kHz G.711 u-law with a steady tone, for sipp's rtp_stream. */
export async function writeToneUlaw(path, { freq = 440, seconds = 20, amplitude = 0.5 } = {}) {
  const rate = 8000;
  const out = Buffer.alloc(seconds * rate);
  for (let i = 0; i < out.length; i++) out[i] = ulaw(Math.round(Math.sin((2 * Math.PI * freq * i) / rate) * amplitude * 32767));
  await writeFile(path, out);
  return path;
}

export const SIPP = process.env.SIPP_BIN || '/usr/bin/sipp';
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

/**
 * Records the SIP messages a page exchanges over its WebSocket: `sent` and `received` lists of
 * message texts. Call before the page loads.
 */
export function recordSip(page) {
  const log = { sent: [], received: [] };
  page.on('websocket', (ws) => {
    ws.on('framesent', ({ payload }) => log.sent.push(String(payload)));
    ws.on('framereceived', ({ payload }) => log.received.push(String(payload)));
  });
  return log;
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
 * `sending` is on.
 */
export class RtpPeer {
  static async start({ telephoneEvent = 101, basePort = 35000 } = {}) {
    const peer = new RtpPeer(telephoneEvent);
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
    this.sending = true;
    this.sent = 0;
    this.seq = randomBytes(2).readUInt16BE();
    this.ts = randomBytes(4).readUInt32BE();
    this.ssrc = randomBytes(4).readUInt32BE();
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
    const pt = msg[1] & 0x7f;
    this.byPt[pt] = (this.byPt[pt] || 0) + 1;
    const cc = msg[0] & 0x0f;
    const offset = 12 + 4 * cc + (msg[0] & 0x10 ? 4 + 4 * msg.readUInt16BE(14 + 4 * cc) : 0);
    if (pt === 0 || pt === 8) this.audio += 1;
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

  tick() {
    if (!this.sending || !this.remote) return;
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

// ---- static server for the page alone -------------------------------------------------

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.json': 'application/json',
};

export function cspFor(host) {
  return [
    "default-src 'self'",
    `connect-src 'self' wss://${host}`,
    "img-src 'self' data:",
    "media-src 'self' blob:",
    "style-src 'self'",
    "script-src 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

export const LAB_CONFIG = {
  site: 'lab',
  sip_domain: '127.0.0.1',
  ws_path: '/ws',
  echo_number: '600',
  ice_servers: [],
};

/**
 * Serves web/dist on 127.0.0.1 with the gateway's CSP and a /config.json: over plain HTTP
 * (still a secure context for the browser) where nothing answers WebSocket upgrades, or, given
 * `tls` ({key, cert}) and a `relay`, over HTTPS with the relay answering /ws.
 */
export async function startStaticServer({ root = WEB_DIST, config = LAB_CONFIG, tls = null, relay = null } = {}) {
  const counts = { config: 0 };
  const handler = async (req, res) => {
    const host = req.headers.host || '127.0.0.1';
    const headers = {
      'Content-Security-Policy': cspFor(host),
      'X-Content-Type-Options': 'nosniff',
      'Cache-Control': 'no-store',
    };
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (path === '/config.json' && config) {
      counts.config += 1;
      res.writeHead(200, { ...headers, 'Content-Type': 'application/json' });
      res.end(JSON.stringify(config));
      return;
    }
    const file = normalize(join(root, path === '/' ? 'index.html' : path));
    if (!file.startsWith(root + sep)) {
      res.writeHead(403, headers).end();
      return;
    }
    try {
      if (!(await stat(file)).isFile()) throw new Error('not a file');
      const body = await readFile(file);
      res.writeHead(200, { ...headers, 'Content-Type': TYPES[extname(file)] || 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404, headers).end();
    }
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  server.on('upgrade', (req, socket, head) => {
    if (relay && new URL(req.url, 'http://x').pathname === config?.ws_path) relay.upgrade(req, socket, head);
    else socket.destroy();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    port,
    configRequests: () => counts.config,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}
