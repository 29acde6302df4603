// The softphone's "Network check" against the gateway: the SIP WebSocket connects and registers,
// a relay candidate is gathered over each TURN transport the gateway offers (UDP, TCP and TLS,
// one throwaway relay-only connection per URI), and a short echo call gives a MOS estimate.
// Then the cases an agent must be able to tell apart: a transport the gateway does not offer
// (a copy of the lab profile without `listen_tcp`), and one offered where nobody listens (the
// page is handed a TLS URI on a closed port). Chromium verifies the TURN/TLS certificate, so it is
// told to trust the lab certificate's key, as in turn-relay.test.mjs.
// Skips when the gateway binary is absent, unless GATEWAYD_REQUIRE=1.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ARTIFACTS, ROOT, chromiumMissing, gatewayMissing, launchBrowser, openPhone, startGateway, waitFor,
  waitForCallState, waitForRegState, writeToneWav,
} from './lib.mjs';

const ADMIN = 'http://127.0.0.1:9090';
const LAB_URIS = ['turn:127.0.0.1:3478?transport=udp', 'turn:127.0.0.1:3478?transport=tcp', 'turns:localhost:5349?transport=tcp'];

/** base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's SPKI list wants. */
function spkiHash(certPath) {
  const pub = execFileSync('openssl', ['x509', '-pubkey', '-noout', '-in', certPath]);
  const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'der'], { input: pub });
  return execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: der }).toString('base64');
}

/** A browser that trusts this gateway's (self-signed) certificate for TURN over TLS. */
const trustingBrowser = (gateway, tone) =>
  launchBrowser({ fakeAudioFile: tone, extraArgs: [`--ignore-certificate-errors-spki-list=${spkiHash(join(gateway.stateDir, 'web.crt'))}`] });

