// Click-to-dial with a token, as a CRM uses it: the gateway runs with an outbound token secret
// (GATEWAYD_UPSTREAM__OUTBOUND__TOKEN_SECRET), and the CRM opens the softphone with
// `?dial=NUMBER&token=EXPIRES.HEX(HMAC-SHA256(secret, "DN:NUMBER:EXPIRES"))`. The page sends the
// token in the header /config.json names.
// - Without a token, with one signed by another secret, or with one issued for another number,
//   the gateway refuses the call with 403 and the SIP server (sipp) sees no INVITE.
// - With a valid token the call reaches sipp without the token header (the scenario fails if it
//   is there), audio flows both ways through the test's RTP peer, DTMF arrives as RFC 4733
//   events, and the SIP server hangs up with BYE.
// Skips when the gateway binary is absent (unless GATEWAYD_REQUIRE=1) or sipp is not installed.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CALL_ENDED, ROOT, chromiumMissing, gatewayMissing, launchBrowser, openPhone, recordSip, startGateway,
  waitFor, waitForAudio, waitForCallState, waitForRegState, writeToneWav,
} from './lib.mjs';
import { RtpPeer, sippMissing, sippStep, startSipp } from './sip-server.mjs';

const SCENARIO = join(ROOT, 'tests', 'browser', 'sipp', 'outbound-token.xml');
const SECRET = 'crm-lab-secret';
const HEADER = 'X-Gatewayd-Token';
const DN = '5009';
const NUMBER = '7000';

/** A token as the gateway checks it (gatewayd/src/call/token.rs). */
function sign(secret, dn, destination, expires) {
  const sig = createHmac('sha256', secret).update(`${dn}:${destination}:${expires}`).digest('hex');
  return `${expires}.${sig}`;
}
const inTwoMinutes = () => Math.floor(Date.now() / 1000) + 120;

const invitesIn = (messages) => messages.filter((m) => m.startsWith('INVITE '));
const inviteAnswers = (messages) => messages.filter((m) => /^SIP\/2\.0 \d{3}/.test(m) && /^CSeq:\s*\d+ INVITE\s*$/mi.test(m));

describe('outbound click-to-dial with a token', { skip: chromiumMissing() || sippMissing() || gatewayMissing(), timeout: 180_000 }, () => {
  let gateway;
  let browser;
  let tmp;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-token-'));
    process.env.GATEWAYD_UPSTREAM__OUTBOUND__TOKEN_SECRET = SECRET;
    try {
      gateway = await startGateway();
    } finally {
      delete process.env.GATEWAYD_UPSTREAM__OUTBOUND__TOKEN_SECRET;
    }
    browser = await launchBrowser({ fakeAudioFile: await writeToneWav(join(tmp, 'mic.wav'), { freq: 500, seconds: 60 }) });
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** Opens the page as the CRM would and dials the prefilled number. */
  async function dialFromCrm(token) {
    let sip;
    const query = `?raw-audio=1&dial=${NUMBER}${token === null ? '' : `&token=${encodeURIComponent(token)}`}`;
    const phone = await openPhone(browser, gateway.url, DN, `pass${DN}`, { query, beforeLoad: (p) => { sip = recordSip(p); } });
    await waitForRegState(phone.page, 'Registered', { timeout: 15_000 });
    assert.equal(await phone.page.inputValue('#number'), NUMBER, 'the number from ?dial= is filled in');
    assert.ok(!phone.page.url().includes('token='), `the token leaves the address bar: ${phone.page.url()}`);
    await phone.page.click('#call');
    return { ...phone, sip };
  }

  test('calls without a valid token are refused before they reach the SIP server; a valid one is placed', async () => {
    const peer = await RtpPeer.start({ telephoneEvent: 101 });
    const sipp = startSipp([
      '-sf', SCENARIO, '-i', '127.0.0.1', '-p', '5080', '-mp', '31200', '-m', '1', '-aa', '-key', 'rtp_port', String(peer.port),
    ], tmp);
    const callIds = join(tmp, 'call-ids.txt');
    try {
      const refusals = [
        ['no token', null],
        ['a token signed with another secret', sign('not-the-secret', DN, NUMBER, inTwoMinutes())],
        ['a token for another number', sign(SECRET, DN, '7001', inTwoMinutes())],
        ['an expired token', sign(SECRET, DN, NUMBER, Math.floor(Date.now() / 1000) - 5)],
      ];
      for (const [what, token] of refusals) {
        const { context, page, sip } = await dialFromCrm(token);
        await waitForCallState(page, CALL_ENDED, { timeout: 10_000 });
        // The last INVITE is the one with digest credentials, after the gateway's 401.
        const invite = invitesIn(sip.sent).at(-1);
        assert.ok(invite, `${what}: the page sent an INVITE`);
        const carried = new RegExp(`^${HEADER}: (.+)$`, 'mi').exec(invite)?.[1]?.trim() ?? null;
        assert.equal(carried, token, `${what}: the page sends the token it was given, in ${HEADER}`);
        const finals = inviteAnswers(sip.received).map((m) => m.split('\r\n')[0]).filter((l) => !/ (1\d\d|401|407) /.test(l));
        assert.deepEqual(finals, ['SIP/2.0 403 Invalid Token'], `${what}: refused by the gateway`);
        await context.close();
      }
      assert.equal(existsSync(callIds), false, 'no refused call reached the SIP server');
      assert.equal(sipp.proc.exitCode, null, 'sipp is still waiting for its call');

      const { context, page, sip } = await dialFromCrm(sign(SECRET, DN, NUMBER, inTwoMinutes()));
      await waitForCallState(page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });
      assert.match(invitesIn(sip.sent).at(-1), new RegExp(`^${HEADER}: \\d+\\.[0-9a-f]{64}$`, 'mi'));
      await peer.waitForAudio(50, { what: 'PCMU packets from the browser at the SIP server' });
      await waitForAudio(page, { above: 0.05, minPackets: 50, label: 'the SIP server\'s tone:' });
      await page.click('#dtmf-9');
      await page.click('#dtmf-hash');
      await waitFor(() => peer.digits() === '9#', { what: 'DTMF 9# at the SIP server', describe: () => peer.summary() });

      // The SIP server hangs up.
      const ids = (await readFile(callIds, 'utf8')).trim().split('\n');
      assert.equal(ids.length, 1, `the SIP server saw one INVITE: ${ids}`);
      await sippStep(tmp, ids[0], 'bye');
      await waitForCallState(page, 'Ended: Terminated', { timeout: 10_000 });
      assert.equal(await sipp.finished(10_000), 0, 'sipp saw the call without the token header and its BYE answered');
      peer.sending = false;
      await peer.waitForAudioToStop();
      await context.close();
    } catch (err) {
      err.message += `\nRTP peer: ${peer.summary()}\nsipp said:\n${await sipp.said()}`;
      throw err;
    } finally {
      await sipp.stop();
      peer.close();
    }
  });
});
