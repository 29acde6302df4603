// The phone itself: one JsSIP user agent, at most one call, and the state the page renders.
// It owns signalling and media; it knows nothing about the DOM apart from the <audio> element
// the far end plays into. Every change ends in emit(), and the page redraws from `state`.

import JsSIP from 'jssip';
import { autoAnswerDelay } from './autoanswer.js';
import { KeepaliveSocket } from './keepalive.js';
import { audioConstraints } from './media.js';
import { summarize, intervalLoss, grade } from './quality.js';
import { Ringtone } from './ringtone.js';
import { TurnCredentials } from './turn.js';

const STATS_INTERVAL_MS = 1000;
// Upper bound on ICE gathering: a configured but unreachable TURN server must not hold a call.
const ICE_GATHERING_LIMIT_MS = 3000;
const REGISTER_RETRY_MIN_S = 5;
const REGISTER_RETRY_MAX_S = 60;
const DTMF_DURATION_MS = 120;
const DTMF_GAP_MS = 70;
const REOFFER_WAIT_MS = 5000;
// How long a call placed right after login waits for TURN credentials still being fetched.
const TURN_WAIT_MS = 2000;
// Tests (and support staff) can force relay-only ICE: localStorage 'relay' or 'all'.
export const ICE_POLICY_KEY = 'gatewayd.iceTransportPolicy';

function iceTransportPolicy() {
  try {
    const v = localStorage.getItem(ICE_POLICY_KEY);
    return v === 'relay' || v === 'all' ? v : null;
  } catch {
    return null;
  }
}

// What each new call starts from.
const FRESH_CALL = Object.freeze({
  callDetail: '',
  muted: false,
  held: false,
  autoAnswerIn: null,
  dtmfSent: '',
  stats: null,
  quality: null,
});

export class Phone extends EventTarget {
  /**
   * @param {{site:string, sip_domain:string, ws_url:string, echo_number:string, token_header:string,
   *   ice_servers:object[], turn_credentials:string|null}} config
   * @param {{rawAudio:boolean, audio:HTMLAudioElement, refreshIceServers?:() => Promise<object[]>,
   *   dialToken?:{number:string, token:string}|null}} options
   */
  constructor(config, { rawAudio, audio, refreshIceServers = null, dialToken = null }) {
    super();
    this.config = config;
    this.dialToken = dialToken;
    this.refreshIceServers = refreshIceServers;
    this.rawAudio = rawAudio;
    this.audio = audio;
    this.ringtone = new Ringtone();
    // TURN credentials for the ICE servers, from the gateway once the agent has registered.
    this.turn = config.turn_credentials ? new TurnCredentials({ path: config.turn_credentials, onChange: () => this.emit() }) : null;
    this.turnLogin = null;
    this.ua = null;
    this.session = null;
    this.localStream = null;
    this.inputDeviceId = '';
    this.timers = { stats: null, autoAnswer: null, registerRetry: null, iceLimit: null };
    this.registerRetryS = REGISTER_RETRY_MIN_S;
    this.prevStats = null;
    this.state = {
      dn: '',
      registration: 'Unregistered',
      detail: '',
      call: 'Idle',
      direction: null,
      remote: '',
      ...FRESH_CALL,
    };
  }

  get loggedIn() {
    return this.ua !== null;
  }

  /** deviceId of the microphone track in use, or null outside a call. */
  get inputDevice() {
    const track = this.localStream ? this.localStream.getAudioTracks()[0] : null;
    return track ? track.getSettings().deviceId || null : null;
  }

  get inCall() {
    return this.session !== null;
  }

  emit() {
    this.dispatchEvent(new Event('change'));
  }

  set(patch) {
    Object.assign(this.state, patch);
    this.emit();
  }

  // The ICE servers for a call: /config.json's static list, fetched again for each call (agents
  // keep the page open all day; the previous list stays if that fails), and the TURN server with
  // the credentials minted for this agent (kept fresh by this.turn).
  async iceServers() {
    const turn = this.turn ? this.turn.fresh(TURN_WAIT_MS) : null;
    if (this.refreshIceServers) {
      try {
        this.config.ice_servers = await this.refreshIceServers();
      } catch {
        // keep the list from page load
      }
    }
    await turn;
    return this.currentIceServers();
  }

