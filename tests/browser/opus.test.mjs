// Opus toward the agent, G.711 toward the SIP server (media.agent_codecs = ["opus", ...]):
// - "Test my audio": Chromium's echo call negotiates Opus; its tone goes through the bridge's
//   Opus decoder, G.711 and the Opus encoder and comes back at the same frequency (FFT of what
//   the page receives, through WebAudio);
// - an inbound call from sipp (PCMU only, media at the test's RTP peer): the browser leg is
//   Opus, the server gets PCMU carrying the microphone's tone (FFT at the peer) and the page
//   hears the server's tone; keypad DTMF reaches the server as 8 kHz events, and a digit the
//   server sends reaches the page as events at 48 kHz, which Chromium plays out as the
//   digit's two tones (FFT again).
// Skips when the gateway binary is absent (unless GATEWAYD_REQUIRE=1) or sipp is not installed.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ARTIFACTS, CALL_ENDED, ROOT, capturePeerConnections, chromiumMissing, gatewayMissing, launchBrowser, openPhone,
  peakFrequency, phoneState, receivedSpectrum, startGateway, ulawDecode, waitFor, waitForAudio, waitForCallState,
  waitForRegState, writeToneWav,
} from './lib.mjs';
import { RtpPeer, sippMissing, startSipp } from './sip-server.mjs';

const MIC_HZ = 620;
// The RTP peer's tone toward the agent.
const SERVER_HZ = 400;
// DTMF 5 is 770 Hz + 1336 Hz (RFC 4733 / Q.23), clear of the 400 Hz tone's harmonics.
const DIGIT_5 = [770, 1336];
// The page sends each digit for 120 ms: 960 units at 8 kHz once rescaled from 48 kHz.
const TONE_UNITS = { min: 8 * 80, max: 8 * 400 };
// The FFT's bins are 48000 / 8192 = 5.9 Hz wide.
const near = (hz, want) => Math.abs(hz - want) <= 12;

