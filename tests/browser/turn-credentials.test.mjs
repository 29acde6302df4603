// TURN credentials for a logged-in agent, through the gateway: after registering, the page does
// the HTTP Digest exchange on /turn-credentials itself (SHA-256, the password never sent), holds
// REST-scheme credentials minted with the lab's shared secret, offers them as the ICE servers of
// its calls, fetches them again on a new login, and honours a relay-only ICE policy set in
// localStorage. The echo call still works. Skips without the gateway binary unless
// GATEWAYD_REQUIRE=1.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CALL_ENDED, chromiumMissing, gatewayMissing, launchBrowser, login, openPhone, startGateway, waitFor, waitForAudio,
  waitForCallState, waitForRegState, writeToneWav,
} from './lib.mjs';

const PATH = '/turn-credentials';
const LAB_URIS = ['turn:127.0.0.1:3478?transport=udp', 'turn:127.0.0.1:3478?transport=tcp', 'turns:localhost:5349?transport=tcp'];
const LAB_SECRET = 'lab-turn-secret';
const POLICY_KEY = 'gatewayd.iceTransportPolicy';

const hook = (page, name) => page.evaluate((n) => window.gatewaydPhone[n], name);

/** Records each /turn-credentials exchange: status and the Authorization sent. */
function recordExchanges(page) {
  const seen = [];
  page.on('response', async (res) => {
    if (new URL(res.url()).pathname !== PATH) return;
    const headers = await res.request().allHeaders();
    seen.push({ status: res.status(), authorization: headers.authorization || null, cacheControl: res.headers()['cache-control'] });
  });
  return seen;
}

/** Waits until the page's TURN credentials are ready, and differ from `previous` if given. */
function readyCredentials(page, previous = null) {
  return waitFor(async () => {
    const t = await hook(page, 'turn');
    return t && t.state === 'ready' && (!previous || t.fetchedAt !== previous.fetchedAt) ? t : null;
  }, { timeout: 15_000, what: 'TURN credentials in the page', describe: async () => JSON.stringify(await hook(page, 'turn')) });
}

describe('TURN credentials for the softphone', { skip: chromiumMissing() || gatewayMissing(), timeout: 120_000 }, () => {
  let gateway;
  let browser;
  let tmp;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-turn-'));
    gateway = await startGateway();
    browser = await launchBrowser({ fakeAudioFile: await writeToneWav(join(tmp, 'tone.wav'), { seconds: 30 }) });
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('after login the page holds minted credentials and the echo call uses them', async () => {
    let exchanges;
    const { context, page, seen } = await openPhone(browser, gateway.url, '5001', 'pass5001', {
      query: '?raw-audio=1',
      beforeLoad: (p) => { exchanges = recordExchanges(p); },
    });
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    const turn = await readyCredentials(page);

    const [expiry, dn] = turn.username.split(':');
    assert.equal(dn, '5001');
    const lifetime = Number(expiry) * 1000 - turn.fetchedAt;
    assert.ok(Math.abs(lifetime - turn.ttl * 1000) < 60_000, `expiry ${expiry} is about ttl ${turn.ttl} s ahead`);
    assert.equal(turn.password, createHmac('sha1', LAB_SECRET).update(turn.username).digest('base64'), 'the TURN REST password');
    assert.deepEqual(turn.uris, LAB_URIS);
    assert.equal(turn.refreshAt, turn.fetchedAt + turn.ttl * 1000 * 0.8, 'refreshed at 80 % of the lifetime');

    // One challenge, one SHA-256 answer; the password itself never leaves the page.
    await waitFor(() => exchanges.length >= 2, { what: 'both legs of the exchange recorded' });
    assert.deepEqual(exchanges.map((e) => e.status), [401, 200]);
    assert.equal(exchanges[0].authorization, null);
    assert.match(exchanges[1].authorization, /^Digest .*algorithm=SHA-256.*qop=auth/);
    assert.match(exchanges[1].authorization, /username="5001"/);
    assert.ok(exchanges.every((e) => !String(e.authorization).includes('pass5001')));
    assert.ok(exchanges.every((e) => e.cacheControl === 'no-store'));
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }));
    assert.ok(!stored.includes('pass5001') && !stored.includes(turn.password), 'nothing secret in localStorage');

    const next = await hook(page, 'pcConfig');
    assert.deepEqual(next.iceServers, [{ urls: LAB_URIS, username: turn.username, credential: turn.password }]);
    assert.equal(next.iceTransportPolicy, undefined, 'ICE over every transport unless asked otherwise');

    await page.click('#echo-test');
    await waitForCallState(page, 'In call', { timeout: 15_000, failOn: CALL_ENDED });
    const inCall = await hook(page, 'callPcConfig');
    assert.deepEqual(inCall.iceServers, [{ urls: LAB_URIS, username: turn.username }], 'the call\'s RTCPeerConnection has the TURN server');
    const stats = await waitForAudio(page, { above: 0.05, minPackets: 50, label: 'the echoed tone:' });
    assert.match(stats.codec, /^(PCMU|PCMA)$/);
    await page.click('#hangup');
    await waitForCallState(page, 'Ended: Terminated');

    assert.deepEqual(await seen.cspViolations(), []);
    assert.deepEqual(seen.consoleErrors, []);
    assert.deepEqual(seen.pageErrors, []);
    assert.ok(!gateway.logs().includes('pass5001') && !gateway.logs().includes(turn.password), 'no secret in the gateway log');
    assert.match(gateway.logs(), /TURN credentials issued.*dn=5001|dn=5001.*TURN credentials issued/);

    // Logging out drops them; logging in again fetches new ones.
    await page.click('#logout');
    await waitForRegState(page, 'Unregistered');
    assert.equal((await hook(page, 'turn')).state, 'none');
    assert.deepEqual((await hook(page, 'pcConfig')).iceServers, []);
    await login(page, '5001', 'pass5001');
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    const again = await readyCredentials(page, turn);
    assert.ok(again.fetchedAt > turn.fetchedAt);
    assert.equal(exchanges.filter((e) => e.status === 200).length, 2);
    await context.close();
  });

  test('localStorage forces relay-only ICE for tests', async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    await context.addInitScript((key) => localStorage.setItem(key, 'relay'), POLICY_KEY);
    const page = await context.newPage();
    await page.goto(`${gateway.url}/`);
    await page.waitForFunction(() => window.gatewaydPhone, null, { timeout: 10_000 });
    assert.equal((await hook(page, 'pcConfig')).iceTransportPolicy, 'relay');
    await page.evaluate((key) => localStorage.setItem(key, 'all'), POLICY_KEY);
    assert.equal((await hook(page, 'pcConfig')).iceTransportPolicy, 'all');
    await page.evaluate((key) => localStorage.setItem(key, 'anything else'), POLICY_KEY);
    assert.equal((await hook(page, 'pcConfig')).iceTransportPolicy, undefined);
    await context.close();
  });

  test('a wrong password gets no credentials and the page does not ask', async () => {
    let exchanges;
    const { context, page } = await openPhone(browser, gateway.url, '5003', 'not-the-password', {
      beforeLoad: (p) => { exchanges = recordExchanges(p); },
    });
    await waitForRegState(page, /^Registration failed: .+/, { timeout: 15_000 });
    assert.equal((await hook(page, 'turn')).state, 'none');
    assert.deepEqual(exchanges, [], 'credentials are only asked for once the registrar accepted the password');
    await context.close();
  });
});
