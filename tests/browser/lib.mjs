// Shared pieces of the browser tests: Debian chromium through playwright-core, the gateway
// process, a static server for testing the page on its own, and deadline-bound waits.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
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
export async function launchBrowser({ fakeAudioFile, extraArgs = [] } = {}) {
  const args = [...CHROMIUM_ARGS, ...extraArgs];
  if (fakeAudioFile) args.push(`--use-file-for-fake-audio-capture=${fakeAudioFile}`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

/** Runs a command to its end; its stdout, or an error carrying its stderr. */
export function runChecked(args, input) {
  const r = spawnSync(args[0], args.slice(1), { input, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr || r.error}`);
  return r.stdout;
}

/** Why a test that makes network namespaces cannot run here (root, `ip netns`, `tools`), or false. */
export function netnsUnavailable(tools = ['nft']) {
  if (process.getuid && process.getuid() !== 0) return `needs root for ip netns and ${tools.join(', ')}`;
  if (spawnSync('ip', ['netns', 'list']).status !== 0) return 'ip netns is not available';
  for (const tool of tools) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} is not installed`;
  }
  return false;
}

/**
 * Launches chromium inside network namespace `ns` (through a wrapper script in `dir`), trusting
 * the gateway certificate at `certPath` by its key, with `fakeAudioFile` as the microphone.
 */
export async function launchBrowserInNetns(ns, dir, { certPath, fakeAudioFile, extraArgs = [] }) {
  const wrapper = join(dir, 'chromium-in-netns');
  await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM} "$@"\n`);
  await chmod(wrapper, 0o755);
  const r = spawnSync('sh', ['-c', `openssl x509 -pubkey -noout -in ${certPath} | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`the SPKI hash of ${certPath}: ${r.stderr}`);
  const args = [...CHROMIUM_ARGS, ...extraArgs, `--ignore-certificate-errors-spki-list=${r.stdout.trim()}`];
  if (fakeAudioFile) args.push(`--use-file-for-fake-audio-capture=${fakeAudioFile}`);
  return chromium.launch({ executablePath: wrapper, headless: true, args });
}

export async function newContext(browser) {
  return browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 800 } });
}

// The page's HTTP Digest exchange for TURN credentials starts with a 401 by design (RFC 7616);
// chromium logs that like any failed load. Only that one is not a complaint.
function isDigestChallenge(msg) {
  const { url } = msg.location();
  return /status of 401\b/.test(msg.text()) && !!url && new URL(url).pathname === '/turn-credentials';
}

/**
 * Records what a page complains about: console errors, uncaught exceptions and CSP violations
 * (collected in the page through an init script, which the page's CSP does not govern).
 */
