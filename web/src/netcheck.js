// The network check an agent runs before a shift, so "my network" can be told from "the
// gateway": (1) the SIP WebSocket connects (a fresh one, timed) and the phone is registered
// (how long its REGISTER took, and an OPTIONS round trip over its connection now); (2) for each
// TURN URI the page was given, a throwaway relay-only RTCPeerConnection gathers a relay
// candidate (or not) within a deadline, summed up per transport (UDP, TCP, TLS); (3) a short
// call to the echo number, whose loss, jitter and round trip give a MOS estimate. This module
// owns the check's steps and result; it drives the Phone only through its public methods and
// knows nothing about the DOM.

import { estimateMos, mosGrade, rFactor } from './quality.js';

export const TRANSPORTS = Object.freeze(['udp', 'tcp', 'tls']);

export const LIMITS = Object.freeze({
  // A fresh WebSocket must open, and a REGISTER refresh be answered, within this.
  wssMs: 5000,
  // Credentials still being fetched at the start of the check.
  turnCredentialsMs: 5000,
  // One relay candidate per TURN URI.
  turnProbeMs: 5000,
  // The echo number answers.
  echoAnswerMs: 15000,
  // The echo call's once-a-second statistics taken for the estimate.
  echoSamples: 5,
  // The whole measurement, answer included.
  echoMs: 30000,
  hangupMs: 5000,
});

/** The transport a TURN URI uses toward the server: 'udp', 'tcp', 'tls', or null (not TURN). */
export function turnTransport(uri) {
  const m = /^(turns?):([^?]+)(?:\?(.*))?$/i.exec(String(uri || '').trim());
  if (!m) return null;
  if (m[1].toLowerCase() === 'turns') return 'tls';
  // RFC 7065: `?transport=udp|tcp`, UDP when absent (ABNF literals are case-insensitive).
  const param = (m[3] || '').split('&').map((p) => p.split('=')).find(([k]) => k.toLowerCase() === 'transport');
  const transport = param ? String(param[1] || '').toLowerCase() : 'udp';
  return transport === 'udp' || transport === 'tcp' ? transport : null;
}

/** One probe target per TURN URI in the RTCIceServer list: `{uri, transport, server}`. */
export function turnTargets(iceServers) {
  const out = [];
  for (const s of iceServers || []) {
    for (const uri of [].concat(s.urls || [])) {
      const transport = turnTransport(uri);
      if (!transport || out.some((t) => t.uri === uri)) continue;
      out.push({ uri, transport, server: { urls: uri, username: s.username, credential: s.credential } });
    }
  }
  return out;
}

const blankTransport = (state) => ({ state, uri: null, ms: null, error: '', uris: 0, reachableUris: 0 });

/**
 * Per transport, from the per-URI results: 'reachable' when any of its URIs gave a relay
 * candidate (the fastest is shown), 'checking' while any is still under way, else
 * 'unreachable'; 'not offered' when the gateway lists no URI for it. `uris` and
 * `reachableUris` count its URIs. `fallback` (a state such
 * as 'no credentials', with `error`) stands for every transport when nothing could be probed.
 */
export function summarizeTransports(results, fallback = null) {
  const out = {};
  for (const transport of TRANSPORTS) {
    const mine = results.filter((r) => r.transport === transport);
    if (mine.length === 0) {
      out[transport] = fallback ? { ...blankTransport(fallback.state), error: fallback.error || '' } : blankTransport('not offered');
      continue;
    }
    const reachable = mine.filter((r) => r.state === 'reachable').sort((a, b) => a.ms - b.ms)[0];
    const pending = mine.find((r) => r.state === 'checking' || r.state === 'pending');
    const pick = reachable || pending || mine[0];
    const reachableUris = mine.filter((r) => r.state === 'reachable').length;
    out[transport] = { state: pick.state, uri: pick.uri, ms: pick.ms, error: pick.error || '', uris: mine.length, reachableUris };
  }
  return out;
}

const isRelay = (c) => c && (c.type === 'relay' || / typ relay( |$)/.test(c.candidate || ''));

