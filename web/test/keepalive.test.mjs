import test from 'node:test';
import assert from 'node:assert/strict';
import { ANSWER_MS, DEAD_CODE, INTERVAL_MS, KeepaliveSocket, PING } from '../src/keepalive.js';

// A clock the test moves by hand: timers fire in order as time passes.
function fakeClock() {
  let now = 1_000_000;
  let seq = 0;
  const timers = new Map();
  return {
    now: () => now,
    setTimeout: (fn, ms) => {
      seq += 1;
      timers.set(seq, { at: now + ms, fn });
      return seq;
    },
    clearTimeout: (id) => timers.delete(id),
    pending: () => timers.size,
    advance(ms) {
      const end = now + ms;
      for (;;) {
        const next = [...timers.entries()].sort((a, b) => a[1].at - b[1].at)[0];
        if (!next || next[1].at > end) break;
        timers.delete(next[0]);
        now = next[1].at;
        next[1].fn();
      }
      now = end;
    },
  };
}

// WebSocketInterface as JsSIP's transport sees it: records what is sent.
function fakeInner() {
  return {
    via_transport: 'WSS', url: 'wss://gw/ws', sip_uri: 'sip:gw;transport=ws',
    open: false, sent: [], disconnects: 0,
    connect() { this.connecting = true; },
    disconnect() { this.disconnects += 1; this.open = false; },
    send(m) { if (!this.open) return false; this.sent.push(m); return true; },
    isConnected() { return this.open; },
    isConnecting() { return false; },
    // The browser's side of it.
    opened() { this.open = true; this.onconnect(); },
    receive(data) { this.ondata(data); },
  };
}

function connected() {
  const clock = fakeClock();
  const inner = fakeInner();
  const socket = new KeepaliveSocket(inner, { clock });
  const events = [];
  socket.onconnect = () => events.push(['connect']);
  socket.ondisconnect = (error, code, reason) => events.push(['disconnect', error, code, reason]);
  socket.ondata = (d) => events.push(['data', d]);
  socket.connect();
  inner.opened();
  return { clock, inner, socket, events };
}

test('an idle connection is pinged every interval while the gateway answers', () => {
  const { clock, inner, events } = connected();
  clock.advance(INTERVAL_MS - 1);
  assert.deepEqual(inner.sent, []);
  clock.advance(1);
  assert.deepEqual(inner.sent, [PING]);
  clock.advance(30);
  inner.receive('\r\n');
  clock.advance(ANSWER_MS);
  assert.deepEqual(inner.sent, [PING]);
  // The next ping comes one interval after the answer.
  clock.advance(INTERVAL_MS - ANSWER_MS + 30);
  assert.deepEqual(inner.sent, [PING, PING]);
  inner.receive('\r\n');
  for (let i = 0; i < 10; i++) {
    clock.advance(INTERVAL_MS);
    inner.receive('\r\n');
  }
  assert.equal(inner.sent.length, 12);
  assert.equal(events.filter((e) => e[0] === 'disconnect').length, 0);
  // What it received still reaches JsSIP (which ignores a lone CRLF).
  assert.deepEqual(events[1], ['data', '\r\n']);
});

test('traffic puts the ping off', () => {
  const { clock, inner } = connected();
  for (let i = 0; i < 10; i++) {
    clock.advance(INTERVAL_MS - 1);
    inner.receive('SIP/2.0 200 OK\r\n\r\n');
  }
  assert.deepEqual(inner.sent, []);
});

test('no answer within the deadline drops the connection and tells JsSIP', () => {
  const { clock, inner, events } = connected();
  clock.advance(INTERVAL_MS);
  assert.deepEqual(inner.sent, [PING]);
  clock.advance(ANSWER_MS - 1);
  assert.equal(inner.disconnects, 0);
  clock.advance(1);
  assert.equal(inner.disconnects, 1);
  assert.deepEqual(events.at(-1), ['disconnect', true, DEAD_CODE, `no keepalive answer within ${ANSWER_MS / 1000} s`]);
  // Nothing more until JsSIP connects again.
  assert.equal(clock.pending(), 0);
});

test('a ping that cannot be sent is a dead connection too', () => {
  const { clock, inner, events } = connected();
  inner.open = false;
  clock.advance(INTERVAL_MS);
  assert.deepEqual(events.at(-1), ['disconnect', true, DEAD_CODE, 'keepalive not sent']);
});

test('a connection JsSIP closes, or that closes by itself, is not pinged any more', () => {
  const a = connected();
  a.socket.disconnect();
  a.clock.advance(10 * INTERVAL_MS);
  assert.deepEqual(a.inner.sent, []);
  assert.equal(a.events.filter((e) => e[0] === 'disconnect').length, 0);

  const b = connected();
  b.inner.ondisconnect(true, 1006, '');
  assert.deepEqual(b.events.at(-1), ['disconnect', true, 1006, '']);
  b.clock.advance(10 * INTERVAL_MS);
  assert.deepEqual(b.inner.sent, []);
  // Reconnected: pinged again.
  b.socket.connect();
  b.inner.opened();
  b.clock.advance(INTERVAL_MS);
  assert.deepEqual(b.inner.sent, [PING]);
});

test('it is a JsSIP Socket: the properties JsSIP checks come from the inner socket', () => {
  const { socket } = connected();
  assert.equal(socket.url, 'wss://gw/ws');
  assert.equal(socket.via_transport, 'WSS');
  assert.equal(socket.sip_uri, 'sip:gw;transport=ws');
  assert.equal(socket.isConnected(), true);
});
