// Calls between softphone pages through a small SIP relay (sip-relay.mjs): real chromium,
// real JsSIP, real WebRTC media between the pages. This proves the page's call handling
// (ring, answer, reject, mute, hold, in-band DTMF, auto-answer, remote answer/hold by NOTIFY,
// quality figures, microphone switch, reconnect)
// without the gateway; the gateway's own tests prove the same page against the real thing.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ARTIFACTS, CALL_ENDED, WEB_DIST, chromiumMissing, launchBrowser, openPhone, phoneState, selfSignedCert,
  startStaticServer, waitFor, waitForAudio as waitForPageAudio, waitForCallState, waitForRegState, waitForText,
  writeToneWav,
} from './lib.mjs';
import { SipRelay } from './sip-relay.mjs';

const AUTO_ANSWER_DN = '5003';
const WS_FAILURE = /^WebSocket connection to 'wss:\/\/127\.0\.0\.1:\d+\/ws' failed/;

describe('calls between softphone pages', { skip: chromiumMissing(), timeout: 180_000 }, () => {
  let relay;
  let server;
  let browser;
  let tmp;
  const phones = {};

  before(async () => {
    assert.ok(existsSync(join(WEB_DIST, 'index.html')), 'web/dist is missing: run npm run build');
    tmp = await mkdtemp(join(tmpdir(), 'softphone-calls-'));
    await mkdir(ARTIFACTS, { recursive: true });
    relay = new SipRelay({
      inviteHeaders: (user) => (user === AUTO_ANSWER_DN ? ['Call-Info: <sip:127.0.0.1>;answer-after=1'] : []),
    });
    server = await startStaticServer({ tls: await selfSignedCert(), relay });
    // A steady tone as the microphone, with ?raw-audio=1 so voice processing leaves it alone.
    const tone = await writeToneWav(join(tmp, 'tone.wav'), { freq: 440, seconds: 30 });
    browser = await launchBrowser({ fakeAudioFile: tone });
  });

  after(async () => {
    for (const p of Object.values(phones)) {
      const unexpected = p.seen.consoleErrors.filter((t) => !WS_FAILURE.test(t));
      assert.deepEqual(unexpected, [], `console errors on ${p.dn}`);
      assert.deepEqual(p.seen.pageErrors, [], `uncaught exceptions on ${p.dn}`);
      assert.deepEqual(await p.seen.cspViolations(), [], `CSP violations on ${p.dn}`);
    }
    await browser?.close();
    await server?.close();
    relay?.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  const open = (dn, password = `pass${dn}`) => openPhone(browser, server.url, dn, password, { query: '?raw-audio=1' });
  const stats = async (p) => (await phoneState(p.page)).stats;
  const waitForAudio = (p, opts) => waitForPageAudio(p.page, { label: p.dn, ...opts });

  async function receivedGrows(p) {
    const start = (await stats(p))?.packetsReceived ?? 0;
    return waitFor(async () => ((await stats(p))?.packetsReceived ?? 0) > start + 25, {
      timeout: 10_000, what: `${p.dn} to keep receiving RTP`, describe: async () => JSON.stringify(await stats(p)),
    });
  }

  // The far end answers a hold with recvonly and stops sending: the inbound count stands still
  // across a whole stats interval (the page samples once a second).
  async function receivingStops(p) {
    let prev = null;
    return waitFor(async () => {
      const s = await stats(p);
      const same = prev !== null && s && s.packetsReceived === prev;
      prev = s ? s.packetsReceived : null;
      return same;
    }, { timeout: 10_000, interval: 1100, what: `${p.dn} to stop receiving RTP`, describe: async () => JSON.stringify(await stats(p)) });
  }

  test('agents register with digest credentials; a wrong password is reported', async () => {
    phones.a = await open('5001');
    phones.b = await open('5002');
    phones.c = await open(AUTO_ANSWER_DN);
    for (const p of Object.values(phones)) await waitForRegState(p.page, 'Registered');
    const wrong = await open('5004', 'wrong');
    await waitForRegState(wrong.page, 'Registration failed: Authentication Error');
    assert.ok(await wrong.page.isVisible('#login'), 'the login form is offered again');
    await wrong.context.close();
  });

  test('A calls B; B rings, answers, and audio flows both ways', async () => {
    const { a, b } = phones;
    const configsBefore = server.configRequests();
    await a.page.fill('#number', '5002');
    await a.page.click('#call');
    await waitForCallState(b.page, 'Ringing');
    assert.equal((await a.page.textContent('#call-state')).trim(), 'Calling');
    assert.match(await b.page.title(), /^Ringing: 5001/);
    assert.equal((await b.page.textContent('#call-detail')).trim(), 'From 5001');
    assert.ok(await b.page.isVisible('#answer'));
    assert.ok(await b.page.isVisible('#reject'));
    await b.page.click('#answer');
    await waitForCallState(a.page, 'In call', { failOn: CALL_ENDED });
    await waitForCallState(b.page, 'In call', { failOn: CALL_ENDED });
    assert.equal(await b.page.isVisible('#answer'), false);
    assert.equal(server.configRequests() - configsBefore, 2, 'ICE servers fetched afresh by caller and callee');

    const sa = await waitForAudio(a, { above: 0.05 });
    const sb = await waitForAudio(b, { above: 0.05 });
    for (const s of [sa, sb]) {
      assert.ok(s.packetsReceived > 0 && s.packetsSent > 0, JSON.stringify(s));
      assert.ok(s.codec, 'codec reported');
    }
    await waitForText(a.page, '#quality', 'good');
    assert.equal((await phoneState(a.page)).quality, 'good');
    assert.match(await a.page.textContent('#stat-received'), /^\d+$/);
    await a.page.screenshot({ path: join(ARTIFACTS, 'softphone-in-call.png'), fullPage: true });
    await b.page.setViewportSize({ width: 360, height: 740 });
    const overflow = await b.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the in-call page is ${overflow}px wider than a phone screen`);
    await b.page.screenshot({ path: join(ARTIFACTS, 'softphone-in-call-narrow.png'), fullPage: true });
  });

  test('mute silences the far end and unmute brings the audio back', async () => {
    const { a, b } = phones;
    await a.page.click('#mute');
    await waitFor(async () => (await a.page.getAttribute('#mute', 'aria-pressed')) === 'true', { what: 'mute pressed' });
    await waitForAudio(b, { below: 0.01 });
    await a.page.click('#mute');
    await waitForAudio(b, { above: 0.05 });
    assert.equal(await a.page.getAttribute('#mute', 'aria-pressed'), 'false');
  });

  test('hold and resume', async () => {
    const { a, b } = phones;
    await a.page.click('#hold');
    await waitForCallState(a.page, 'On hold');
    await waitForText(b.page, '#call-detail', 'The far end put the call on hold');
    await receivingStops(a);
    await waitForAudio(a, { below: 0.01 });
    await a.page.click('#hold');
    await waitForCallState(a.page, 'In call');
    await receivedGrows(a);
    await waitForAudio(a, { above: 0.05 });
  });

  test('switching the microphone mid-call keeps the audio flowing', async () => {
    const { a, b } = phones;
    const options = await waitFor(async () => {
      const values = await a.page.$$eval('#mic option', (os) => os.map((o) => o.value));
      return values.length > 1 ? values : null;
    }, { what: 'microphones listed once the call has the microphone' });
    const chosen = options[options.length - 1];
    assert.notEqual((await phoneState(a.page)).inputDevice, chosen);
    await a.page.selectOption('#mic', chosen);
    await waitFor(async () => (await phoneState(a.page)).inputDevice === chosen, {
      what: 'the call to use the chosen microphone',
    });
    await receivedGrows(b);
    await waitForAudio(b, { above: 0.05 });
    assert.equal((await phoneState(a.page)).call, 'In call');
  });

  test('DTMF goes in the media stream, never as SIP INFO', async () => {
    const { a } = phones;
    await a.page.click('#dtmf-1');
    await a.page.click('#dtmf-5');
    await a.page.click('#dtmf-hash');
    await a.page.click('#dtmf-star');
    await a.page.locator('body').press('9');
    await waitFor(async () => (await phoneState(a.page)).dtmfSent === '15#*9', {
      what: 'digits sent', describe: async () => (await phoneState(a.page)).dtmfSent,
    });
    assert.equal(await a.page.inputValue('#number'), '5002', 'digits in a call do not go to the number field');
    assert.deepEqual(relay.requests('INFO'), []);
  });

  test('a call to a busy agent is refused', async () => {
    const { c } = phones;
    await c.page.fill('#number', '5001');
    await c.page.click('#call');
    await waitForCallState(c.page, 'Ended: Busy');
    assert.equal((await phones.a.page.textContent('#call-state')).trim(), 'In call');
  });

  test('hanging up ends the call on both sides', async () => {
    const { a, b } = phones;
    await b.page.click('#hangup');
    await waitForCallState(b.page, 'Ended: Terminated');
    await waitForCallState(a.page, 'Ended: Terminated');
    const last = (await phoneState(a.page)).stats;
    assert.ok(last && last.packetsReceived > 0, 'the last figures stay readable');
    assert.equal(await a.page.isDisabled('#hangup'), true);
  });

  test('B rejects a call', async () => {
    const { a, b } = phones;
    await a.page.fill('#number', '5002');
    await a.page.click('#call');
    await waitForCallState(b.page, 'Ringing');
    await b.page.click('#reject');
    await waitForCallState(a.page, 'Ended: Busy');
    await waitForCallState(b.page, /^Ended: /);
  });

  test('the SIP server answers, holds and resumes the call with NOTIFY talk/hold', async () => {
    const { a, b } = phones;
    const notifyOks = () => relay.log.filter((e) => e.status === 200 && /NOTIFY/.test(e.cseq || '')).length;
    await a.page.fill('#number', '5002');
    await a.page.click('#call');
    await waitForCallState(b.page, 'Ringing');
    relay.remoteControl('5002', 'talk');
    await waitForCallState(b.page, 'In call', { failOn: CALL_ENDED });
    await waitForCallState(a.page, 'In call', { failOn: CALL_ENDED });
    relay.remoteControl('5002', 'hold');
    await waitForCallState(b.page, 'On hold');
    await waitForText(a.page, '#call-detail', 'The far end put the call on hold');
    relay.remoteControl('5002', 'talk');
    await waitForCallState(b.page, 'In call');
    await receivedGrows(b);
    await waitFor(() => notifyOks() === 3, { what: 'three NOTIFYs answered 200', describe: () => String(notifyOks()) });
    await b.page.click('#hangup');
    await waitForCallState(a.page, 'Ended: Terminated');
    await waitForCallState(b.page, 'Ended: Terminated');
  });

  test('Call-Info answer-after makes the page answer by itself', async () => {
    const { a, c } = phones;
    await a.page.fill('#number', AUTO_ANSWER_DN);
    await a.page.click('#call');
    await waitForText(c.page, '#call-detail', 'Auto-answer in 1 s');
    await waitForCallState(c.page, 'In call', { failOn: CALL_ENDED });
    await waitForCallState(a.page, 'In call', { failOn: CALL_ENDED });
    await waitForAudio(c, { above: 0.05 });
    await a.page.click('#hangup');
    await waitForCallState(c.page, 'Ended: Terminated');
  });

  test('Test my audio dials the echo number from /config.json', async () => {
    const { a } = phones;
    const before = relay.requests('INVITE').length;
    await a.page.click('#echo-test');
    await waitForCallState(a.page, /^Ended: /); // nobody answers 600 at the relay
    const invites = relay.requests('INVITE').slice(before);
    assert.ok(invites.some((e) => e.uri === 'sip:600@127.0.0.1'), JSON.stringify(invites));
  });

  test('after the socket drops the page says so, reconnects and registers again', async () => {
    const { a, b } = phones;
    relay.refusing = true;
    relay.dropAll();
    await waitForRegState(a.page, 'Connecting');
    assert.equal((await phoneState(a.page)).registration, 'Connecting');
    assert.equal(await a.page.isDisabled('#call'), true);
    relay.refusing = false;
    await waitForRegState(a.page, 'Registered', { timeout: 45_000 });
    await waitForRegState(b.page, 'Registered', { timeout: 45_000 });
    // And the restored registration really routes calls.
    await a.page.fill('#number', '5002');
    await a.page.click('#call');
    await waitForCallState(b.page, 'Ringing');
    await a.page.click('#hangup');
    await waitForCallState(b.page, /^Ended: /);
  });

  test('logout unregisters', async () => {
    const { a } = phones;
    await a.page.click('#logout');
    await waitForRegState(a.page, 'Unregistered');
    await waitFor(() => !relay.users.has('5001'), { what: 'the relay to drop 5001' });
  });
});