/**
 * Gathers with a throwaway relay-only RTCPeerConnection that knows only `server` (a data
 * channel starts gathering; no microphone needed). Resolves to `{state: 'reachable', ms,
 * relayProtocol}` with the time of the first relay candidate, or `{state: 'unreachable', ms,
 * error}`. It waits for the end of gathering (at most `limitMs`) before closing the connection,
 * which releases the allocations: closing at the first candidate would leave the server holding
 * allocations still being made over the browser's other interfaces until they expire.
 */
export function probeTurn(server, { Peer = globalThis.RTCPeerConnection, limitMs = LIMITS.turnProbeMs, now = () => performance.now() } = {}) {
  const started = now();
  let pc;
  try {
    pc = new Peer({ iceServers: [server], iceTransportPolicy: 'relay', iceCandidatePoolSize: 0 });
  } catch (err) {
    return Promise.resolve({ state: 'unreachable', ms: null, error: `not usable: ${err.message}` });
  }
  return new Promise((resolve) => {
    const errors = [];
    let found = null;
    let timer = null;
    let done = false;
    const finish = (why) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        pc.close();
      } catch {
        // closing twice is harmless
      }
      if (found) resolve({ state: 'reachable', error: '', ...found });
      else resolve({ state: 'unreachable', ms: Math.round(now() - started), error: errors.length ? errors[errors.length - 1] : why });
    };
    pc.addEventListener('icecandidate', (e) => {
      if (isRelay(e.candidate) && !found) found = { ms: Math.round(now() - started), relayProtocol: e.candidate.relayProtocol || null };
      else if (!e.candidate) finish('no relay candidate');
    });
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') finish('no relay candidate');
    });
    pc.addEventListener('icecandidateerror', (e) => {
      const text = [e.errorCode, e.errorText].filter((x) => x !== undefined && x !== null && x !== '').join(' ');
      if (text) errors.push(text);
    });
    timer = setTimeout(() => finish(`no relay candidate within ${limitMs / 1000} s`), limitMs);
    try {
      pc.createDataChannel('network-check');
      pc.createOffer()
        .then((offer) => pc.setLocalDescription(offer))
        .catch((err) => finish(err.message));
    } catch (err) {
      finish(err.message);
    }
  });
}

/**
 * Loss, jitter and round trip of the echo call from its statistics (as Phone keeps them, once a
 * second): loss over the measured window, jitter and round trip averaged over the samples.
 */
export function echoFigures(samples) {
  if (!samples.length) return null;
  const first = samples[0];
  const last = samples[samples.length - 1];
  const received = last.packetsReceived - (samples.length > 1 ? first.packetsReceived : 0);
  const lost = Math.max(0, last.packetsLost - (samples.length > 1 ? first.packetsLost : 0));
  const mean = (key) => {
    const v = samples.map((s) => s[key]).filter((x) => typeof x === 'number' && Number.isFinite(x));
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
  };
  const lossFraction = received + lost > 0 ? lost / (received + lost) : null;
  return {
    packetsReceived: last.packetsReceived,
    packetsLost: last.packetsLost,
    packetsSent: last.packetsSent,
    lossFraction,
    jitterMs: mean('jitterMs'),
    rttMs: mean('rttMs'),
    codec: last.codec || null,
    localCandidateType: last.localCandidateType || null,
    relayProtocol: last.relayProtocol || null,
  };
}

const NAMES = { udp: 'UDP', tcp: 'TCP', tls: 'TLS' };

/**
 * One line for the agent, and a grade: which part failed, and whose side it is likely on.
 */
