// TURN credentials for the page's ICE servers. The gateway hands short-lived TURN REST
// credentials to an agent who proves its SIP password with HTTP Digest (RFC 7616) on
// GET /turn-credentials; this module does that exchange itself (SHA-256 through WebCrypto when
// offered, else MD5), keeps the answer, and fetches again at 80 % of its lifetime. No TURN
// secret is ever in the page. It knows nothing about the DOM or JsSIP's user agent.

import JsSIP from 'jssip';

const REFRESH_AT = 0.8;
const FETCH_LIMIT_MS = 5000;
const RETRY_MIN_S = 5;
const RETRY_MAX_S = 300;
// setTimeout takes at most a signed 32-bit delay.
const MAX_DELAY_MS = 2 ** 31 - 1;

/** Asking again will not help: `state` says why ('refused' password, 'unavailable' here). */
export class FinalError extends Error {
  constructor(message, state) {
    super(message);
    this.state = state;
  }
}

/**
 * Reads a WWW-Authenticate value, possibly several challenges joined with commas as
 * Headers.get() does: `[{scheme, params: {name: value}}]`, names lowercased, values unquoted.
 */
export function parseChallenges(value) {
  const out = [];
  const s = String(value || '');
  let i = 0;
  const skip = (chars) => {
    while (i < s.length && chars.includes(s[i])) i++;
  };
  const token = () => {
    const start = i;
    while (i < s.length && !' \t,="'.includes(s[i])) i++;
    return s.slice(start, i);
  };
  while (i < s.length) {
    skip(' \t,');
    const name = token();
    if (!name) {
      i++;
      continue;
    }
    skip(' \t');
    if (s[i] !== '=') {
      out.push({ scheme: name.toLowerCase(), params: {} });
      continue;
    }
    i++;
    skip(' \t');
    let v = '';
    if (s[i] === '"') {
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === '\\') i++;
        v += s[i] ?? '';
        i++;
      }
      i++;
    } else {
      v = token();
      // token68 padding, e.g. `Negotiate abc==`: not ours, keep it whole.
      while (s[i] === '=') v += s[i++];
    }
    const current = out[out.length - 1];
    if (current) current.params[name.toLowerCase()] = v;
  }
  return out;
}

/** The challenge to answer: the first Digest one with qop=auth whose algorithm we compute. */
export function pickChallenge(challenges, { sha256 = true } = {}) {
  const usable = challenges.filter((c) => {
    if (c.scheme !== 'digest' || !c.params.nonce || c.params.realm === undefined) return false;
    const qop = (c.params.qop || '').split(',').map((q) => q.trim().toLowerCase());
    return qop.includes('auth');
  });
  const alg = (c) => (c.params.algorithm || 'MD5').toUpperCase();
  return (sha256 && usable.find((c) => alg(c) === 'SHA-256')) || usable.find((c) => alg(c) === 'MD5') || null;
}

const hex = (bytes) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');

