import test from 'node:test';
import assert from 'node:assert/strict';
import {
  NetworkCheck, echoFigures, probeTurn, summarizeTransports, turnTargets, turnTransport, verdict,
} from '../src/netcheck.js';
import { describeEcho, describeTransport, describeWss } from '../src/netcheck-view.js';

const LAB = ['turn:127.0.0.1:3478?transport=udp', 'turn:127.0.0.1:3478?transport=tcp', 'turns:localhost:5349?transport=tcp'];

test('turnTransport names the transport toward the TURN server', () => {
  assert.deepEqual(LAB.map(turnTransport), ['udp', 'tcp', 'tls']);
  assert.equal(turnTransport('turn:host'), 'udp', 'RFC 7065: no transport means UDP');
  assert.equal(turnTransport('TURN:host:3478?Transport=TCP'), 'tcp');
  assert.equal(turnTransport('turns:host:443'), 'tls');
  assert.equal(turnTransport('turns:[2001:db8::1]:5349?transport=tcp'), 'tls');
  assert.equal(turnTransport('turn:host?transport=sctp'), null);
  assert.equal(turnTransport('stun:host:3478'), null);
  assert.equal(turnTransport('turn:'), null);
  assert.equal(turnTransport(undefined), null);
});

test('turnTargets gives one server per TURN URI, with its credentials, once', () => {
  const servers = [
    { urls: 'stun:127.0.0.1:3478' },
    { urls: LAB, username: '1700000000:5001', credential: 'pw' },
    { urls: [LAB[0]], username: 'other', credential: 'x' },
  ];
  const t = turnTargets(servers);
  assert.deepEqual(t.map((x) => [x.uri, x.transport]), [[LAB[0], 'udp'], [LAB[1], 'tcp'], [LAB[2], 'tls']]);
  assert.deepEqual(t[2].server, { urls: LAB[2], username: '1700000000:5001', credential: 'pw' });
  assert.deepEqual(turnTargets([]), []);
  assert.deepEqual(turnTargets(undefined), []);
});

test('summarizeTransports: not offered, the fastest reachable URI, checking, unreachable', () => {
  const r = (uri, state, ms, error = '') => ({ uri, transport: turnTransport(uri), state, ms, error });
  const s = summarizeTransports([
    r(LAB[0], 'unreachable', 5000, 'no relay candidate within 5 s'),
    r(LAB[2], 'reachable', 90),
    r('turns:gw:443?transport=tcp', 'reachable', 40),
    r('turns:gw:8443?transport=tcp', 'unreachable', 10, '701 refused'),
  ]);
  assert.deepEqual(s.udp, { state: 'unreachable', uri: LAB[0], ms: 5000, error: 'no relay candidate within 5 s', uris: 1, reachableUris: 0 });
  assert.deepEqual(s.tcp, { state: 'not offered', uri: null, ms: null, error: '', uris: 0, reachableUris: 0 });
  assert.deepEqual(s.tls, { state: 'reachable', uri: 'turns:gw:443?transport=tcp', ms: 40, error: '', uris: 3, reachableUris: 2 });
  const busy = summarizeTransports([r(LAB[1], 'unreachable', 3, 'x'), r('turn:b:3478?transport=tcp', 'checking', null)]);
  assert.equal(busy.tcp.state, 'checking');
  const none = summarizeTransports([], { state: 'no credentials', error: 'refused' });
  assert.deepEqual(none.udp, { state: 'no credentials', uri: null, ms: null, error: 'refused', uris: 0, reachableUris: 0 });
});

// A stand-in for RTCPeerConnection: `script(pc)` plays the gathering once the offer is set.
function fakePeer(script) {
  const made = [];
  class FakePeer extends EventTarget {
    constructor(config) {
      super();
      this.config = config;
      this.closed = false;
      this.iceGatheringState = 'new';
      this.channels = [];
      made.push(this);
    }
    createDataChannel(label) {
      this.channels.push(label);
    }
    async createOffer() {
      return { type: 'offer', sdp: 'v=0' };
    }
    async setLocalDescription() {
      this.iceGatheringState = 'gathering';
      queueMicrotask(() => script(this));
    }
    candidate(c) {
      const e = new Event('icecandidate');
      e.candidate = c;
      this.dispatchEvent(e);
    }
    error(errorCode, errorText) {
      const e = new Event('icecandidateerror');
      Object.assign(e, { errorCode, errorText });
      this.dispatchEvent(e);
    }
    complete() {
      this.iceGatheringState = 'complete';
      this.dispatchEvent(new Event('icegatheringstatechange'));
      this.candidate(null);
    }
    close() {
      this.closed = true;
    }
  }
  return { FakePeer, made };
}

