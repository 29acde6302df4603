// A deliberately small SIP-over-WebSocket registrar and relay, used only to exercise the
// softphone page before (and independently of) the gateway: two real browsers with real JsSIP
// and real WebRTC call each other through it. It checks digest credentials (password "pass"
// + DN, like the lab profile) and routes requests by registered user or by the .invalid
// host JsSIP puts in its Via and Contact; responses follow the top Via. No media passes here.

import { createHash, randomBytes } from 'node:crypto';
import { WebSocketServer } from 'ws';

const md5 = (s) => createHash('md5').update(s).digest('hex');

export function parseSip(text) {
  const split = text.indexOf('\r\n\r\n');
  const head = split >= 0 ? text.slice(0, split) : text;
  const body = split >= 0 ? text.slice(split + 4) : '';
  const [first, ...lines] = head.split('\r\n');
  const headers = [];
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.push([line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]);
  }
  const get = (name) => {
    const found = headers.find(([n]) => n === name || n === SHORT[name]);
    return found ? found[1] : null;
  };
  const req = /^([A-Z]+) (\S+) SIP\/2\.0$/.exec(first);
  const res = /^SIP\/2\.0 (\d{3}) /.exec(first);
  return {
    first, head, body, headers, get,
    method: req ? req[1] : null,
    uri: req ? req[2] : null,
    status: res ? Number(res[1]) : null,
  };
}

const SHORT = { via: 'v', from: 'f', to: 't', 'call-id': 'i', contact: 'm', 'content-length': 'l' };

export function uriParts(uri) {
  const m = /sips?:(?:([^@;>]+)@)?([^;:>]+)/i.exec(uri || '');
  return m ? { user: m[1] || '', host: m[2].toLowerCase() } : null;
}

function viaHost(via) {
  const m = /^SIP\/2\.0\/\S+\s+([^;:,\s]+)/i.exec(via || '');
  return m ? m[1].toLowerCase() : null;
}

function authParams(value) {
  const out = {};
  for (const m of (value || '').replace(/^Digest\s+/i, '').matchAll(/(\w+)=("([^"]*)"|[^,\s]+)/g)) {
    out[m[1].toLowerCase()] = m[3] !== undefined ? m[3] : m[2];
  }
  return out;
}

export class SipRelay {
  constructor({ realm = '127.0.0.1', password = (dn) => `pass${dn}`, inviteHeaders = () => [] } = {}) {
    this.realm = realm;
    this.password = password;
    this.inviteHeaders = inviteHeaders;
    this.wss = new WebSocketServer({
      noServer: true,
      handleProtocols: (protocols) => (protocols.has('sip') ? 'sip' : false),
    });
    this.users = new Map(); // DN -> socket
    this.hosts = new Map(); // JsSIP's random .invalid host -> socket
    this.nonces = new Set();
    this.log = []; // { dir: 'in', method|status, from }
    this.refusing = false;
    this.calls = new Map(); // Call-ID -> what the relay needs to speak in that call's dialog
  }

