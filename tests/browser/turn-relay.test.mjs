// Media through the gateway's own TURN server: the softphone, forced to relay-only ICE, calls the
// echo number with TURN over TLS, on its own port (5349) and on the HTTPS listener itself
// (443-style sharing), and the tone comes back. The page's selected candidate pair is a relay one
// over TLS and the gateway counts the relayed packets on a TLS allocation.
// Chromium verifies the TURN server's certificate: it is told to trust the lab certificate's key
// (and only that) with --ignore-certificate-errors-spki-list, as an operator's trusted CA would.
// Skips when the gateway binary is absent, unless GATEWAYD_REQUIRE=1.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CALL_ENDED, ROOT, chromiumMissing, gatewayMissing, launchBrowser, openPhone, phoneState,
  startGateway, waitFor, waitForAudio, waitForCallState, waitForRegState, writeToneWav,
} from './lib.mjs';

const ADMIN = 'http://127.0.0.1:9090';

/** The lab profile with `[turn]` offering TURN over TLS only, on `tlsAddress`. */
async function tlsOnlyProfile(dir, tlsAddress) {
  const lab = await readFile(join(ROOT, 'profiles', 'lab.toml'), 'utf8');
  const text = lab
    .replace(/^listen_udp = .*\n/m, '')
    .replace(/^listen_tcp = .*\n/m, '')
    .replace(/^listen_tls = .*$/m, `listen_tls = ["${tlsAddress}"]`);
  assert.notEqual(text, lab, 'the lab profile has the [turn] listeners this test rewrites');
  const path = join(dir, `turn-tls-${tlsAddress.replace(/[^0-9]/g, '-')}.toml`);
  await writeFile(path, text);
  return path;
}

/** base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's SPKI list wants. */
function spkiHash(certPath) {
  const pub = execFileSync('openssl', ['x509', '-pubkey', '-noout', '-in', certPath]);
  const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'der'], { input: pub });
  return execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: der }).toString('base64');
}

async function metric(name) {
  const text = await (await fetch(`${ADMIN}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

async function relayedEcho(tone, gateway, expectedUri) {
  const extraArgs = [`--ignore-certificate-errors-spki-list=${spkiHash(join(gateway.stateDir, 'web.crt'))}`];
  const browser = await launchBrowser({ fakeAudioFile: tone, extraArgs });
  try {
    await relayedEchoIn(browser, gateway, expectedUri);
  } finally {
    await browser.close();
  }
}

async function relayedEchoIn(browser, gateway, expectedUri) {
  const forceRelay = (page) => page.addInitScript(() => localStorage.setItem('gatewayd.iceTransportPolicy', 'relay'));
  const { context, page, seen } = await openPhone(browser, gateway.url, '5001', 'pass5001', { query: '?raw-audio=1', beforeLoad: forceRelay });
  try {
    await waitForRegState(page, 'Registered', { timeout: 15_000 });
    const turn = await waitFor(async () => {
      const t = (await phoneState(page)) && (await page.evaluate(() => window.gatewaydPhone.turn));
      return t && t.username ? t : null;
    }, { what: 'TURN credentials for the page', timeout: 10_000 });
    assert.deepEqual(turn.uris, [expectedUri], 'the page is offered the one TLS listener');

    await page.click('#echo-test');
    await waitForCallState(page, 'In call', { timeout: 20_000, failOn: CALL_ENDED });
    const pc = await page.evaluate(() => window.gatewaydPhone.callPcConfig);
    assert.equal(pc.iceTransportPolicy, 'relay');
    const stats = await waitForAudio(page, { above: 0.05, minPackets: 50, label: 'the echoed tone through TURN:' });
    assert.equal(stats.localCandidateType, 'relay', 'the selected pair uses a relayed candidate');
    assert.equal(stats.relayProtocol, 'tls', 'reached over TURN/TLS');
    assert.ok(await metric('gatewayd_turn_allocations ') >= 1, 'an allocation is in place');
    assert.ok(await metric('gatewayd_turn_relayed_packets_total{direction="to_peer"}') >= 50, 'the gateway relayed the audio');
    assert.deepEqual(seen.pageErrors, []);
    assert.deepEqual(seen.consoleErrors, []);
    await page.click('#hangup');
    await waitForCallState(page, CALL_ENDED, { timeout: 10_000 });
  } finally {
    await context.close();
  }
  // Closing the page closes its TLS connections, and their allocations end with them.
  await waitFor(() => /turn: allocation ended .*transport="tls"/.test(gateway.logs()), {
    what: 'a TLS allocation to end', timeout: 15_000, describe: () => gateway.logs().slice(-3000),
  });
}

describe('calls through the gateway\'s TURN server', { skip: chromiumMissing() || gatewayMissing(), timeout: 180_000 }, () => {
  let tone;
  let tmp;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'softphone-turn-'));
    tone = await writeToneWav(join(tmp, 'tone.wav'), { seconds: 60 });
  });
  after(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('relay-only ICE over TURN/TLS on its own port carries the echo call', async () => {
    const gateway = await startGateway({ profile: await tlsOnlyProfile(tmp, '127.0.0.1:5349') });
    try {
      await relayedEcho(tone, gateway, 'turns:localhost:5349?transport=tcp');
    } finally {
      await gateway.stop();
    }
  });

  test('TURN/TLS sharing the HTTPS listener carries the echo call and the page still loads', async () => {
    const gateway = await startGateway({ profile: await tlsOnlyProfile(tmp, '127.0.0.1:8443') });
    try {
      await relayedEcho(tone, gateway, 'turns:localhost:8443?transport=tcp');
    } finally {
      await gateway.stop();
    }
  });
});