/** A TCP port on 127.0.0.1 that nothing listens on (bound, then released). */
async function closedPort() {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

async function turnAllocations() {
  const text = await (await fetch(`${ADMIN}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('gatewayd_turn_allocations '));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

const networkCheck = (page) => page.evaluate(() => window.gatewaydPhone.networkCheck);
const text = async (page, id) => ((await page.textContent(id)) || '').trim();

/** Signs in as 5001, waits for TURN credentials, runs the check and waits for its end. */
async function runCheck(browser, gateway, { beforeLoad = null } = {}) {
  const { context, page, seen } = await openPhone(browser, gateway.url, '5001', 'pass5001', { query: '?raw-audio=1', beforeLoad });
  await waitForRegState(page, 'Registered', { timeout: 15_000 });
  await waitFor(async () => (await page.evaluate(() => window.gatewaydPhone.turn))?.state === 'ready', {
    what: 'TURN credentials', timeout: 15_000, describe: async () => JSON.stringify(await page.evaluate(() => window.gatewaydPhone.turn)),
  });
  assert.equal((await networkCheck(page)).state, 'idle');
  await page.locator('#net-check').waitFor({ state: 'visible' });
  await waitFor(() => page.locator('#net-check').isEnabled(), { what: '#net-check to be enabled' });
  await page.click('#net-check');
  const result = await waitFor(async () => {
    const r = await networkCheck(page);
    return r.state === 'done' ? r : null;
  }, { what: 'the network check to finish', timeout: 60_000, interval: 250, describe: async () => JSON.stringify(await networkCheck(page)) });
  // The echo call the check made is over, and its statistics stay on screen.
  await waitForCallState(page, /^Ended: /, { timeout: 10_000 });
  return { context, page, seen, result };
}

function assertRegistered(result) {
  assert.equal(result.wss.state, 'registered', JSON.stringify(result.wss));
  assert.match(result.wss.url, /^wss:\/\/127\.0\.0\.1:8443\//);
  assert.ok(result.wss.connectMs >= 0 && result.wss.connectMs < 5000, `WebSocket opened in ${result.wss.connectMs} ms`);
  assert.ok(result.wss.registerMs >= 0 && result.wss.registerMs < 5000, `REGISTER answered in ${result.wss.registerMs} ms`);
  assert.ok(result.wss.sipRttMs >= 0 && result.wss.sipRttMs < 5000, `OPTIONS answered in ${result.wss.sipRttMs} ms`);
}

function assertReachable(result, transport, uri) {
  const t = result.turn[transport];
  assert.equal(t.state, 'reachable', `${transport}: ${JSON.stringify(t)}`);
  assert.equal(t.uri, uri);
  assert.ok(t.ms >= 0 && t.ms < 5000, `${transport} relay in ${t.ms} ms`);
  const probe = result.turnUris.find((u) => u.uri === uri);
  // Where Chromium names the candidate's relay protocol, it is the one the URI asks for.
  if (probe.relayProtocol) assert.equal(probe.relayProtocol, transport);
}

function assertGoodEcho(result) {
  assert.equal(result.echo.state, 'done', JSON.stringify(result.echo));
  assert.equal(result.echo.number, '600');
  assert.ok(result.echo.packetsReceived > 100, `${result.echo.packetsReceived} packets echoed`);
  assert.match(result.echo.codec, /^(PCMU|PCMA)$/);
  assert.ok(result.echo.lossFraction < 0.01, `loss ${result.echo.lossFraction}`);
  assert.ok(result.mos >= 4, `MOS ${result.mos} on loopback (${JSON.stringify(result.echo)})`);
  assert.equal(result.mos, result.echo.mos);
  assert.ok(result.mos <= 4.5);
}

async function assertClean(page, seen) {
  assert.deepEqual(await seen.cspViolations(), [], 'no CSP violations');
  assert.deepEqual(seen.consoleErrors, [], 'no console errors');
  assert.deepEqual(seen.pageErrors, [], 'no uncaught exceptions');
}

/** The check's throwaway connections and its echo call leave no allocation behind. */
async function assertAllocationsReleased(context) {
  await context.close();
  await waitFor(async () => (await turnAllocations()) === 0, {
    what: 'TURN allocations to be released', timeout: 15_000, describe: async () => String(await turnAllocations()),
  });
}

let tmp;
let tone;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'softphone-netcheck-'));
  tone = await writeToneWav(join(tmp, 'tone.wav'), { seconds: 60 });
  await mkdir(ARTIFACTS, { recursive: true });
});
after(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('network check against the lab gateway', { skip: chromiumMissing() || gatewayMissing(), timeout: 240_000 }, () => {
  let gateway;
  let browser;

  before(async () => {
    gateway = await startGateway();
    browser = await trustingBrowser(gateway, tone);
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
  });

  test('WSS registers, UDP, TCP and TLS relays are reachable and the echo call scores MOS >= 4', async () => {
    const { context, page, seen, result } = await runCheck(browser, gateway);
    assertRegistered(result);
    assert.deepEqual(result.turnUris.map((u) => u.uri), LAB_URIS, 'one probe per URI the gateway gave');
    assertReachable(result, 'udp', LAB_URIS[0]);
    assertReachable(result, 'tcp', LAB_URIS[1]);
    assertReachable(result, 'tls', LAB_URIS[2]);
    assertGoodEcho(result);
    assert.equal(result.verdict.grade, 'good');

    assert.match(await text(page, '#net-wss'), /^Registered: connects in \d+ ms, registered in \d+ ms, SIP round trip \d+ ms$/);
    for (const t of ['udp', 'tcp', 'tls']) assert.match(await text(page, `#net-turn-${t}`), /^Reachable: relay in \d+ ms$/);
    assert.match(await text(page, '#net-echo'), /^MOS 4\.\d \(good\): loss 0\.0 %, jitter \d+\.\d ms, round trip \d+ ms$/);
    assert.match(await text(page, '#net-verdict'), /^All good/);
    assert.equal(await page.getAttribute('#net-turn-tls', 'data-tone'), 'ok');
    assert.equal(await text(page, '#net-check'), 'Check again');
    await page.screenshot({ path: join(ARTIFACTS, 'softphone-netcheck.png'), fullPage: true });
    await assertClean(page, seen);
    await assertAllocationsReleased(context);
  });

  test('a TLS relay nobody listens on is unreachable, and the screen says so', async () => {
    const port = await closedPort();
    const nowhere = `turns:localhost:${port}?transport=tcp`;
    // The gateway's answer, with its TLS listener swapped for a port where nothing listens.
    const swapTls = (page) => page.route('**/turn-credentials', async (route) => {
      const res = await route.fetch();
      if (res.status() !== 200) return route.fulfill({ response: res });
      const body = await res.json();
      body.uris = body.uris.map((u) => (u.startsWith('turns:') ? nowhere : u));
      return route.fulfill({ response: res, json: body });
    });
    const { context, page, seen, result } = await runCheck(browser, gateway, { beforeLoad: swapTls });
    assertRegistered(result);
    assertReachable(result, 'udp', LAB_URIS[0]);
    assertReachable(result, 'tcp', LAB_URIS[1]);
    assert.equal(result.turn.tls.state, 'unreachable', JSON.stringify(result.turn.tls));
    assert.equal(result.turn.tls.uri, nowhere);
    assert.ok(result.turn.tls.ms < 5000, `the refused connection is reported before the deadline (${result.turn.tls.ms} ms)`);
    assertGoodEcho(result);
    assert.equal(result.verdict.grade, 'fair');

    assert.match(await text(page, '#net-turn-tls'), /^Unreachable: /);
    assert.equal(await page.getAttribute('#net-turn-tls', 'data-tone'), 'bad');
    assert.match(await text(page, '#net-turn-udp'), /^Reachable/);
    assert.match(await text(page, '#net-verdict'), /TLS are unreachable from your network/);
    await assertClean(page, seen);
    await assertAllocationsReleased(context);
  });
});