export function verdict({ wss, turn, echo, error = '' }) {
  if (error) return { grade: 'poor', text: `The check could not finish (${error}): run it again, or call support.` };
  if (wss.state === 'unreachable') {
    return { grade: 'poor', text: 'The gateway cannot be reached from this network: check your connection (or VPN, proxy), then call support if it persists.' };
  }
  if (wss.state === 'connected') {
    return { grade: 'poor', text: 'Your network reaches the gateway, but it does not register this phone: call support.' };
  }
  const offered = TRANSPORTS.filter((t) => turn[t].state !== 'not offered');
  const down = offered.filter((t) => turn[t].state === 'unreachable');
  const noCredentials = offered.some((t) => turn[t].state === 'no credentials');
  const echoFailed = echo.state === 'failed';
  if (echoFailed && offered.length && down.length === offered.length) {
    return { grade: 'poor', text: 'Your network blocks audio to the gateway and its relays (TURN): calls will have no audio. Try another network or call support.' };
  }
  if (echoFailed) return { grade: 'poor', text: `The echo call failed (${echo.error}): calls may fail too. Call support.` };
  const poorAudio = echo.state === 'done' && mosGrade(echo.mos) === 'poor';
  const fairAudio = echo.state === 'done' && mosGrade(echo.mos) === 'fair';
  const parts = [];
  if (noCredentials) parts.push('the gateway gave no relay credentials');
  if (down.length && down.length === offered.length) parts.push('every relay (TURN) is blocked by your network; calls work only where direct audio does');
  else if (down.length) parts.push(`relays over ${down.map((t) => NAMES[t]).join(' and ')} are unreachable from your network; calls will use the others`);
  const partly = offered.filter((t) => turn[t].state === 'reachable' && turn[t].reachableUris < turn[t].uris);
  if (partly.length) parts.push(`some ${partly.map((t) => NAMES[t]).join(' and ')} relay addresses are unreachable`);
  if (poorAudio) parts.push('the echo call sounds poor: expect broken audio on calls (another network or a cable may help)');
  else if (fairAudio) parts.push('the echo call sounds fair: some calls may be choppy');
  if (!parts.length) return { grade: 'good', text: 'All good: your network and the gateway are ready for calls.' };
  const text = parts.join('; ');
  return { grade: poorAudio || noCredentials || (down.length && down.length === offered.length) ? 'poor' : 'fair', text: `${text[0].toUpperCase()}${text.slice(1)}.` };
}

const idleResult = () => ({
  state: 'idle',
  startedAt: null,
  finishedAt: null,
  wss: { state: 'pending', url: '', connectMs: null, registerMs: null, sipRttMs: null, error: '' },
  turn: Object.fromEntries(TRANSPORTS.map((t) => [t, blankTransport('pending')])),
  turnUris: [],
  echo: { state: 'pending', number: '', samples: 0, error: '', r: null, mos: null, grade: null },
  mos: null,
  verdict: null,
  error: '',
});

/**
 * Runs the check against `phone` (a logged-in Phone): `run()` resolves when every step has
 * ended; `result` holds what is known so far, and a 'change' event follows every update.
 * `Peer` and `Socket` stand for RTCPeerConnection and WebSocket.
 */
export class NetworkCheck extends EventTarget {
  constructor(phone, { Peer = globalThis.RTCPeerConnection, Socket = globalThis.WebSocket, limits = LIMITS, now = () => performance.now() } = {}) {
    super();
    this.phone = phone;
    this.Peer = Peer;
    this.Socket = Socket;
    this.limits = { ...LIMITS, ...limits };
    this.now = now;
    this.result = idleResult();
    this.running = null;
    this.registration = null;
    this.watchRegistrations();
  }

  /** Whether a check can start now: logged in, not in a call, none under way. */
  get canRun() {
    return !this.running && this.phone.loggedIn && !this.phone.inCall;
  }

  update(patch) {
    Object.assign(this.result, patch);
    this.dispatchEvent(new Event('change'));
  }

  /** A deep copy of the result, for the test hook. */
  snapshot() {
    return JSON.parse(JSON.stringify(this.result));
  }

  run() {
    if (this.running) return this.running;
    if (!this.canRun) return Promise.resolve(this.snapshot());
    this.result = { ...idleResult(), state: 'running', startedAt: Date.now() };
    this.dispatchEvent(new Event('change'));
    this.running = (async () => {
      try {
        await this.checkWss();
        await this.checkTurn();
        await this.checkEcho();
      } catch (err) {
        // A step that breaks ends the check with what is known, never an unhandled rejection.
        this.result.error = err.message || String(err);
      } finally {
        this.result.verdict = verdict(this.result);
        this.running = null;
        this.update({ state: 'done', finishedAt: Date.now() });
      }
      return this.snapshot();
    })();
    return this.running;
  }