describe('Opus toward the agent, G.711 toward the SIP server', { skip: chromiumMissing() || gatewayMissing(), timeout: 180_000 }, () => {
  let gateway;
  let browser;
  let tmp;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-opus-'));
    await mkdir(ARTIFACTS, { recursive: true });
    gateway = await startGateway({ env: { GATEWAYD_MEDIA__AGENT_CODECS: '["opus", "PCMU", "PCMA"]' } });
    browser = await launchBrowser({
      fakeAudioFile: await writeToneWav(join(tmp, 'mic.wav'), { freq: MIC_HZ, seconds: 60 }),
      extraArgs: ['--autoplay-policy=no-user-gesture-required'],
    });
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('Test my audio over Opus: the tone comes back through the transcoder at its frequency', async (t) => {
    const { context, page, seen } = await openPhone(browser, gateway.url, '5001', 'pass5001', {
      query: '?raw-audio=1', beforeLoad: capturePeerConnections,
    });
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    await page.click('#echo-test');
    await waitForCallState(page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });

    const stats = await waitForAudio(page, { above: 0.05, minPackets: 50, label: 'the echoed tone:' });
    assert.equal(stats.codec, 'opus', 'Opus on the browser leg');
    const spectrum = await receivedSpectrum(page, { ms: 2000 });
    t.diagnostic(`echo: ${JSON.stringify(spectrum)}`);
    assert.ok(near(spectrum.peakHz, MIC_HZ) && spectrum.peakDb > 20, `the ${MIC_HZ} Hz tone comes back: ${JSON.stringify(spectrum)}`);

    const listed = await waitFor(async () => {
      const calls = await (await fetch('http://127.0.0.1:9090/calls')).json();
      const echo = calls.find((c) => c.dn === '5001' && c.direction === 'echo');
      return echo?.media?.browser?.packets_received > 50 ? echo : null;
    }, { what: 'the echo call in GET /calls with packets from the browser' });
    assert.equal(listed.media.browser.codec, 'opus', JSON.stringify(listed.media));

    await page.click('#hangup');
    await waitForCallState(page, 'Ended: Terminated');
    const record = await waitFor(() => gateway.logs().split('\n').find((l) => l.includes('call ended') && l.includes('dn=5001')),
      { what: 'the call record in the log' });
    assert.match(record, /"codec":\s*"opus"/, record);
    assert.match(record, /"mos":\s*[1-4]\.\d/, `a MOS estimate in ${record}`);
    assert.deepEqual(seen.consoleErrors, []);
    assert.deepEqual(seen.pageErrors, []);
    await context.close();
  });

  test('inbound PCMU call from sipp: Opus to the page, tones and DTMF both ways', { skip: sippMissing() }, async (t) => {
    const DN = '5002';
    const { context, page, seen } = await openPhone(browser, gateway.url, DN, `pass${DN}`, {
      query: '?raw-audio=1', beforeLoad: capturePeerConnections,
    });
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    const peer = await RtpPeer.start({ telephoneEvent: 96, basePort: 35400 });
    const sipp = startSipp([
      '-sf', join(ROOT, 'tests', 'browser', 'sipp', 'inbound-rtp-peer.xml'), '-i', '127.0.0.1', '-p', '5080', '-mp', '30400',
      '-m', '1', '-s', DN, '-aa', '-key', 'rtp_port', String(peer.port), '127.0.0.1:5060',
    ], tmp);
    try {
      await waitForCallState(page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });

      // Toward the server: PCMU carrying the microphone's tone.
      await peer.waitForAudio(150, { what: 'PCMU packets from the browser at the SIP server' });
      const samples = Int16Array.from(Buffer.concat(peer.pcmu.slice(-100)), ulawDecode);
      const atServer = peakFrequency(samples, 8000);
      assert.ok(near(atServer.hz, MIC_HZ) && atServer.aboveMedianDb > 20, `the microphone's tone at the server: ${JSON.stringify(atServer)}`);
      const rms = Math.sqrt(samples.reduce((a, s) => a + s * s, 0) / samples.length);
      assert.ok(rms > 2000, `with its energy: rms ${rms}`);

      // Toward the page: Opus carrying the server's tone.
      const stats = await waitForAudio(page, { above: 0.05, minPackets: 50, label: 'the SIP server\'s tone:' });
      assert.equal(stats.codec, 'opus');
      const heard = await receivedSpectrum(page, { ms: 1500, probes: DIGIT_5 });
      assert.ok(near(heard.peakHz, SERVER_HZ) && heard.peakDb > 20, `the server's ${SERVER_HZ} Hz tone in the page: ${JSON.stringify(heard)}`);

      // Keypad DTMF: 48 kHz events on the browser leg, 8 kHz events on the server's type 96.
      await page.click('#dtmf-1');
      await page.click('#dtmf-5');
      await waitFor(() => peer.digits() === '15', { what: 'DTMF 15 at the SIP server', describe: () => peer.summary() });
      for (const t of peer.tones) {
        assert.ok(t.duration >= TONE_UNITS.min && t.duration <= TONE_UNITS.max, `tone ${t.digit} lasts ${t.duration} units at 8 kHz`);
      }
      assert.deepEqual(Object.keys(peer.byPt).sort(), ['0', '96'], `only PCMU and the server's telephone-event: ${peer.summary()}`);

      // A digit from the server: the page's receiver plays the events out as the digit's tones.
      peer.sendDigit('5', { ms: 1200 });
      const during = await receivedSpectrum(page, { ms: 700, probes: DIGIT_5 });
      for (const hz of DIGIT_5) {
        assert.ok(during.probes[hz] > 20 && during.probes[hz] > heard.probes[hz] + 15,
          `${hz} Hz of DTMF 5 from the server in the page: before ${JSON.stringify(heard)}, during ${JSON.stringify(during)}`);
      }
      t.diagnostic(`at the server: ${JSON.stringify(atServer)} rms ${Math.round(rms)}; in the page: ${JSON.stringify(heard)}; during DTMF 5: ${JSON.stringify(during)}`);
      await page.screenshot({ path: join(ARTIFACTS, 'softphone-opus-inbound.png'), fullPage: true });

      await page.click('#hangup');
      await waitForCallState(page, CALL_ENDED, { timeout: 10_000 });
      assert.equal(await sipp.finished(10_000), 0, 'sipp saw the whole call and the BYE');
      const record = await waitFor(() => gateway.logs().split('\n').find((l) => l.includes('call ended') && l.includes(`dn=${DN}`)),
        { what: 'the call record in the log' });
      assert.match(record, /"browser":\{[^}]*"codec":\s*"opus"/, record);
      assert.match(record, /"internal":\{[^}]*"codec":\s*"PCMU"/, record);
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
