// The SIP server's side of an inbound call, measured where it lands: sipp signals as the SIP
// server (127.0.0.1:5080) but its SDP names the test's RTP peer (RtpPeer in sip-server.mjs),
// which counts what the gateway delivers and plays a tone back. The agent's page auto-answers; then:
// - audio both ways: the browser's microphone reaches the server as PCMU, the server's tone
//   reaches the browser;
// - DTMF from the keypad arrives at the server as RFC 4733 events on the payload type the
//   server offered (96, not the gateway's own 101), with the right event codes and end bits;
// - the server holds (re-INVITE a=sendonly, answered a=recvonly) and resumes (a=sendrecv): the
//   gateway stops sending to the server while held, the page stays in the call and keeps
//   hearing the server, and after the resume audio flows both ways again;
// - the agent hangs up: the server gets the BYE and the gateway stops sending media.
// Skips when the gateway binary is absent (unless GATEWAYD_REQUIRE=1) or sipp is not installed.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CALL_ENDED, ROOT, chromiumMissing, gatewayMissing, launchBrowser, openPhone, phoneState, recordSip,
  startGateway, waitFor, waitForAudio, waitForCallState, waitForRegState, writeToneWav,
} from './lib.mjs';
import { RtpPeer, sippMissing, sippStep, startSipp } from './sip-server.mjs';

const SCENARIO = join(ROOT, 'tests', 'browser', 'sipp', 'inbound-server-hold.xml');
const DN = '5008';
// What the keypad sends, and how the events name those keys (RFC 4733 section 3.2).
const DIGITS = [['1', 'dtmf-1'], ['5', 'dtmf-5'], ['#', 'dtmf-hash'], ['*', 'dtmf-star'], ['0', 'dtmf-0']];
// The page sends each digit for 120 ms; at 8000 Hz that is 960 timestamp units.
const TONE_UNITS = { min: 8 * 80, max: 8 * 400 };

describe('inbound call: the SIP server\'s media', { skip: chromiumMissing() || sippMissing() || gatewayMissing(), timeout: 180_000 }, () => {
  let gateway;
  let browser;
  let tmp;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-server-media-'));
    gateway = await startGateway();
    browser = await launchBrowser({ fakeAudioFile: await writeToneWav(join(tmp, 'mic.wav'), { freq: 660, seconds: 60 }) });
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('audio both ways, DTMF, hold and resume by the server, and the agent hangs up', async () => {
    let sip;
    const { context, page, seen } = await openPhone(browser, gateway.url, DN, `pass${DN}`, {
      query: '?raw-audio=1', beforeLoad: (p) => { sip = recordSip(p); },
    });
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    const peer = await RtpPeer.start({ telephoneEvent: 96 });
    // sipp names the call (-cid_str, %u is the call number) so the test can move it on.
    const stamp = Date.now();
    const callId = `server-media-${stamp}-1`;
    const sipp = startSipp([
      '-sf', SCENARIO, '-i', '127.0.0.1', '-p', '5080', '-mp', '30200', '-m', '1', '-s', DN, '-aa',
      '-key', 'rtp_port', String(peer.port), '-cid_str', `server-media-${stamp}-%u`, '127.0.0.1:5060',
    ], tmp);
    const received = async () => (await phoneState(page)).stats?.packetsReceived ?? 0;
    try {
      await waitForCallState(page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });

      // Audio both ways.
      await peer.waitForAudio(50, { what: 'PCMU packets from the browser at the SIP server' });
      assert.equal(peer.remote.address, '127.0.0.1');
      const stats = await waitForAudio(page, { above: 0.05, minPackets: 50, label: 'the SIP server\'s tone:' });
      assert.equal(stats.codec, 'PCMU');

      // DTMF from the keypad, as RFC 4733 events on the server's payload type.
      for (const [, id] of DIGITS) await page.click(`#${id}`);
      const expected = DIGITS.map(([d]) => d).join('');
      await waitFor(() => peer.digits() === expected, { what: `DTMF ${expected} at the SIP server`, describe: () => peer.summary() });
      assert.equal(peer.tones.length, DIGITS.length, `one event per key: ${peer.summary()}`);
      for (const t of peer.tones) {
        assert.ok(t.duration >= TONE_UNITS.min && t.duration <= TONE_UNITS.max, `tone ${t.digit} lasts ${t.duration} units at 8 kHz`);
        assert.ok(t.volume <= 63);
      }
      assert.deepEqual(Object.keys(peer.byPt).sort(), ['0', '96'], `only PCMU and the server's telephone-event: ${peer.summary()}`);

      // The server holds: the gateway answers recvonly (sipp checks) and stops sending to it.
      // The server goes on playing (music on hold), and the page still hears it, in the call.
      await sippStep(tmp, callId, 'hold');
      const held = await peer.waitForAudioToStop();
      const heldAt = await received();
      await waitFor(async () => (await received()) > heldAt + 50, {
        what: 'the page to go on hearing the server while held', describe: async () => JSON.stringify((await phoneState(page)).stats),
      });
      assert.equal(peer.audio, held.count, 'nothing reached the server while it held the call');
      assert.equal((await phoneState(page)).call, 'In call', 'the browser leg is not disturbed by the server\'s hold');
      const invitesToPage = () => sip.received.filter((m) => m.startsWith('INVITE ')).length;
      assert.equal(invitesToPage(), 1, 'no re-INVITE reached the page');

      // The server resumes: the gateway answers sendrecv and audio flows both ways again.
      await sippStep(tmp, callId, 'resume');
      await peer.waitForAudio(50, { from: held.count, what: 'PCMU packets from the browser after the resume' });
      const before = await received();
      await waitForAudio(page, { above: 0.05, minPackets: before + 50, label: 'the SIP server after the resume:' });
      assert.equal(invitesToPage(), 1, 'no re-INVITE reached the page for the resume either');

      // The agent hangs up: the server gets the BYE, the gateway stops sending media.
      await page.click('#hangup');
      await waitForCallState(page, CALL_ENDED, { timeout: 10_000 });
      assert.equal(await sipp.finished(10_000), 0, 'sipp saw the whole call: recvonly, sendrecv and the BYE');
      peer.sending = false;
      await peer.waitForAudioToStop();
    } catch (err) {
      err.message += `\nRTP peer: ${peer.summary()}\npage: ${JSON.stringify(await phoneState(page))}\ngateway: ${gateway.logs().slice(-3000)}\nsipp said:\n${await sipp.said()}`;
      throw err;
    } finally {
      await sipp.stop();
      peer.close();
    }
    assert.deepEqual(seen.pageErrors, []);
    await context.close();
  });
});