  // ---- 1. WSS ------------------------------------------------------------------------

  /**
   * Times the phone's own registrations: from the WebSocket's opening (or, without that event,
   * from the start of the login or reconnection) to the registrar's 200. Listeners go on each new user
   * agent before it starts (Phone emits a change as soon as it has one).
   */
  watchRegistrations() {
    let watched = null;
    this.phone.addEventListener('change', () => {
      const ua = this.phone.ua;
      if (!ua || ua === watched) return;
      watched = ua;
      // A new login starts from a blank check: the last one may have been another agent's.
      if (!this.running) {
        this.result = idleResult();
        this.dispatchEvent(new Event('change'));
      }
      let mark = this.now();
      let connectedAt = null;
      this.registration = { registerMs: null };
      ua.on('connecting', () => {
        mark = this.now();
        connectedAt = null;
      });
      ua.on('connected', () => {
        connectedAt = this.now();
      });
      ua.on('registered', () => {
        if (ua !== this.phone.ua) return;
        this.registration = { registerMs: Math.round(this.now() - (connectedAt ?? mark)) };
      });
    });
  }

  async checkWss() {
    const url = this.phone.config.ws_url;
    this.update({ wss: { ...this.result.wss, state: 'checking', url } });
    const open = await this.openSocket(url);
    if (open.error) {
      this.update({ wss: { ...this.result.wss, state: 'unreachable', error: open.error } });
      return;
    }
    const ping = await this.sipRoundTrip();
    const reg = this.registration || { registerMs: null };
    this.update({
      wss: {
        ...this.result.wss,
        state: ping.error ? 'connected' : 'registered',
        connectMs: open.ms,
        registerMs: ping.error ? null : reg.registerMs,
        sipRttMs: ping.ms ?? null,
        error: ping.error || '',
      },
    });
  }