/** The lab profile with `[turn]` offering no TCP listener. */
async function noTcpProfile(dir) {
  const lab = await readFile(join(ROOT, 'profiles', 'lab.toml'), 'utf8');
  const profile = lab.replace(/^listen_tcp = .*\n/m, '');
  assert.notEqual(profile, lab, 'the lab profile has the listen_tcp line this test removes');
  const path = join(dir, 'netcheck-no-tcp.toml');
  await writeFile(path, profile);
  return path;
}

describe('network check when the gateway offers no TURN over TCP', { skip: chromiumMissing() || gatewayMissing(), timeout: 180_000 }, () => {
  let gateway;
  let browser;

  before(async () => {
    gateway = await startGateway({ profile: await noTcpProfile(tmp) });
    browser = await trustingBrowser(gateway, tone);
  });
  after(async () => {
    await browser?.close();
    await gateway?.stop();
  });

  test('TCP is "not offered", UDP and TLS are reachable', async () => {
    const { context, page, seen, result } = await runCheck(browser, gateway);
    assertRegistered(result);
    assert.deepEqual(result.turnUris.map((u) => u.uri), [LAB_URIS[0], LAB_URIS[2]]);
    assertReachable(result, 'udp', LAB_URIS[0]);
    assertReachable(result, 'tls', LAB_URIS[2]);
    assert.deepEqual(result.turn.tcp, { state: 'not offered', uri: null, ms: null, error: '', uris: 0, reachableUris: 0 });
    assertGoodEcho(result);
    assert.equal(result.verdict.grade, 'good', 'a transport the gateway does not offer is no fault');

    assert.equal(await text(page, '#net-turn-tcp'), 'Not offered by the gateway');
    assert.match(await text(page, '#net-turn-tls'), /^Reachable/);
    await assertClean(page, seen);
    await assertAllocationsReleased(context);
  });
});