export async function watchPage(page) {
  const seen = { consoleErrors: [], pageErrors: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !isDigestChallenge(msg)) seen.consoleErrors.push(msg.text());
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

/**
 * Keeps every RTCPeerConnection the page makes in `window.__peerConnections`, so a test can
 * reach the received audio track. Call before the page loads (an init script: the page's CSP
 * does not govern it).
 */
export function capturePeerConnections(page) {
  return page.addInitScript(() => {
    const Original = window.RTCPeerConnection;
    window.__peerConnections = [];
    const Capturing = function (...args) {
      const pc = new Original(...args);
      window.__peerConnections.push(pc);
      return pc;
    };
    Capturing.prototype = Original.prototype;
    Object.setPrototypeOf(Capturing, Original);
    window.RTCPeerConnection = Capturing;
  });
}

/**
 * The spectrum of what the page receives on its last peer connection's audio track, through
 * a WebAudio analyser (FFT of 8192 points at the context's rate, averaged over `ms`): the
 * strongest frequency between `fromHz` and `toHz`, and the level in dB at each of `probes`
 * (Hz) relative to that peak band's median. Needs capturePeerConnections before the page loads
 * and chromium started with --autoplay-policy=no-user-gesture-required.
 */
export function receivedSpectrum(page, { ms = 1500, fromHz = 100, toHz = 3800, probes = [] } = {}) {
  return page.evaluate(async ({ ms, fromHz, toHz, probes }) => {
    const pc = window.__peerConnections.at(-1);
    const receiver = pc && pc.getReceivers().find((r) => r.track && r.track.kind === 'audio');
    if (!receiver) throw new Error('no audio receiver');
    const ctx = window.__spectrumContext || (window.__spectrumContext = new AudioContext());
    await ctx.resume();
    const source = ctx.createMediaStreamSource(new MediaStream([receiver.track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0;
    source.connect(analyser);
    const bins = new Float32Array(analyser.frequencyBinCount);
    const sum = new Float64Array(bins.length);
    let frames = 0;
    const until = performance.now() + ms;
    while (performance.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
      analyser.getFloatFrequencyData(bins);
      for (let i = 0; i < bins.length; i++) sum[i] += 10 ** (bins[i] / 10);
      frames += 1;
    }
    source.disconnect();
    const hzPerBin = ctx.sampleRate / analyser.fftSize;
    const db = Array.from(sum, (p) => 10 * Math.log10(p / frames + 1e-30));
    const lo = Math.ceil(fromHz / hzPerBin);
    const hi = Math.floor(toHz / hzPerBin);
    let peak = lo;
    for (let i = lo; i <= hi; i++) if (db[i] > db[peak]) peak = i;
    const band = db.slice(lo, hi + 1).sort((a, b) => a - b);
    const floor = band[Math.floor(band.length / 2)];
    const at = (hz) => {
      const i = Math.round(hz / hzPerBin);
      return Math.max(db[i - 1], db[i], db[i + 1]) - floor;
    };
    return { peakHz: peak * hzPerBin, peakDb: db[peak] - floor, floorDb: floor, probes: Object.fromEntries(probes.map((hz) => [hz, at(hz)])), frames };
  }, { ms, fromHz, toHz, probes });
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
export async function startGateway({ profile = 'profiles/lab.toml', timeout = 30_000, env = {} } = {}) {
  // Another gateway answering already would make this test talk to the wrong process.
  const busy = await probeHttps(`${GATEWAY_URL}/`).then(() => true, () => false);
  if (busy) throw new Error(`${GATEWAY_URL} already answers: stop the other gateway first`);

  const stateDir = await mkdtemp(join(tmpdir(), 'gatewayd-browser-'));
  const output = [];
  const proc = spawn(gatewayBinary(), ['run', '--profile', profile, '--state-dir', stateDir], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', ...env },
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
export function ulaw(sample) {
  let s = Math.max(-32635, Math.min(32635, sample));
  const sign = s < 0 ? 0x80 : 0;
  if (sign) s = -s;
  s += 0x84;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

/** One G.711 u-law byte back to a 16-bit sample. */
export function ulawDecode(code) {
  const c = ~code & 0xff;
  const magnitude = ((((c & 0x0f) << 3) + 0x84) << ((c >> 4) & 0x07)) - 0x84;
  return c & 0x80 ? -magnitude : magnitude;
}

/**
 * The strongest frequency of `samples` (at `rate`) between `fromHz` and `toHz`, by a DFT in
 * `stepHz` steps, and how far above the median of that band it stands (dB).
 */
export function peakFrequency(samples, rate, { fromHz = 100, toHz = 3800, stepHz = 5 } = {}) {
  const power = [];
  for (let f = fromHz; f <= toHz; f += stepHz) {
    const w = (2 * Math.PI * f) / rate;
    let re = 0;
    let im = 0;
    for (let i = 0; i < samples.length; i++) {
      re += samples[i] * Math.cos(w * i);
      im += samples[i] * Math.sin(w * i);
    }
    power.push([f, re * re + im * im]);
  }
  const peak = power.reduce((a, b) => (b[1] > a[1] ? b : a));
  const sorted = power.map((p) => p[1]).sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] || 1e-30;
  return { hz: peak[0], aboveMedianDb: 10 * Math.log10(peak[1] / median) };
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