const SERVER = { urls: LAB[2], username: 'u', credential: 'p' };

const RELAY = { type: 'relay', relayProtocol: 'tls', candidate: 'candidate:2 1 udp 41885439 127.0.0.1 43001 typ relay raddr 0.0.0.0 rport 0' };

test('probeTurn: the first relay candidate makes the server reachable; the connection closes when gathering ends', async () => {
  let closedEarly = null;
  const { FakePeer, made } = fakePeer((pc) => {
    pc.candidate({ type: 'host', candidate: 'candidate:1 1 udp 2122260223 10.0.0.2 5000 typ host' });
    pc.candidate(RELAY);
    // A second interface's allocation still under way: nothing is closed yet.
    pc.candidate({ ...RELAY, candidate: RELAY.candidate.replace('43001', '43002') });
    closedEarly = pc.closed;
    pc.complete();
  });
  let t = 0;
  const r = await probeTurn(SERVER, { Peer: FakePeer, limitMs: 1000, now: () => (t += 7) });
  assert.deepEqual(r, { ms: 7, state: 'reachable', error: '', relayProtocol: 'tls' }, 'the time of the first relay candidate');
  assert.equal(closedEarly, false);
  assert.deepEqual(made[0].config, { iceServers: [SERVER], iceTransportPolicy: 'relay', iceCandidatePoolSize: 0 });
  assert.deepEqual(made[0].channels, ['network-check']);
  assert.ok(made[0].closed);
});

test('probeTurn: a relay candidate counts even when gathering outlasts the deadline', async () => {
  const { FakePeer, made } = fakePeer((pc) => pc.candidate(RELAY));
  const r = await probeTurn(SERVER, { Peer: FakePeer, limitMs: 20 });
  assert.equal(r.state, 'reachable');
  assert.ok(made[0].closed, 'closed at the deadline');
});

test('probeTurn: gathering that ends without a relay candidate reports the last ICE error', async () => {
  const { FakePeer, made } = fakePeer((pc) => {
    pc.error(701, 'Failed to establish connection');
    pc.complete();
  });
  const r = await probeTurn(SERVER, { Peer: FakePeer, limitMs: 1000 });
  assert.equal(r.state, 'unreachable');
  assert.equal(r.error, '701 Failed to establish connection');
  assert.ok(made[0].closed);
  // A candidate string naming a relay counts even where the browser has no `type`.
  const { FakePeer: Old } = fakePeer((pc) => {
    pc.candidate({ candidate: 'candidate:2 1 udp 1 127.0.0.1 43001 typ relay raddr 0.0.0.0 rport 0' });
    pc.complete();
  });
  assert.equal((await probeTurn(SERVER, { Peer: Old })).state, 'reachable');
});

test('probeTurn: a server that never answers is unreachable at the deadline', async () => {
  const { FakePeer, made } = fakePeer(() => {});
  const r = await probeTurn(SERVER, { Peer: FakePeer, limitMs: 20 });
  assert.equal(r.state, 'unreachable');
  assert.equal(r.error, 'no relay candidate within 0.02 s');
  assert.ok(made[0].closed);
  class Refusing {
    constructor() {
      throw new SyntaxError('bad URL');
    }
  }
  assert.deepEqual(await probeTurn(SERVER, { Peer: Refusing }), { state: 'unreachable', ms: null, error: 'not usable: bad URL' });
});

test('echoFigures: loss over the window, jitter and round trip averaged', () => {
  const s = (packetsReceived, packetsLost, jitterMs, rttMs) => ({ packetsReceived, packetsLost, packetsSent: packetsReceived, jitterMs, rttMs, codec: 'PCMU', localCandidateType: 'host', relayProtocol: null });
  const f = echoFigures([s(40, 1, 2, null), s(90, 1, 4, 10), s(138, 3, 6, 20)]);
  assert.equal(f.lossFraction, 2 / 100);
  assert.equal(f.jitterMs, 4);
  assert.equal(f.rttMs, 15);
  assert.deepEqual([f.packetsReceived, f.packetsLost, f.codec, f.localCandidateType], [138, 3, 'PCMU', 'host']);
  assert.equal(echoFigures([s(50, 0, 1, 1)]).lossFraction, 0);
  assert.equal(echoFigures([s(0, 0, null, null)]).lossFraction, null);
  assert.equal(echoFigures([]), null);
});

