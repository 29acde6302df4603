import test from 'node:test';
import assert from 'node:assert/strict';
import { authorization, fetchCredentials, hashHex, parseChallenges, pickChallenge, TurnCredentials } from '../src/turn.js';

// What gatewayd sends: one challenge per algorithm, joined by Headers.get().
const GATEWAY = 'Digest realm="gatewayd-lab", nonce="N1", algorithm=SHA-256, qop="auth", ' +
  'Digest realm="gatewayd-lab", nonce="N1", algorithm=MD5, qop="auth"';

test('parseChallenges splits joined challenges and unquotes values', () => {
  const c = parseChallenges(`Basic realm="x", ${GATEWAY}, Digest realm="a \\"b\\", c", nonce=n, stale=true, Negotiate abc==`);
  assert.deepEqual(c.map((x) => x.scheme), ['basic', 'digest', 'digest', 'digest', 'negotiate']);
  assert.deepEqual(c[1].params, { realm: 'gatewayd-lab', nonce: 'N1', algorithm: 'SHA-256', qop: 'auth' });
  assert.equal(c[2].params.algorithm, 'MD5');
  assert.deepEqual(c[3].params, { realm: 'a "b", c', nonce: 'n', stale: 'true' });
  assert.deepEqual(parseChallenges(''), []);
});

test('pickChallenge prefers SHA-256 and needs qop=auth', () => {
  const c = parseChallenges(GATEWAY);
  assert.equal(pickChallenge(c).params.algorithm, 'SHA-256');
  assert.equal(pickChallenge(c, { sha256: false }).params.algorithm, 'MD5');
  assert.equal(pickChallenge(parseChallenges('Digest realm="r", nonce="n", qop="auth-int"')), null);
  assert.equal(pickChallenge(parseChallenges('Basic realm="r"')), null);
  // No algorithm means MD5 (RFC 7616 section 3.3).
  assert.ok(pickChallenge(parseChallenges('Digest realm="r", nonce="n", qop="auth"'), { sha256: true }));
});

test('authorization matches the RFC 7616 examples (section 3.9.1)', async () => {
  const params = {
    realm: 'http-auth@example.org', nonce: '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v', qop: 'auth',
    opaque: 'FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS',
  };
  const cnonce = 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ';
  const expected = { MD5: '8ca523f5e9506fed4657c9700eebdbec', 'SHA-256': '753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1' };
  for (const algorithm of ['MD5', 'SHA-256']) {
    const ha1 = await hashHex(algorithm, 'Mufasa:http-auth@example.org:Circle of Life');
    const value = await authorization({ challenge: { scheme: 'digest', params: { ...params, algorithm } }, username: 'Mufasa', ha1, uri: '/dir/index.html', cnonce });
    const got = parseChallenges(value)[0].params;
    assert.equal(got.response, expected[algorithm], algorithm);
    assert.equal(got.nc, '00000001');
    assert.equal(got.opaque, params.opaque);
    assert.equal(got.uri, '/dir/index.html');
  }
});

// A stand-in for gatewayd's endpoint: checks the digest the way the server does.
function fakeGateway({ password = 'pass5001', staleFirst = false, status = null } = {}) {
  const seen = [];
  let stale = staleFirst;
  const challenge = (isStale) => new Response('', {
    status: 401,
    headers: [
      ['WWW-Authenticate', `Digest realm="gatewayd-lab", nonce="N${seen.length}", algorithm=SHA-256, qop="auth"${isStale ? ', stale=true' : ''}`],
      ['WWW-Authenticate', `Digest realm="gatewayd-lab", nonce="N${seen.length}", algorithm=MD5, qop="auth"`],
    ],
  });
  const impl = async (path, init) => {
    const auth = init.headers.Authorization;
    seen.push({ path, auth, credentials: init.credentials });
    if (status) return new Response('', { status });
    if (!auth) return challenge(false);
    const p = parseChallenges(auth)[0].params;
    const ha1 = await hashHex(p.algorithm, `${p.username}:gatewayd-lab:${password}`);
    const ha2 = await hashHex(p.algorithm, `GET:${p.uri}`);
    const want = await hashHex(p.algorithm, `${ha1}:${p.nonce}:${p.nc}:${p.cnonce}:auth:${ha2}`);
    if (want !== p.response) return challenge(false);
    if (stale) {
      stale = false;
      return challenge(true);
    }
    const username = `1700043200:${p.username}`;
    return Response.json({ username, password: 'minted', ttl: 43200, uris: ['turn:127.0.0.1:3478?transport=udp'] });
  };
  return { impl, seen };
}