  /** The ICE servers known now, without fetching anything. */
  currentIceServers() {
    return [...(this.config.ice_servers || []), ...(this.turn ? this.turn.iceServers() : [])];
  }

  pcConfig(iceServers) {
    const config = {
      iceServers,
      rtcpMuxPolicy: 'require',
      bundlePolicy: 'max-bundle',
    };
    const policy = iceTransportPolicy();
    if (policy) config.iceTransportPolicy = policy;
    return config;
  }

  // ---- registration ------------------------------------------------------------------

  login(dn, password) {
    if (this.ua) return;
    this.ringtone.unlock();
    let ua;
    try {
      ua = this.createUa(dn, password);
    } catch (err) {
      // JsSIP rejects a DN that makes no valid SIP URI before anything is sent.
      this.set({ registration: `Registration failed: ${err.message}`, detail: 'Check the DN' });
      return;
    }
    this.ua = ua;
    // Asked for once the registrar has accepted the password, so a mistyped one is refused once.
    this.turnLogin = this.turn ? { dn, password } : null;
    this.set({ dn, registration: 'Connecting', detail: `Connecting to ${this.config.ws_url}` });
    this.listen(ua);
    ua.start();
  }

  createUa(dn, password) {
    // The keepalive notices a connection that died while idle, so JsSIP reconnects and
    // registers again (see keepalive.js).
    const socket = new KeepaliveSocket(new JsSIP.WebSocketInterface(this.config.ws_url));
    return new JsSIP.UA({
      sockets: [socket],
      uri: `sip:${dn}@${this.config.sip_domain}`,
      authorization_user: dn,
      password,
      register: true,
      register_expires: 300,
      // The gateway keeps the dialog alive through the WebSocket; re-INVITE/UPDATE timers
      // would only add glare with the B2BUA.
      session_timers: false,
    });
  }

  listen(ua) {
    ua.on('connecting', () => {
      if (this.ua !== ua) return;
      if (this.state.registration !== 'Connecting') this.set({ registration: 'Connecting' });
    });
    ua.on('connected', () => {
      if (this.ua !== ua) return;
      this.set({ registration: 'Connecting', detail: 'Connected, registering' });
    });
    ua.on('disconnected', (e) => {
      if (this.ua !== ua) return;
      this.clearRegisterRetry();
      const why = e && e.code ? ` (code ${e.code}${e.reason ? `: ${e.reason}` : ''})` : '';
      this.set({ registration: 'Connecting', detail: `Connection lost${why}; retrying` });
    });
    ua.on('registered', () => {
      if (this.ua !== ua) return;
      this.clearRegisterRetry();
      this.registerRetryS = REGISTER_RETRY_MIN_S;
      if (this.turnLogin) {
        this.turn.start(this.turnLogin.dn, this.turnLogin.password);
        this.turnLogin = null;
      }
      this.set({ registration: 'Registered', detail: '' });
    });
    ua.on('unregistered', () => {
      if (this.ua !== ua) return;
      // Also fired when the socket drops; then JsSIP reconnects and registers again.
      const connected = ua.isConnected();
      this.set({ registration: connected ? 'Unregistered' : 'Connecting' });
    });
    ua.on('registrationFailed', (e) => this.onRegistrationFailed(ua, e));
    ua.on('newRTCSession', (e) => this.onNewSession(e));
  }

  onRegistrationFailed(ua, e) {
    if (this.ua !== ua) return;
    const res = e.response;
    const cause =
      e.cause === JsSIP.C.causes.SIP_FAILURE_CODE && res
        ? `${res.status_code} ${res.reason_phrase}`
        : e.cause;
    if (e.cause === JsSIP.C.causes.AUTHENTICATION_ERROR || (res && res.status_code === 403)) {
      // Wrong credentials will not get better by retrying, and retries look like an attack.
      this.shutdown();
      this.set({ registration: `Registration failed: ${cause}`, detail: 'Check the DN and password' });
      return;
    }
    // Anything else (5xx, timeouts) is likely temporary: keep the socket and try again later.
    const wait = this.registerRetryS;
    this.registerRetryS = Math.min(this.registerRetryS * 2, REGISTER_RETRY_MAX_S);
    this.clearRegisterRetry();
    this.timers.registerRetry = setTimeout(() => {
      this.timers.registerRetry = null;
      if (this.ua === ua && ua.isConnected()) ua.register();
    }, wait * 1000);
    this.set({ registration: `Registration failed: ${cause}`, detail: `Retrying in ${wait} s` });
  }

