// The softphone's connection keepalive: a JsSIP Socket (the interface JsSIP documents for
// custom transports, https://jssip.net/documentation/3.x/api/socket/) wrapped around
// JsSIP.WebSocketInterface, that notices a connection which went dead while idle.
//
// Why: when the path to the gateway vanishes without a FIN or RST (an HA pair's active node
// loses its public link or its power, a NAT forgets the mapping), an idle WebSocket stays "open"
// for good: the gateway's WebSocket pings go from its side only, so the browser never sends and
// never finds out, and the agent looks registered but gets no calls. So, after INTERVAL_MS with
// nothing received, the socket sends an RFC 5626 CRLF CRLF ping, which gatewayd answers with
// CRLF before any SIP parsing (no transaction, no digest, not rate-limited per source and not
// captured: cheap at hundreds of agents, and harmless for agents behind one office address).
// Anything received counts as an answer. No answer within ANSWER_MS: the socket drops the
// connection and tells JsSIP it was lost; JsSIP then reconnects (to the same address, which the
// standby now holds) and registers again by itself.
//
// It owns only that liveness check; it knows nothing of SIP, registration or the page. Time is
// given through `clock` so the tests drive it without waiting.

/** RFC 5626 section 4.4.1: the client's ping; the gateway answers a single CRLF. */
export const PING = '\r\n\r\n';
/** Nothing received for this long: ping. 500 agents make 125 pings/s of 4 bytes each. */
export const INTERVAL_MS = 4000;
/** A ping not answered within this is a dead connection. Worst case from the failure to
 * reconnecting: INTERVAL_MS + ANSWER_MS, plus JsSIP's 2 s before it reconnects. */
export const ANSWER_MS = 2000;
/** What the page shows as the close code of a connection given up (as browsers report a
 * connection that ended without a closing handshake). */
export const DEAD_CODE = 1006;

const realClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t),
};

export class KeepaliveSocket {
  /**
   * @param {object} inner a JsSIP Socket (JsSIP.WebSocketInterface)
   * @param {{intervalMs?:number, answerMs?:number, clock?:{now:() => number,
   *   setTimeout:(fn:() => void, ms:number) => any, clearTimeout:(t:any) => void}}} options
   */
  constructor(inner, { intervalMs = INTERVAL_MS, answerMs = ANSWER_MS, clock = realClock } = {}) {
    this.inner = inner;
    this.intervalMs = intervalMs;
    this.answerMs = answerMs;
    this.clock = clock;
    this.timer = null;
    this.lastHeard = 0;
    // When the unanswered ping went out, or null.
    this.pingAt = null;
    // Set by JsSIP's transport before it connects.
    this.onconnect = () => {};
    this.ondisconnect = () => {};
    this.ondata = () => {};
  }

  get via_transport() {
    return this.inner.via_transport;
  }

  set via_transport(value) {
    this.inner.via_transport = value;
  }

  get url() {
    return this.inner.url;
  }

  get sip_uri() {
    return this.inner.sip_uri;
  }

  connect() {
    this.inner.onconnect = () => {
      this.heard();
      this.arm();
      this.onconnect();
    };
    this.inner.ondisconnect = (error, code, reason) => {
      this.stop();
      this.ondisconnect(error, code, reason);
    };
    this.inner.ondata = (data) => {
      this.heard();
      this.ondata(data);
    };
    this.inner.connect();
  }

  disconnect() {
    this.stop();
    this.inner.disconnect();
  }

  send(message) {
    return this.inner.send(message);
  }

  isConnected() {
    return this.inner.isConnected();
  }

  isConnecting() {
    return this.inner.isConnecting();
  }

  heard() {
    this.lastHeard = this.clock.now();
  }

  stop() {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.pingAt = null;
  }

  later(ms) {
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.arm();
    }, Math.max(0, ms));
  }

  // One timer: either the next ping (INTERVAL_MS after the last thing heard) or the deadline of
  // the ping out. Traffic in between pushes the next ping back, so a busy connection sends none.
  arm() {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    const now = this.clock.now();
    if (this.pingAt !== null) {
      if (this.lastHeard < this.pingAt) {
        if (now - this.pingAt >= this.answerMs) {
          this.dead(`no keepalive answer within ${this.answerMs / 1000} s`);
          return;
        }
        this.later(this.pingAt + this.answerMs - now);
        return;
      }
      this.pingAt = null;
    }
    const idle = now - this.lastHeard;
    if (idle < this.intervalMs) {
      this.later(this.intervalMs - idle);
      return;
    }
    if (!this.inner.send(PING)) {
      this.dead('keepalive not sent');
      return;
    }
    this.pingAt = now;
    this.later(this.answerMs);
  }

  // Drops the connection without waiting for a closing handshake that cannot come (the inner
  // socket stops reporting on it), and tells JsSIP, which reconnects as after any lost connection.
  dead(reason) {
    this.stop();
    this.inner.disconnect();
    this.ondisconnect(true, DEAD_CODE, reason);
  }
}
