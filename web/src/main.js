// Page wiring: loads /config.json, builds the Phone, renders its state into the DOM and turns
// clicks and keys into Phone calls. No markup is generated from strings, no inline styles,
// so the page runs under the gateway's strict Content-Security-Policy.

import { Phone } from './phone.js';
import { listAudioDevices, canPickOutput } from './media.js';
import { NetworkCheck } from './netcheck.js';
import { bindNetworkCheck } from './netcheck-view.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DN_KEY = 'gatewayd.dn';

function showNotice(text) {
  const n = $('notice');
  n.textContent = text;
  n.hidden = !text;
}

const CONFIG_REFRESH_LIMIT_MS = 2000;

async function loadConfig({ signal } = {}) {
  const res = await fetch('/config.json', { cache: 'no-store', credentials: 'same-origin', signal });
  if (!res.ok) throw new Error(`/config.json answered ${res.status}`);
  const c = await res.json();
  if (!c.sip_domain || !c.ws_path) throw new Error('/config.json lacks sip_domain or ws_path');
  return {
    site: String(c.site || ''),
    sip_domain: String(c.sip_domain),
    // The page always talks to the host that served it; nothing else is allowed by the CSP.
    ws_url: `wss://${location.host}${c.ws_path}`,
    echo_number: String(c.echo_number || ''),
    token_header: String(c.token_header || ''),
    ice_servers: Array.isArray(c.ice_servers) ? c.ice_servers : [],
    // A path on this host (the CSP allows nothing else), or null when the gateway has no TURN.
    turn_credentials: typeof c.turn_credentials === 'string' && /^\/[^/\\]/.test(c.turn_credentials) ? c.turn_credentials : null,
  };
}

function regKind(text) {
  if (text === 'Registered') return 'registered';
  if (text === 'Connecting') return 'connecting';
  if (text.startsWith('Registration failed')) return 'failed';
  return 'idle';
}

function fmt(value, digits, unit) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  return `${Number(value).toFixed(digits)}${unit}`;
}

function render(phone) {
  const s = phone.state;
  $('reg-state').textContent = s.registration;
  $('reg-dot').dataset.state = regKind(s.registration);
  $('reg-detail').textContent = s.detail;
  $('login-panel').hidden = phone.loggedIn;
  $('phone-panel').hidden = !phone.loggedIn;
  $('quality-panel').hidden = !phone.loggedIn;
  $('me').textContent = s.dn;

  $('call-state').textContent = s.call;
  // A ringing call shows in the tab title too, for agents working in another tab.
  const ringingTitle = s.call === 'Ringing' ? `Ringing: ${s.remote} – ` : '';
  document.title = `${ringingTitle}Agent phone${s.dn ? ` ${s.dn}` : ''}`;
  $('call-detail').textContent = s.autoAnswerIn !== null ? `Auto-answer in ${s.autoAnswerIn} s` : s.callDetail;

  const registered = s.registration === 'Registered';
  const inCall = phone.inCall;
  const ringing = inCall && s.direction === 'incoming' && s.call === 'Ringing';
  const established = s.call === 'In call' || s.call === 'On hold';
  $('call').disabled = !registered || inCall;
  $('echo-test').disabled = !registered || inCall || !phone.config.echo_number;
  $('answer').hidden = !ringing;
  $('reject').hidden = !ringing;
  $('hangup').disabled = !inCall;
  $('mute').disabled = !established;
  $('hold').disabled = !established;
  $('mute').setAttribute('aria-pressed', String(s.muted));
  $('mute').textContent = s.muted ? 'Unmute' : 'Mute';
  $('hold').setAttribute('aria-pressed', String(s.held));
  $('hold').textContent = s.held ? 'Resume' : 'Hold';

  const badge = $('quality');
  badge.dataset.grade = s.quality || 'none';
  badge.textContent = s.quality || (inCall ? 'Measuring' : 'No call');
  const st = s.stats;
  $('stat-codec').textContent = st && st.codec ? st.codec : '–';
  $('stat-received').textContent = st ? String(st.packetsReceived) : '–';
  $('stat-lost').textContent = st ? String(st.packetsLost) : '–';
  $('stat-loss').textContent = fmt(st && st.intervalLoss !== null ? st.intervalLoss * 100 : null, 1, ' %');
  $('stat-jitter').textContent = fmt(st && st.jitterMs, 1, ' ms');
  $('stat-rtt').textContent = fmt(st && st.rttMs, 0, ' ms');
  $('stat-sent').textContent = st ? String(st.packetsSent) : '–';
}

// Read-only view for automated tests: state without scraping text.
function exposeTestHook(phone, check) {
  const copy = (v) => (v ? { ...v } : null);
  const hook = Object.freeze({
    get registrationState() { return phone.state.registration; },
    get callState() { return phone.state.call; },
    get stats() {
      const st = phone.state.stats;
      return st
        ? {
            packetsSent: st.packetsSent,
            packetsReceived: st.packetsReceived,
            packetsLost: st.packetsLost,
            audioLevel: st.audioLevel,
            codec: st.codec,
            jitterMs: st.jitterMs,
            rttMs: st.rttMs,
            localCandidateType: st.localCandidateType,
            relayProtocol: st.relayProtocol,
          }
        : null;
    },
    get quality() { return phone.state.quality; },
    get muted() { return phone.state.muted; },
    get held() { return phone.state.held; },
    get dtmfSent() { return phone.state.dtmfSent; },
    get inputDevice() { return phone.inputDevice; },
    get direction() { return phone.state.direction; },
    get remote() { return phone.state.remote; },
    get config() { return copy(phone.config); },
    // TURN credentials minted for this login: {state, username, password, ttl, uris, expiresAt, refreshAt, error}.
    get turn() {
      const t = phone.turn;
      if (!t) return null;
      const c = t.current;
      return { state: t.state, error: t.error, refreshAt: t.refreshAt, ...(c ? { ...c, uris: [...c.uris] } : {}) };
    },
    // What the next call's RTCPeerConnection gets, and what the current call's has.
    get pcConfig() { return JSON.parse(JSON.stringify(phone.pcConfig(phone.currentIceServers()))); },
    get callPcConfig() {
      const pc = phone.session && phone.session.connection;
      if (!pc) return null;
      const c = pc.getConfiguration();
      return { iceTransportPolicy: c.iceTransportPolicy, iceServers: (c.iceServers || []).map((s) => ({ urls: [].concat(s.urls), username: s.username })) };
    },
    // The last network check: {state, wss, turn: {udp, tcp, tls}, turnUris, echo, mos, verdict}.
    get networkCheck() { return check.snapshot(); },
  });
  Object.defineProperty(window, 'gatewaydPhone', { value: hook, enumerable: true });
}