/** Lowercase hex hash of `text` (UTF-8) with a Digest algorithm token. */
export async function hashHex(algorithm, text) {
  if (algorithm === 'SHA-256') return hex(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
  if (algorithm === 'MD5') return JsSIP.Utils.calculateMD5(text);
  throw new Error(`unsupported digest algorithm ${algorithm}`);
}

const quote = (v) => `"${String(v).replace(/[\\"]/g, (c) => `\\${c}`)}"`;

/**
 * The Authorization value answering `challenge` (from pickChallenge) for a GET of `uri`,
 * given the HA1 for its algorithm and realm.
 */
export async function authorization({ challenge, username, ha1, method = 'GET', uri, nc = 1, cnonce }) {
  const algorithm = (challenge.params.algorithm || 'MD5').toUpperCase();
  const { realm, nonce, opaque } = challenge.params;
  const ncHex = nc.toString(16).padStart(8, '0');
  const ha2 = await hashHex(algorithm, `${method}:${uri}`);
  const response = await hashHex(algorithm, `${ha1}:${nonce}:${ncHex}:${cnonce}:auth:${ha2}`);
  let value = `Digest username=${quote(username)}, realm=${quote(realm)}, nonce=${quote(nonce)}, uri=${quote(uri)}, ` +
    `algorithm=${algorithm}, qop=auth, nc=${ncHex}, cnonce=${quote(cnonce)}, response=${quote(response)}`;
  if (opaque !== undefined) value += `, opaque=${quote(opaque)}`;
  return value;
}

/** Whether a GET /turn-credentials answer looks like credentials. */
function valid(c) {
  return c && typeof c.username === 'string' && typeof c.password === 'string' && Number.isFinite(c.ttl) && c.ttl > 0 &&
    Array.isArray(c.uris) && c.uris.length > 0 && c.uris.every((u) => typeof u === 'string');
}

/**
 * One digest exchange: GET, answer the 401, GET again (once more on `stale=true`).
 * `ha1For(algorithm, realm)` gives the stored secret. Resolves to the credentials.
 */
export async function fetchCredentials({ path, username, ha1For, fetchImpl = fetch, sha256 = !!globalThis.crypto?.subtle }) {
  // credentials 'omit': the browser neither adds nor prompts for HTTP authentication itself.
  const get = (headers) => fetchImpl(path, { cache: 'no-store', credentials: 'omit', headers, signal: AbortSignal.timeout(FETCH_LIMIT_MS) });
  let res = await get({});
  for (let attempt = 0; attempt < 2 && res.status === 401; attempt++) {
    const challenge = pickChallenge(parseChallenges(res.headers.get('WWW-Authenticate')), { sha256 });
    if (!challenge) throw new Error(`${path}: no Digest challenge this page can answer`);
    if (attempt > 0 && challenge.params.stale?.toLowerCase() !== 'true') throw new FinalError(`${path} refused the password`, 'refused');
    const algorithm = (challenge.params.algorithm || 'MD5').toUpperCase();
    const ha1 = await ha1For(algorithm, challenge.params.realm);
    const cnonce = hex(crypto.getRandomValues(new Uint8Array(12)));
    res = await get({ Authorization: await authorization({ challenge, username, ha1, uri: path, cnonce }) });
  }
  if (res.status === 404) throw new FinalError(`${path}: the gateway offers no TURN credentials`, 'unavailable');
  if (!res.ok) throw new Error(`${path} answered ${res.status}`);
  const c = await res.json();
  if (!valid(c)) throw new Error(`${path} gave no usable credentials`);
  return { username: c.username, password: c.password, ttl: c.ttl, uris: [...c.uris] };
}

/**
 * The agent's TURN credentials across a login: fetched on start(), again at 80 % of their
 * lifetime (retried with back-off when the gateway cannot be reached, not when it refuses the
 * password), dropped on stop(). `state` is `none`, `fetching`, `refreshing`, `ready`, `failed`
 * (retrying), `refused` or `unavailable`; `onChange` is called whenever it or `current` changes.
 */
export class TurnCredentials {
  constructor({ path, onChange = () => {}, fetchImpl = (...a) => fetch(...a), now = () => Date.now() }) {
    this.path = path;
    this.onChange = onChange;
    this.fetchImpl = fetchImpl;
    this.now = now;
    this.generation = 0;
    this.timer = null;
    this.inflight = null;
    this.password = null;
    this.reset();
  }

  reset() {
    this.username = '';
    this.ha1 = new Map();
    this.current = null;
    this.state = 'none';
    this.error = '';
    this.refreshAt = null;
    this.retryS = RETRY_MIN_S;
  }

  /** Starts over for `username`: HA1s for the realm the gateway names are made from `password`. */
  start(username, password) {
    this.stop();
    this.username = username;
    this.password = password;
    this.refresh();
  }

  stop() {
    this.generation++;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.inflight = null;
    this.password = null;
    this.reset();
    this.onChange();
  }

  // The password is turned into both HA1s at the first challenge and then forgotten.
  async ha1For(algorithm, realm) {
    if (this.password !== null) {
      const entries = await Promise.all(['SHA-256', 'MD5'].map(async (a) => [`${a}:${realm}`, await hashHex(a, `${this.username}:${realm}:${this.password}`)]));
      this.ha1 = new Map(entries);
      this.password = null;
    }
    const ha1 = this.ha1.get(`${algorithm}:${realm}`);
    if (!ha1) throw new FinalError(`no credentials for realm ${realm}; log in again`, 'refused');
    return ha1;
  }

  refresh() {
    const generation = this.generation;
    this.state = this.current ? 'refreshing' : 'fetching';
    this.onChange();
    const run = fetchCredentials({ path: this.path, username: this.username, ha1For: (a, r) => this.ha1For(a, r), fetchImpl: this.fetchImpl })
      .then((c) => {
        if (generation !== this.generation) return;
        const fetchedAt = this.now();
        this.current = { ...c, fetchedAt, expiresAt: fetchedAt + c.ttl * 1000 };
        this.state = 'ready';
        this.error = '';
        this.retryS = RETRY_MIN_S;
        this.schedule(c.ttl * 1000 * REFRESH_AT);
      })
      .catch((err) => {
        if (generation !== this.generation) return;
        this.error = err.message;
        if (err instanceof FinalError) {
          // Retrying a refused password only looks like an attack.
          this.state = err.state;
        } else {
          this.state = 'failed';
          this.schedule(this.retryS * 1000);
          this.retryS = Math.min(this.retryS * 2, RETRY_MAX_S);
        }
      })
      .finally(() => {
        if (generation !== this.generation) return;
        this.inflight = null;
        this.onChange();
      });
    this.inflight = run;
    return run;
  }

  schedule(delayMs) {
    if (this.timer) clearTimeout(this.timer);
    this.refreshAt = this.now() + delayMs;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.refresh();
    }, Math.min(Math.max(0, delayMs), MAX_DELAY_MS));
  }

  /**
   * Before a call: fetches now if a refresh or retry is overdue (a sleeping laptop delays
   * timers), then waits up to `limitMs` for any fetch under way.
   */
  fresh(limitMs) {
    const overdue = this.refreshAt !== null && this.now() >= this.refreshAt;
    if (this.username && !this.inflight && overdue && (this.state === 'ready' || this.state === 'failed')) this.refresh();
    return this.settled(limitMs);
  }

  /** Waits up to `limitMs` for a fetch under way, so a call placed at login gets credentials. */
  async settled(limitMs) {
    if (!this.inflight) return;
    await Promise.race([this.inflight, new Promise((r) => setTimeout(r, limitMs))]);
  }

  /** RTCIceServer entries for credentials that have not expired. */
  iceServers() {
    const c = this.current;
    if (!c || this.now() >= c.expiresAt) return [];
    return [{ urls: [...c.uris], username: c.username, credential: c.password }];
  }
}