  clearRegisterRetry() {
    if (this.timers.registerRetry) clearTimeout(this.timers.registerRetry);
    this.timers.registerRetry = null;
  }

  logout() {
    if (!this.ua) return;
    this.shutdown();
    this.set({ registration: 'Unregistered', detail: '' });
  }

  // Stops the user agent; ua.stop() sends the un-REGISTER and ends any call.
  shutdown() {
    const ua = this.ua;
    this.ua = null;
    this.clearRegisterRetry();
    this.turnLogin = null;
    if (this.turn) this.turn.stop();
    if (this.session) this.hangup();
    if (ua) ua.stop();
  }

  // ---- calls -------------------------------------------------------------------------

  async microphone() {
    const stream = await navigator.mediaDevices.getUserMedia(
      audioConstraints({ deviceId: this.inputDeviceId, raw: this.rawAudio }),
    );
    this.localStream = stream;
    return stream;
  }

  releaseMicrophone() {
    if (this.localStream) for (const t of this.localStream.getTracks()) t.stop();
    this.localStream = null;
  }

  async call(number) {
    const target = String(number || '').trim();
    if (!this.ua || this.session || !target || this.state.registration !== 'Registered') return;
    this.resetCall({ call: 'Calling', direction: 'outgoing', remote: target });
    const ice = this.iceServers();
    let stream;
    try {
      stream = await this.microphone();
    } catch (err) {
      this.set({ call: `Ended: Microphone unavailable (${err.name})` });
      return;
    }
    const iceServers = await ice;
    if (!this.ua || this.session) {
      this.releaseMicrophone();
      return;
    }
    try {
      this.ua.call(`sip:${target}@${this.config.sip_domain}`, {
        extraHeaders: this.tokenHeaders(target),
        mediaStream: stream,
        mediaConstraints: { audio: true, video: false },
        pcConfig: this.pcConfig(iceServers),
        rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: false },
      });
    } catch (err) {
      this.releaseMicrophone();
      this.set({ call: `Ended: ${err.message}` });
    }
  }

  // The click-to-dial token only goes with a call to the number it was issued for (the gateway
  // checks that binding too); a name or value that could break the SIP message is not sent.
  tokenHeaders(target) {
    const t = this.dialToken;
    const name = this.config.token_header;
    if (!t || t.number !== target || !name) return [];
    if (!/^[A-Za-z0-9!%'*+.^_`|~-]+$/.test(name) || !/^[\x21-\x7e]+$/.test(t.token)) return [];
    return [`${name}: ${t.token}`];
  }

  resetCall(patch) {
    this.prevStats = null;
    this.set({ ...FRESH_CALL, ...patch });
  }

  onNewSession({ originator, session, request }) {
    if (originator === 'remote' && this.session) {
      session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
      return;
    }
    this.session = session;
    const id = session.remote_identity;
    const remote = id && id.uri ? id.uri.user : '';
    if (originator === 'remote') {
      const who = id && id.display_name ? `${id.display_name} (${remote})` : remote || 'unknown';
      this.resetCall({ call: 'Ringing', direction: 'incoming', remote: remote || 'unknown', callDetail: `From ${who}` });
    } else {
      this.set({ remote: remote || this.state.remote });
    }

    this.acceptRemoteControl(session);
    if (session.connection) this.watchConnection(session.connection);
    else session.on('peerconnection', (e) => this.watchConnection(e.peerconnection));

    session.on('icecandidate', (e) => {
      // JsSIP waits for gathering to complete; cap the wait.
      if (this.timers.iceLimit) return;
      this.timers.iceLimit = setTimeout(() => {
        this.timers.iceLimit = null;
        e.ready();
      }, ICE_GATHERING_LIMIT_MS);
    });
    session.on('sdp', (e) => e.originator === 'local' && this.clearIceLimit());
    session.on('progress', () => {
      if (session !== this.session) return;
      if (originator === 'local') this.set({ callDetail: 'Ringing at the far end' });
    });
    session.on('accepted', () => this.onEstablished(session));
    session.on('confirmed', () => this.onEstablished(session));
    session.on('hold', (e) => this.onHoldChange(session, e.originator, true));
    session.on('unhold', (e) => this.onHoldChange(session, e.originator, false));
    session.on('muted', () => session === this.session && this.set({ muted: true }));
    session.on('unmuted', () => session === this.session && this.set({ muted: false }));
    session.on('ended', (e) => this.onEnded(session, e));
    session.on('failed', (e) => this.onEnded(session, e));

    if (originator === 'remote') {
      const delay = autoAnswerDelay({
        callInfo: request.getHeaders('Call-Info'),
        alertInfo: request.getHeaders('Alert-Info'),
      });
      if (delay === null) {
        this.ringtone.start();
      } else {
        this.set({ autoAnswerIn: delay, callDetail: `Auto-answer in ${delay} s` });
        this.timers.autoAnswer = setTimeout(() => {
          this.timers.autoAnswer = null;
          this.answer();
        }, delay * 1000);
      }
    }
  }

  // Genesys SIP Server and other contact-centre servers answer, hold and resume a desk phone
  // from the agent desktop with an in-dialog NOTIFY carrying `Event: talk` or `Event: hold`.
  // JsSIP refuses both (403 before the answer, 489 after), so the session's entry point for
  // in-dialog requests is wrapped to act on them; everything else goes to JsSIP unchanged.
  acceptRemoteControl(session) {
    const receive = session.receiveRequest.bind(session);
    session.receiveRequest = (request) => {
      const event = request.method === 'NOTIFY' && request.event ? request.event.event.toLowerCase() : '';
      if (event !== 'talk' && event !== 'hold') {
        receive(request);
        return;
      }
      request.reply(200);
      if (session !== this.session) return;
      if (event === 'talk' && !session.isEstablished()) this.answer();
      else this.setHold(session, event === 'hold');
    };
  }

  // Puts the call on hold or resumes it. A request made while the previous re-INVITE is still
  // open waits for it (JsSIP would drop it silently), for at most REOFFER_WAIT_MS.
  setHold(session, hold) {
    const deadline = Date.now() + REOFFER_WAIT_MS;
    const attempt = () => {
      if (session !== this.session || !session.isEstablished()) return;
      if (session.isOnHold().local === hold) return;
      if (session.isReadyToReOffer()) {
        if (hold) session.hold();
        else session.unhold();
      } else if (Date.now() < deadline) {
        setTimeout(attempt, 100);
      } else {
        this.set({ callDetail: `${hold ? 'Hold' : 'Resume'} did not go through; try again` });
      }
    };
    attempt();
  }

  clearIceLimit() {
    if (this.timers.iceLimit) clearTimeout(this.timers.iceLimit);
    this.timers.iceLimit = null;
  }

  watchConnection(pc) {
    pc.addEventListener('track', (e) => {
      if (e.track.kind !== 'audio') return;
      const stream = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
      this.audio.srcObject = stream;
      const played = this.audio.play();
      if (played && played.catch) played.catch(() => {});
    });
  }

  onEstablished(session) {
    if (session !== this.session) return;
    this.ringtone.stop();
    this.clearIceLimit();
    if (this.state.call !== 'In call' && this.state.call !== 'On hold') {
      this.set({ call: 'In call', callDetail: this.state.remote ? `With ${this.state.remote}` : '' });
    }
    this.startStats(session);
  }

  onHoldChange(session, originator, held) {
    if (session !== this.session) return;
    if (originator === 'local') {
      this.set({ held, call: held ? 'On hold' : 'In call' });
    } else {
      this.set({ callDetail: held ? 'The far end put the call on hold' : `With ${this.state.remote}` });
    }
  }

  onEnded(session, e) {
    if (session !== this.session) return;
    this.ringtone.stop();
    this.clearIceLimit();
    if (this.timers.autoAnswer) clearTimeout(this.timers.autoAnswer);
    this.timers.autoAnswer = null;
    this.stopStats();
    this.releaseMicrophone();
    this.audio.srcObject = null;
    this.session = null;
    let cause = e.cause || 'Terminated';
    if (cause === JsSIP.C.causes.SIP_FAILURE_CODE && e.message && e.message.status_code) {
      cause = `${e.message.status_code} ${e.message.reason_phrase}`;
    }
    this.set({ call: `Ended: ${cause}`, callDetail: '', held: false, muted: false, autoAnswerIn: null });
  }

  async answer() {
    const session = this.session;
    if (!session || this.state.direction !== 'incoming' || session.isEstablished()) return;
    if (this.timers.autoAnswer) clearTimeout(this.timers.autoAnswer);
    this.timers.autoAnswer = null;
    this.ringtone.stop();
    this.set({ callDetail: 'Answering', autoAnswerIn: null });
    const ice = this.iceServers();
    let stream;
    try {
      stream = await this.microphone();
    } catch (err) {
      session.terminate({ status_code: 480, reason_phrase: 'Microphone Unavailable' });
      return;
    }
    const iceServers = await ice;
    if (session !== this.session || session.isEnded()) {
      this.releaseMicrophone();
      return;
    }
    try {
      session.answer({
        mediaStream: stream,
        mediaConstraints: { audio: true, video: false },
        pcConfig: this.pcConfig(iceServers),
      });
    } catch (err) {
      this.set({ callDetail: `Answer failed: ${err.message}` });
    }
  }

  reject() {
    if (!this.session || this.state.direction !== 'incoming' || this.session.isEstablished()) return;
    this.session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
  }

  hangup() {
    if (!this.session) return;
    try {
      this.session.terminate();
    } catch {
      // Already ending; the 'ended'/'failed' handler tidies up.
    }
  }

  toggleMute() {
    const s = this.session;
    if (!s || !s.isEstablished()) return;
    if (s.isMuted().audio) s.unmute({ audio: true });
    else s.mute({ audio: true });
  }

  toggleHold() {
    const s = this.session;
    if (!s || !s.isEstablished()) return;
    this.setHold(s, !s.isOnHold().local);
  }

  sendDtmf(digit) {
    const s = this.session;
    if (!s || !s.isEstablished()) return false;
    try {
      // In-band RFC 4733 events only: the gateway relays them as RTP telephone-event.
      s.sendDTMF(digit, { transportType: 'RFC2833', duration: DTMF_DURATION_MS, interToneGap: DTMF_GAP_MS });
    } catch (err) {
      this.set({ callDetail: `DTMF not sent: ${err.message}` });
      return false;
    }
    this.set({ dtmfSent: this.state.dtmfSent + digit });
    return true;
  }

  // ---- devices -----------------------------------------------------------------------

  async setInputDevice(deviceId) {
    this.inputDeviceId = deviceId;
    const s = this.session;
    if (!s || !s.connection || !this.localStream) return;
    // Swap the track mid-call without renegotiation.
    const fresh = await navigator.mediaDevices.getUserMedia(audioConstraints({ deviceId, raw: this.rawAudio }));
    const track = fresh.getAudioTracks()[0];
    const sender = s.connection.getSenders().find((x) => x.track && x.track.kind === 'audio');
    if (sender) await sender.replaceTrack(track);
    if (this.state.muted) track.enabled = false;
    this.releaseMicrophone();
    this.localStream = fresh;
  }

  async setOutputDevice(deviceId) {
    if (typeof this.audio.setSinkId === 'function') await this.audio.setSinkId(deviceId);
    this.ringtone.setSinkId(deviceId);
  }

  // ---- quality -----------------------------------------------------------------------

  startStats(session) {
    if (this.timers.stats) return;
    const poll = async () => {
      const pc = session.connection;
      if (session !== this.session || !pc) return;
      let report;
      try {
        report = await pc.getStats();
      } catch {
        return;
      }
      if (session !== this.session) return;
      const cur = summarize(report.values());
      const loss = intervalLoss(this.prevStats, cur);
      const receiving = cur.packetsReceived > (this.prevStats ? this.prevStats.packetsReceived : 0);
      // getStats keeps the level of the last packet; with no packet this second, it is silence.
      if (!receiving && cur.audioLevel !== null) cur.audioLevel = 0;
      this.prevStats = cur;
      const quality = this.state.held ? null : grade({ loss, jitterMs: cur.jitterMs, rttMs: cur.rttMs, receiving });
      this.set({ stats: { ...cur, intervalLoss: loss }, quality });
    };
    poll();
    this.timers.stats = setInterval(poll, STATS_INTERVAL_MS);
  }

  stopStats() {
    if (this.timers.stats) clearInterval(this.timers.stats);
    this.timers.stats = null;
  }
}