const ok = (ms = 10) => ({ state: 'reachable', ms, uris: 1, reachableUris: 1 });
const WSS_OK = { state: 'registered' };
const ECHO_OK = { state: 'done', mos: 4.4 };

test('verdict tells the agent which side is at fault', () => {
  const all = { udp: ok(), tcp: ok(), tls: ok() };
  assert.equal(verdict({ wss: WSS_OK, turn: all, echo: ECHO_OK }).grade, 'good');
  assert.match(verdict({ wss: { state: 'unreachable' }, turn: all, echo: ECHO_OK }).text, /cannot be reached from this network/);
  assert.match(verdict({ wss: { state: 'connected' }, turn: all, echo: ECHO_OK }).text, /does not register this phone: call support/);
  const tlsDown = verdict({ wss: WSS_OK, turn: { ...all, tls: { state: 'unreachable' } }, echo: ECHO_OK });
  assert.deepEqual(tlsDown, { grade: 'fair', text: 'Relays over TLS are unreachable from your network; calls will use the others.' });
  const notOffered = verdict({ wss: WSS_OK, turn: { ...all, tcp: { state: 'not offered' } }, echo: ECHO_OK });
  assert.equal(notOffered.grade, 'good');
  const blocked = { udp: { state: 'unreachable' }, tcp: { state: 'unreachable' }, tls: { state: 'not offered' } };
  assert.match(verdict({ wss: WSS_OK, turn: blocked, echo: { state: 'failed', error: 'no audio came back' } }).text, /blocks audio/);
  assert.equal(verdict({ wss: WSS_OK, turn: blocked, echo: ECHO_OK }).grade, 'poor');
  assert.match(verdict({ wss: WSS_OK, turn: all, echo: { state: 'done', mos: 3.2 } }).text, /sounds poor/);
  assert.equal(verdict({ wss: WSS_OK, turn: all, echo: { state: 'done', mos: 3.8 } }).grade, 'fair');
  assert.match(verdict({ wss: WSS_OK, turn: all, echo: { state: 'failed', error: '486 Busy Here' } }).text, /486 Busy Here/);
  const partly = verdict({ wss: WSS_OK, turn: { ...all, tls: { ...ok(), uris: 2 } }, echo: ECHO_OK });
  assert.deepEqual(partly, { grade: 'fair', text: 'Some TLS relay addresses are unreachable.' });
  const noCredentials = { udp: { state: 'no credentials' }, tcp: { state: 'no credentials' }, tls: { state: 'no credentials' } };
  assert.equal(verdict({ wss: WSS_OK, turn: noCredentials, echo: ECHO_OK }).grade, 'poor');
});

test('the panel words', () => {
  assert.deepEqual(describeWss({ state: 'registered', connectMs: 13, registerMs: 82, sipRttMs: 9 }),
    { text: 'Registered: connects in 13 ms, registered in 82 ms, SIP round trip 9 ms', tone: 'ok' });
  assert.equal(describeWss({ state: 'unreachable', error: 'cannot connect' }).text, 'Cannot connect: cannot connect');
  assert.deepEqual(describeTransport({ state: 'reachable', ms: 95.4, uris: 1, reachableUris: 1 }), { text: 'Reachable: relay in 95 ms', tone: 'ok' });
  assert.deepEqual(describeTransport({ state: 'reachable', ms: 40, uris: 2, reachableUris: 1 }), { text: 'Reachable: relay in 40 ms (1 of 2 addresses)', tone: 'warn' });
  assert.deepEqual(describeTransport({ state: 'unreachable', error: '701 Failed' }), { text: 'Unreachable: 701 Failed', tone: 'bad' });
  assert.deepEqual(describeTransport({ state: 'not offered' }), { text: 'Not offered by the gateway', tone: 'none' });
  const echo = { state: 'done', mos: 4.399, grade: 'good', lossFraction: 0, jitterMs: 0.17, rttMs: 1, localCandidateType: 'relay', relayProtocol: 'tls', error: '' };
  assert.deepEqual(describeEcho(echo), { text: 'MOS 4.4 (good): loss 0.0 %, jitter 0.2 ms, round trip 1 ms; through the TLS relay', tone: 'ok' });
  assert.equal(describeEcho({ ...echo, localCandidateType: 'host', rttMs: null }).text, 'MOS 4.4 (good): loss 0.0 %, jitter 0.2 ms, round trip –');
  assert.equal(describeEcho({ state: 'failed', error: 'no audio came back' }).text, 'Failed: no audio came back');
});