  /** Opens a fresh WebSocket to the SIP endpoint (subprotocol sip) and closes it at once. */
  openSocket(url) {
    const started = this.now();
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new this.Socket(url, 'sip');
      } catch (err) {
        resolve({ error: err.message });
        return;
      }
      let done = false;
      const finish = (result) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        try {
          ws.close(1000);
        } catch {
          // already closing
        }
        resolve(result);
      };
      const timer = setTimeout(() => finish({ error: `no answer within ${this.limits.wssMs / 1000} s` }), this.limits.wssMs);
      ws.addEventListener('open', () => finish({ ms: Math.round(this.now() - started) }));
      ws.addEventListener('close', (e) => finish({ error: `connection refused or closed (code ${e.code})` }));
      ws.addEventListener('error', () => finish({ error: 'cannot connect' }));
    });
  }

  /**
   * While registered, times an OPTIONS to the gateway itself over the phone's own connection
   * (the gateway answers it without involving the SIP server).
   */
  sipRoundTrip() {
    const ua = this.phone.ua;
    const registration = this.phone.state.registration;
    if (!ua || registration !== 'Registered') {
      const detail = this.phone.state.detail;
      return Promise.resolve({ error: `${registration}${detail ? ` (${detail})` : ''}` });
    }
    const started = this.now();
    return new Promise((resolve) => {
      let timer = null;
      let done = false;
      const finish = (result) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(result);
      };
      timer = setTimeout(() => finish({ error: `no SIP answer within ${this.limits.wssMs / 1000} s` }), this.limits.wssMs);
      try {
        ua.sendOptions(`sip:${this.phone.config.sip_domain}`, null, {
          eventHandlers: {
            succeeded: () => finish({ ms: Math.round(this.now() - started) }),
            failed: (e) => finish({ error: `OPTIONS failed: ${e && e.cause ? e.cause : 'no reason given'}` }),
          },
        });
      } catch (err) {
        finish({ error: `OPTIONS not sent: ${err.message}` });
      }
    });
  }

  // ---- 2. TURN -----------------------------------------------------------------------

  async checkTurn() {
    const turn = this.phone.turn;
    for (const t of TRANSPORTS) this.result.turn[t] = blankTransport('checking');
    this.update({});
    if (turn) await turn.fresh(this.limits.turnCredentialsMs);
    const targets = turnTargets(this.phone.currentIceServers());
    let fallback = null;
    if (!targets.length && turn && turn.state !== 'unavailable') {
      const why = { none: 'asked for once registered', fetching: 'still being fetched', refreshing: 'being fetched again', ready: 'expired' };
      fallback = { state: 'no credentials', error: turn.error || why[turn.state] || turn.state };
    }
    const results = targets.map((t) => ({ uri: t.uri, transport: t.transport, state: 'checking', ms: null, error: '', relayProtocol: null }));
    const publish = () => this.update({ turnUris: results.map((r) => ({ ...r })), turn: summarizeTransports(results, fallback) });
    publish();
    await Promise.all(targets.map(async (t, i) => {
      const r = await probeTurn(t.server, { Peer: this.Peer, limitMs: this.limits.turnProbeMs, now: this.now });
      Object.assign(results[i], r);
      publish();
    }));
  }

  // ---- 3. echo call ------------------------------------------------------------------

  async checkEcho() {
    const phone = this.phone;
    const number = phone.config.echo_number;
    const setEcho = (patch) => this.update({ echo: { ...this.result.echo, ...patch } });
    if (!number) return setEcho({ state: 'skipped', error: 'the gateway has no echo number' });
    if (phone.state.registration !== 'Registered') return setEcho({ state: 'skipped', error: 'not registered' });
    if (phone.inCall) return setEcho({ state: 'skipped', error: 'a call is in progress' });
    setEcho({ state: 'calling', number });
    phone.call(number);
    const started = this.now();
    const left = () => Math.max(0, this.limits.echoMs - (this.now() - started));
    const answered = await this.waitForPhone(() => {
      const c = phone.state.call;
      return c === 'In call' || c.startsWith('Ended:') ? c : null;
    }, Math.min(this.limits.echoAnswerMs, left()));
    if (answered !== 'In call') {
      if (phone.inCall) await this.hangUp();
      return setEcho({ state: 'failed', error: answered ? answered.replace(/^Ended: /, '') : 'no answer' });
    }
    setEcho({ state: 'measuring' });
    const samples = [];
    let seen = phone.state.stats;
    const enough = await this.waitForPhone(() => {
      if (phone.state.call !== 'In call') return 'ended';
      const s = phone.state.stats;
      if (s && s !== seen) {
        seen = s;
        // Counting starts once audio flows.
        if (samples.length || s.packetsReceived > 0) samples.push(s);
        setEcho({ samples: samples.length });
      }
      return samples.length > this.limits.echoSamples ? 'ok' : null;
    }, left());
    const ended = enough === 'ended' ? phone.state.call.replace(/^Ended: /, '') : '';
    if (phone.inCall) await this.hangUp();
    const figures = echoFigures(samples);
    if (!figures || figures.lossFraction === null || !(figures.packetsReceived > 0)) {
      return setEcho({ state: 'failed', ...(figures || {}), error: ended ? `the call ended: ${ended}` : 'no audio came back' });
    }
    const r = rFactor(figures);
    const mos = estimateMos(figures);
    this.update({ echo: { ...this.result.echo, ...figures, state: 'done', error: ended && enough !== 'ok' ? `measured until the call ended: ${ended}` : '', r, mos, grade: mosGrade(mos) }, mos });
  }

  async hangUp() {
    this.phone.hangup();
    await this.waitForPhone(() => !this.phone.inCall, this.limits.hangupMs);
  }

  /** Resolves to `probe()`'s first truthy value as the phone changes, or null after `limitMs`. */
  waitForPhone(probe, limitMs) {
    return new Promise((resolve) => {
      let timer = null;
      const check = () => {
        const v = probe();
        if (!v) return;
        clearTimeout(timer);
        this.phone.removeEventListener('change', check);
        resolve(v);
      };
      this.phone.addEventListener('change', check);
      timer = setTimeout(() => {
        this.phone.removeEventListener('change', check);
        resolve(null);
      }, limitMs);
      check();
    });
  }
}