async function fillDevices() {
  const { inputs, outputs } = await listAudioDevices();
  const fill = (select, devices, label) => {
    const keep = select.value;
    select.replaceChildren(new Option('Default', ''));
    devices.forEach((d, i) => {
      if (!d.deviceId || d.deviceId === 'default') return;
      select.add(new Option(d.label || `${label} ${i + 1}`, d.deviceId));
    });
    select.value = [...select.options].some((o) => o.value === keep) ? keep : '';
  };
  fill($('mic'), inputs, 'Microphone');
  fill($('speaker'), outputs, 'Speaker');
  $('speaker').disabled = !canPickOutput();
  $('speaker').title = canPickOutput() ? '' : 'This browser plays calls on its default output';
}

function bind(phone) {
  const dnField = $('dn');
  try {
    dnField.value = localStorage.getItem(DN_KEY) || '';
  } catch {
    // storage disabled: the agent types the DN
  }

  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const dn = dnField.value.trim();
    const password = $('password').value;
    if (!dn || !password) return;
    try {
      localStorage.setItem(DN_KEY, dn);
    } catch {
      // not essential
    }
    $('password').value = '';
    phone.login(dn, password);
  });
  $('logout').addEventListener('click', () => phone.logout());

  $('dial-form').addEventListener('submit', (e) => {
    e.preventDefault();
    phone.call($('number').value);
  });
  $('echo-test').addEventListener('click', () => phone.call(phone.config.echo_number));
  $('answer').addEventListener('click', () => phone.answer());
  $('reject').addEventListener('click', () => phone.reject());
  $('hangup').addEventListener('click', () => phone.hangup());
  $('mute').addEventListener('click', () => phone.toggleMute());
  $('hold').addEventListener('click', () => phone.toggleHold());

  const press = (digit) => {
    if (phone.inCall && (phone.state.call === 'In call' || phone.state.call === 'On hold')) {
      phone.sendDtmf(digit);
    } else {
      const n = $('number');
      n.value += digit;
    }
  };
  for (const b of document.querySelectorAll('.pad button')) {
    b.addEventListener('click', () => press(b.dataset.digit));
  }
  // During a call, digits typed anywhere outside a text field become DTMF.
  document.addEventListener('keydown', (e) => {
    if (!/^[0-9*#]$/.test(e.key) || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement) return;
    if (phone.state.call === 'In call' || phone.state.call === 'On hold') {
      phone.sendDtmf(e.key);
      e.preventDefault();
    }
  });

  $('mic').addEventListener('change', (e) => {
    phone.setInputDevice(e.target.value).catch((err) => showNotice(`Microphone change failed: ${err.message}`));
  });
  $('speaker').addEventListener('change', (e) => {
    phone.setOutputDevice(e.target.value).catch((err) => showNotice(`Speaker change failed: ${err.message}`));
  });
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener('devicechange', () => fillDevices().catch(() => {}));
  }

  window.addEventListener('beforeunload', () => phone.logout());
}

// Click-to-dial from a CRM: `?dial=NUMBER&token=TOKEN` fills in the number, and the token
// (signed by the CRM for this agent and number) goes with the call to that number in the
// header /config.json names. The token is taken out of the address bar at once.
function clickToDial() {
  const number = (params.get('dial') || '').trim();
  const token = (params.get('token') || '').trim();
  if (params.has('token')) {
    const url = new URL(location.href);
    url.searchParams.delete('token');
    history.replaceState(null, '', url);
  }
  return number ? { number, token } : null;
}

async function main() {
  const dial = clickToDial();
  let config;
  try {
    config = await loadConfig();
  } catch (err) {
    showNotice(`The phone cannot start: ${err.message}`);
    return;
  }
  $('site').textContent = config.site;
  const phone = new Phone(config, {
    rawAudio: params.get('raw-audio') === '1',
    dialToken: dial && dial.token ? dial : null,
    audio: $('remote-audio'),
    refreshIceServers: async () =>
      (await loadConfig({ signal: AbortSignal.timeout(CONFIG_REFRESH_LIMIT_MS) })).ice_servers,
  });
  phone.addEventListener('change', () => render(phone));
  bind(phone);
  const check = new NetworkCheck(phone);
  bindNetworkCheck(check, phone);
  exposeTestHook(phone, check);
  render(phone);
  // Device labels are only visible once the microphone has been granted: list again then.
  let labelled = false;
  phone.addEventListener('change', () => {
    if (!labelled && phone.state.call === 'In call') {
      labelled = true;
      fillDevices().catch(() => {});
    }
  });
  fillDevices().catch(() => {});
  if (dial) $('number').value = dial.number;
  $('login').disabled = false;
}

if (!window.isSecureContext) {
  showNotice('This page needs HTTPS: the browser only grants the microphone on a secure page.');
}
main();