// ---- the whole check against stand-ins for the phone, the WebSocket and the peer connection ----

class FakeSocket extends EventTarget {
  static refuse = false;
  static opened = [];
  constructor(url, protocol) {
    super();
    FakeSocket.opened.push([url, protocol]);
    setTimeout(() => this.dispatchEvent(Object.assign(new Event(FakeSocket.refuse ? 'close' : 'open'), { code: 1006 })), 1);
  }
  close() {}
}

class FakeUa {
  constructor() {
    this.handlers = new Map();
    this.options = [];
  }
  on(name, fn) {
    this.handlers.set(name, [...(this.handlers.get(name) || []), fn]);
  }
  removeListener(name, fn) {
    this.handlers.set(name, (this.handlers.get(name) || []).filter((f) => f !== fn));
  }
  emit(name, e) {
    for (const fn of this.handlers.get(name) || []) fn(e);
  }
  sendOptions(target, body, { eventHandlers }) {
    this.options.push(target);
    setTimeout(() => eventHandlers.succeeded({}), 1);
  }
}

/** A registered phone whose echo call answers and then reports `stats` once per tick. */
class FakePhone extends EventTarget {
  constructor({ uris = LAB, stats = [] } = {}) {
    super();
    this.config = { ws_url: 'wss://gw/ws', sip_domain: 'gw', echo_number: '600' };
    this.state = { registration: 'Unregistered', detail: '', call: 'Idle', stats: null };
    this.ua = null;
    this.session = null;
    this.calls = [];
    this.stats = stats;
    this.turn = { state: 'ready', error: '', fresh: async () => {} };
    this.uris = uris;
  }
  get loggedIn() {
    return this.ua !== null;
  }
  get inCall() {
    return this.session !== null;
  }
  set(patch) {
    Object.assign(this.state, patch);
    this.dispatchEvent(new Event('change'));
  }
  login() {
    this.ua = new FakeUa();
    this.set({ registration: 'Connecting' });
    this.ua.emit('connecting');
    this.ua.emit('connected');
    this.ua.emit('registered');
    this.set({ registration: 'Registered' });
  }
  currentIceServers() {
    return [{ urls: this.uris, username: 'u', credential: 'p' }];
  }
  call(number) {
    this.calls.push(number);
    this.session = {};
    this.set({ call: 'Calling' });
    const queue = [...this.stats];
    setTimeout(() => {
      this.set({ call: 'In call' });
      const tick = setInterval(() => {
        if (!this.session) return clearInterval(tick);
        const next = queue.shift();
        if (!next) return clearInterval(tick);
        this.set({ stats: { ...next } });
      }, 2);
    }, 2);
  }
  hangup() {
    setTimeout(() => {
      this.session = null;
      this.set({ call: 'Ended: Terminated' });
    }, 1);
  }
}

const echoStats = Array.from({ length: 8 }, (_, i) => ({
  packetsReceived: 50 * (i + 1), packetsLost: 0, packetsSent: 50 * (i + 1), jitterMs: 1, rttMs: 2, codec: 'PCMU', localCandidateType: 'host', relayProtocol: null,
}));