const ha1From = (user, password) => (algorithm, realm) => hashHex(algorithm, `${user}:${realm}:${password}`);

test('fetchCredentials answers the challenge with SHA-256 and returns the credentials', async () => {
  const gw = fakeGateway();
  const c = await fetchCredentials({ path: '/turn-credentials', username: '5001', ha1For: ha1From('5001', 'pass5001'), fetchImpl: gw.impl });
  assert.deepEqual(c, { username: '1700043200:5001', password: 'minted', ttl: 43200, uris: ['turn:127.0.0.1:3478?transport=udp'] });
  assert.equal(gw.seen.length, 2);
  assert.ok(gw.seen.every((r) => r.credentials === 'omit'), 'the browser must not add or prompt for credentials itself');
  assert.equal(parseChallenges(gw.seen[1].auth)[0].params.algorithm, 'SHA-256');
  const md5 = fakeGateway();
  await fetchCredentials({ path: '/turn-credentials', username: '5001', ha1For: ha1From('5001', 'pass5001'), fetchImpl: md5.impl, sha256: false });
  assert.equal(parseChallenges(md5.seen[1].auth)[0].params.algorithm, 'MD5');
});

test('fetchCredentials answers a stale challenge once more and stops on a refused password', async () => {
  const stale = fakeGateway({ staleFirst: true });
  await fetchCredentials({ path: '/turn-credentials', username: '5001', ha1For: ha1From('5001', 'pass5001'), fetchImpl: stale.impl });
  assert.equal(stale.seen.length, 3);
  const wrong = fakeGateway();
  await assert.rejects(
    fetchCredentials({ path: '/turn-credentials', username: '5001', ha1For: ha1From('5001', 'nope'), fetchImpl: wrong.impl }),
    (err) => err.state === 'refused',
  );
  assert.equal(wrong.seen.length, 2, 'one wrong answer, no retry');
  await assert.rejects(
    fetchCredentials({ path: '/turn-credentials', username: '5001', ha1For: ha1From('5001', 'x'), fetchImpl: fakeGateway({ status: 404 }).impl }),
    (err) => err.state === 'unavailable',
  );
});

test('TurnCredentials keeps ICE servers and refreshes at 80 % of the lifetime', async () => {
  let now = 1_000_000;
  const gw = fakeGateway();
  const t = new TurnCredentials({ path: '/turn-credentials', fetchImpl: gw.impl, now: () => now });
  t.start('5001', 'pass5001');
  assert.equal(t.state, 'fetching');
  await t.settled(1000);
  assert.equal(t.state, 'ready');
  assert.equal(t.password, null, 'the password is not kept once hashed');
  assert.equal(t.refreshAt, now + 43200 * 1000 * 0.8);
  assert.deepEqual(t.iceServers(), [{ urls: ['turn:127.0.0.1:3478?transport=udp'], username: '1700043200:5001', credential: 'minted' }]);
  // A refresh needs no password: the HA1s are kept.
  await t.refresh();
  assert.equal(t.state, 'ready');
  // Before a call: nothing to do while fresh, a fetch once the refresh is overdue.
  const asked = gw.seen.length;
  await t.fresh(1000);
  assert.equal(gw.seen.length, asked);
  now += 43200 * 1000;
  assert.deepEqual(t.iceServers(), [], 'expired credentials are not offered');
  await t.fresh(1000);
  assert.equal(gw.seen.length, asked + 2);
  assert.equal(t.iceServers().length, 1);
  t.stop();
  assert.equal(t.state, 'none');
  assert.equal(t.current, null);
});

test('TurnCredentials stops asking after a refused password', async () => {
  const gw = fakeGateway({ password: 'other' });
  const t = new TurnCredentials({ path: '/turn-credentials', fetchImpl: gw.impl });
  t.start('5001', 'pass5001');
  await t.settled(1000);
  assert.equal(t.state, 'refused');
  assert.equal(t.timer, null, 'no retry scheduled');
  t.stop();
});