  /** Hand an HTTP upgrade for /ws over to the relay. */
  upgrade(req, socket, head) {
    if (this.refusing) {
      socket.destroy();
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws));
  }

  accept(ws) {
    ws.on('message', (data) => this.onMessage(ws, data.toString()));
    ws.on('close', () => {
      for (const [k, v] of this.users) if (v === ws) this.users.delete(k);
      for (const [k, v] of this.hosts) if (v === ws) this.hosts.delete(k);
    });
  }

  /** Closes every WebSocket abruptly, as a network drop would. */
  dropAll() {
    for (const ws of this.wss.clients) ws.terminate();
  }

  requests(method) {
    return this.log.filter((e) => e.method === method);
  }

  onMessage(ws, text) {
    // RFC 5626 keepalives, answered as the gateway does (the page drops a connection whose
    // ping goes unanswered).
    if (text === '\r\n\r\n') {
      ws.send('\r\n');
      return;
    }
    if (/^\s*$/.test(text)) return;
    const msg = parseSip(text);
    const host = viaHost(msg.get('via'));
    // A request's top Via names its sender; a response's names where it must go.
    if (host && msg.method) this.hosts.set(host, ws);
    this.log.push({ method: msg.method, status: msg.status, uri: msg.uri, cseq: msg.get('cseq') });

    if (msg.status !== null) {
      this.noteAnswer(msg);
      const to = this.hosts.get(host);
      if (to && to !== ws) to.send(text);
      return;
    }
    if (msg.method === 'REGISTER') {
      this.register(ws, msg);
      return;
    }
    const target = uriParts(msg.uri);
    const peer = target && (target.host.endsWith('.invalid') ? this.hosts.get(target.host) : this.users.get(target.user));
    if (!peer) {
      if (msg.method !== 'ACK') ws.send(this.reply(msg, 404, 'Not Found'));
      return;
    }
    let out = text;
    const initialInvite = msg.method === 'INVITE' && !/;\s*tag=/i.test(msg.get('to') || '');
    if (initialInvite) {
      this.calls.set(msg.get('call-id'), {
        callee: target.user,
        from: msg.get('from'),
        callerContact: msg.get('contact'),
        invite: msg.get('cseq'),
        cseq: parseInt(msg.get('cseq'), 10),
        to: null,
        contact: null,
      });
      const extra = this.inviteHeaders(target.user);
      if (extra.length) {
        const eol = text.indexOf('\r\n');
        out = `${text.slice(0, eol)}\r\n${extra.join('\r\n')}${text.slice(eol)}`;
      }
    }
    peer.send(out);
  }

  // The callee's provisional or final answer to the initial INVITE (not to a re-INVITE, which
  // may come from either side) fixes its tag and Contact.
  noteAnswer(msg) {
    const call = this.calls.get(msg.get('call-id'));
    if (!call || msg.get('cseq') !== call.invite || msg.status < 101 || msg.status >= 300) return;
    const to = msg.get('to');
    const contact = /<([^>]+)>/.exec(msg.get('contact') || '');
    if (/;\s*tag=/i.test(to || '') && contact) Object.assign(call, { to, contact: contact[1] });
  }

  /**
   * Sends the callee of the latest call to `user` an in-dialog NOTIFY with `Event: <event>`
   * (talk or hold), the way a contact-centre SIP server drives a desk phone remotely.
   */
  remoteControl(user, event) {
    const call = [...this.calls.entries()].reverse().find(([, c]) => c.callee === user && c.contact);
    if (!call) throw new Error(`no early or confirmed dialog with ${user}`);
    const [callId, c] = call;
    const peer = this.hosts.get(uriParts(c.contact).host);
    if (!peer) throw new Error(`no connection for ${c.contact}`);
    c.cseq += 1;
    const lines = [
      `NOTIFY ${c.contact} SIP/2.0`,
      `Via: SIP/2.0/WSS relay.invalid;branch=z9hG4bK${randomBytes(6).toString('hex')}`,
      'Max-Forwards: 70',
      `From: ${c.from}`,
      `To: ${c.to}`,
      `Call-ID: ${callId}`,
      `CSeq: ${c.cseq} NOTIFY`,
      `Event: ${event}`,
      'Subscription-State: terminated',
      // NOTIFY refreshes the dialog's target: keep it pointing at the caller.
      `Contact: ${c.callerContact}`,
      'Content-Length: 0',
    ];
    peer.send(`${lines.join('\r\n')}\r\n\r\n`);
  }

  register(ws, msg) {
    const user = uriParts(msg.get('to'))?.user;
    const auth = authParams(msg.get('authorization'));
    if (!auth.response || !this.nonces.has(auth.nonce)) {
      this.challenge(ws, msg);
      return;
    }
    const ha1 = md5(`${auth.username}:${this.realm}:${this.password(auth.username)}`);
    const ha2 = md5(`REGISTER:${auth.uri}`);
    const expected = auth.qop
      ? md5(`${ha1}:${auth.nonce}:${auth.nc}:${auth.cnonce}:${auth.qop}:${ha2}`)
      : md5(`${ha1}:${auth.nonce}:${ha2}`);
    if (auth.username !== user || expected !== auth.response) {
      this.nonces.delete(auth.nonce);
      this.challenge(ws, msg);
      return;
    }
    const contact = msg.get('contact') || '';
    const expires = /expires=(\d+)/i.exec(contact)?.[1] ?? msg.get('expires') ?? '300';
    if (Number(expires) === 0) {
      if (this.users.get(user) === ws) this.users.delete(user);
      ws.send(this.reply(msg, 200, 'OK'));
      return;
    }
    this.users.set(user, ws);
    ws.send(this.reply(msg, 200, 'OK', [`Contact: ${contact.replace(/;\s*expires=\d+/i, '')};expires=${expires}`]));
  }

  challenge(ws, msg) {
    const nonce = randomBytes(12).toString('hex');
    this.nonces.add(nonce);
    ws.send(this.reply(msg, 401, 'Unauthorized', [
      `WWW-Authenticate: Digest realm="${this.realm}", nonce="${nonce}", algorithm=MD5, qop="auth"`,
    ]));
  }

  reply(msg, status, phrase, extra = []) {
    const copy = msg.headers.filter(([n]) => ['via', 'v', 'from', 'f', 'call-id', 'i', 'cseq'].includes(n));
    let to = msg.get('to') || '';
    if (!/;\s*tag=/i.test(to)) to += `;tag=${randomBytes(4).toString('hex')}`;
    const lines = [
      `SIP/2.0 ${status} ${phrase}`,
      ...copy.map(([n, v]) => `${n}: ${v}`),
      `To: ${to}`,
      ...extra,
      'Content-Length: 0',
    ];
    return `${lines.join('\r\n')}\r\n\r\n`;
  }

  close() {
    for (const ws of this.wss.clients) ws.terminate();
    this.wss.close();
  }
}