test('NetworkCheck runs WSS, TURN and the echo call in turn and sums them up', async () => {
  const { FakePeer, made } = fakePeer((pc) => {
    const uri = pc.config.iceServers[0].urls;
    if (uri.startsWith('turns:')) {
      pc.error(701, 'Failed to establish connection');
      pc.complete();
    } else {
      pc.candidate({ type: 'relay', candidate: 'candidate:2 1 udp 1 127.0.0.1 43001 typ relay' });
      pc.complete();
    }
  });
  FakeSocket.refuse = false;
  FakeSocket.opened = [];
  const phone = new FakePhone({ stats: echoStats });
  const check = new NetworkCheck(phone, { Peer: FakePeer, Socket: FakeSocket, limits: { turnProbeMs: 1000, echoSamples: 5 } });
  assert.equal(check.canRun, false, 'not before login');
  phone.login();
  assert.equal(check.canRun, true);
  const states = [];
  check.addEventListener('change', () => states.push(check.result.state));
  const running = check.run();
  assert.equal(check.run(), running, 'one check at a time');
  assert.equal(check.canRun, false);
  const r = await running;

  assert.equal(r.state, 'done');
  assert.deepEqual(FakeSocket.opened, [['wss://gw/ws', 'sip']]);
  assert.deepEqual(phone.ua.options, ['sip:gw']);
  assert.equal(r.wss.state, 'registered');
  assert.ok(r.wss.registerMs >= 0 && r.wss.connectMs >= 0 && r.wss.sipRttMs >= 0);
  assert.deepEqual(made.map((pc) => pc.config.iceServers[0].urls), LAB);
  assert.ok(made.every((pc) => pc.closed && pc.config.iceTransportPolicy === 'relay'));
  assert.deepEqual([r.turn.udp.state, r.turn.tcp.state, r.turn.tls.state], ['reachable', 'reachable', 'unreachable']);
  assert.equal(r.turn.tls.error, '701 Failed to establish connection');
  assert.deepEqual(phone.calls, ['600']);
  assert.equal(r.echo.state, 'done');
  assert.equal(r.echo.samples, 6);
  assert.equal(r.echo.lossFraction, 0);
  assert.ok(r.mos > 4.3 && r.mos === r.echo.mos && r.echo.grade === 'good');
  assert.equal(phone.inCall, false, 'the echo call is hung up');
  assert.equal(r.verdict.grade, 'fair');
  assert.equal(states[0], 'running');
  assert.equal(states.at(-1), 'done');
  assert.equal(check.canRun, true);
  // The snapshot is a copy.
  check.snapshot().turn.udp.state = 'changed';
  assert.equal(check.result.turn.udp.state, 'reachable');
});

test('NetworkCheck: a WebSocket that cannot connect skips the echo call; no TURN credentials are said so', async () => {
  const { FakePeer } = fakePeer(() => {});
  FakeSocket.refuse = true;
  const phone = new FakePhone({ uris: [] });
  phone.turn = { state: 'refused', error: '/turn-credentials refused the password', fresh: async () => {} };
  phone.login();
  phone.set({ registration: 'Connecting', detail: 'Connection lost (code 1006); retrying' });
  const r = await new NetworkCheck(phone, { Peer: FakePeer, Socket: FakeSocket }).run();
  assert.equal(r.wss.state, 'unreachable');
  assert.match(r.wss.error, /code 1006/);
  assert.equal(r.turn.udp.state, 'no credentials');
  assert.equal(r.turn.udp.error, '/turn-credentials refused the password');
  assert.deepEqual([r.echo.state, r.echo.error], ['skipped', 'not registered']);
  assert.deepEqual(phone.calls, []);
  assert.match(r.verdict.text, /cannot be reached/);
});

test('NetworkCheck: a gateway without TURN offers no transport, and an echo call without audio fails', async () => {
  const { FakePeer } = fakePeer(() => {});
  FakeSocket.refuse = false;
  const silent = echoStats.map((s) => ({ ...s, packetsReceived: 0 }));
  const phone = new FakePhone({ uris: [], stats: silent });
  phone.turn = null;
  phone.login();
  const r = await new NetworkCheck(phone, { Peer: FakePeer, Socket: FakeSocket, limits: { echoMs: 200 } }).run();
  assert.equal(r.wss.state, 'registered');
  assert.deepEqual([r.turn.udp.state, r.turn.tcp.state, r.turn.tls.state], ['not offered', 'not offered', 'not offered']);
  assert.deepEqual([r.echo.state, r.echo.error], ['failed', 'no audio came back']);
  assert.equal(r.mos, null);
  assert.equal(phone.inCall, false);
});

test('NetworkCheck: a step that throws ends the check with the error, not a rejection', async () => {
  FakeSocket.refuse = false;
  const phone = new FakePhone();
  phone.currentIceServers = () => {
    throw new Error('boom');
  };
  phone.login();
  const r = await new NetworkCheck(phone, { Peer: fakePeer(() => {}).FakePeer, Socket: FakeSocket }).run();
  assert.equal(r.state, 'done');
  assert.equal(r.error, 'boom');
  assert.equal(r.echo.state, 'pending');
  assert.deepEqual(r.verdict, { grade: 'poor', text: 'The check could not finish (boom): run it again, or call support.' });
});
