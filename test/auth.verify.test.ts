import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportSPKI, type JWTPayload } from 'jose';
import { pino, type Logger } from 'pino';
import { AuthError, type AuthCheck } from '../src/auth/errors.js';
import { parseAuthConfig } from '../src/auth/config.js';
import { TokenVerifier } from '../src/auth/verifier.js';
import { isExpired } from '../src/auth/identity.js';
import { startIssuer, startJwksServer, makeKey, signWith, type TestIssuer, type JwksServer, type LocalKey } from './harness/issuer.js';
import { freePort } from './harness/ports.js';

const dir = mkdtempSync(join(tmpdir(), 'scopegate-auth-'));

async function rejectsWith(p: Promise<unknown>, check: AuthCheck, token?: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof AuthError, `expected AuthError, got ${String(err)}`);
    assert.equal(err.code, '28000');
    assert.equal(err.check, check);
    assert.match(err.message, new RegExp(check));
    if (token !== undefined) {
      assert.ok(!err.message.includes(token) && !(err.detail ?? '').includes(token), 'error must not echo the token');
    }
    return true;
  });
}

function captureLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger: Logger = pino({ level: 'debug' }, { write: (s: string) => { lines.push(JSON.parse(s) as Record<string, unknown>); } });
  return { logger, lines };
}

const nowSec = () => Math.floor(Date.now() / 1000);

describe('tokens from a real authorization server (oidc-provider)', () => {
  let iss: TestIssuer;
  before(async () => { iss = await startIssuer(); });
  after(async () => { await iss.stop(); });

  test('verifies via OIDC discovery; scopes and subject come through', async () => {
    const cfg = parseAuthConfig({ method: 'oauth', issuer: iss.issuer, audience: 'scopegate', algorithms: ['RS256'] }, dir);
    const v = new TokenVerifier(cfg);
    const token = await iss.token({ scope: 'orders:read admin' });
    const id = await v.verify(token);
    assert.equal(id.via, 'jwt');
    assert.equal(id.sub, iss.clientId);
    assert.deepEqual([...id.scopes].sort(), ['admin', 'orders:read']);
    assert.equal(id.claims.iss, iss.issuer);
    assert.equal(id.tokenHash, createHash('sha256').update(token).digest('hex'));
    assert.ok(id.expiresAt !== null && id.expiresAt > Date.now());
    assert.equal(isExpired(id, Date.now(), 0), false);
    assert.equal(isExpired(id, id.expiresAt, 0), true);
    assert.equal(isExpired(id, id.expiresAt, 1000), false);
  });

  test('verifies via jwks_url', async () => {
    const cfg = parseAuthConfig({ method: 'oauth', issuer: iss.issuer, audience: ['other', 'scopegate'], jwks_url: iss.jwksUrl }, dir);
    const v = new TokenVerifier(cfg);
    const id = await v.verify(await iss.token({ scope: 'orders:write' }));
    assert.deepEqual(id.scopes, ['orders:write']);
  });

  test('opaque token via introspection; revoked and unknown tokens are inactive', async () => {
    process.env.SG_TEST_INTROSPECTION_SECRET = iss.clientSecret;
    const cfg = parseAuthConfig({
      method: 'oauth', issuer: iss.issuer, audience: 'scopegate',
      introspection: { url: iss.introspectionUrl, client_id: iss.clientId, client_secret: 'env:SG_TEST_INTROSPECTION_SECRET' },
    }, dir);
    const v = new TokenVerifier(cfg);
    const opaque = await iss.token({ scope: 'orders:read', opaque: true });
    assert.equal(opaque.split('.').length, 1);
    const id = await v.verify(opaque);
    assert.equal(id.via, 'introspection');
    assert.equal(id.sub, iss.clientId);
    assert.deepEqual(id.scopes, ['orders:read']);
    assert.ok(id.expiresAt !== null);
    // cached until expiry (bounded by cache_ttl): no second introspection
    await v.verify(opaque);
    assert.equal(v.stats.introspections, 1);

    const revoked = await iss.token({ scope: 'orders:read', opaque: true });
    await iss.revoke(revoked);
    await rejectsWith(v.verify(revoked), 'token inactive', revoked);
    await rejectsWith(v.verify('not-a-real-token-at-all'), 'token inactive');
    // JWTs still verify locally with the same config
    assert.equal((await v.verify(await iss.token({ scope: 'admin' }))).via, 'jwt');
  });

  test('wrong client secret for introspection: introspection unavailable', async () => {
    process.env.SG_TEST_BAD_SECRET = 'definitely-wrong';
    const cfg = parseAuthConfig({
      method: 'oauth', issuer: iss.issuer, audience: 'scopegate',
      introspection: { url: iss.introspectionUrl, client_id: iss.clientId, client_secret: 'env:SG_TEST_BAD_SECRET' },
    }, dir);
    await rejectsWith(new TokenVerifier(cfg).verify(await iss.token({ scope: 'admin', opaque: true })), 'introspection unavailable');
  });

  test('opaque token without introspection configured is malformed', async () => {
    const cfg = parseAuthConfig({ method: 'oauth', issuer: iss.issuer, audience: 'scopegate' }, dir);
    await rejectsWith(new TokenVerifier(cfg).verify(await iss.token({ scope: 'admin', opaque: true })), 'malformed token');
  });

  test('issuer stopped: keys fetched earlier still verify new tokens', async () => {
    const local = await startIssuer();
    const cfg = parseAuthConfig({ method: 'oauth', issuer: local.issuer, audience: 'scopegate', jwks_cache_max_age: '1ms' }, dir);
    const v = new TokenVerifier(cfg);
    const t1 = await local.token({ scope: 'orders:read' });
    const t2 = await local.token({ scope: 'orders:write' });
    await v.verify(t1);
    await local.stop();
    await new Promise((r) => setTimeout(r, 5)); // cache now older than jwks_cache_max_age
    const id = await v.verify(t2);
    assert.deepEqual(id.scopes, ['orders:write']);
    assert.equal(v.stats.signatureChecks, 2);
  });
});

describe('negative cases against a local JWKS', () => {
  let srv: JwksServer;
  let keyA: LocalKey;
  let keyB: LocalKey;
  let v: TokenVerifier;
  const claims = (over: JWTPayload = {}): JWTPayload => ({
    iss: srv.issuer, aud: 'scopegate', sub: 'alice', scope: 'orders:read', iat: nowSec(), exp: nowSec() + 300, ...over,
  });
  before(async () => {
    keyA = await makeKey('RS256', 'a');
    keyB = await makeKey('RS256', 'b');
    srv = await startJwksServer([keyA.publicJwk]);
    v = new TokenVerifier(parseAuthConfig({ method: 'oauth', issuer: srv.issuer, audience: 'scopegate', jwks_url: srv.jwksUrl, clock_tolerance: '5s' }, dir));
  });
  after(async () => { await srv.stop(); });

  test('a good token verifies', async () => {
    const id = await v.verify(await signWith(keyA, claims()));
    assert.equal(id.sub, 'alice');
  });
  test('bad signature: signed by another key with the same kid', async () => {
    const t = await signWith({ ...keyB, kid: 'a' }, claims());
    await rejectsWith(v.verify(t), 'bad signature', t);
  });
  test('unknown kid', async () => {
    await rejectsWith(v.verify(await signWith({ ...keyB, kid: 'nope' }, claims())), 'unknown signing key');
  });
  test('wrong issuer', async () => {
    await rejectsWith(v.verify(await signWith(keyA, claims({ iss: 'https://evil.example.com' }))), 'wrong issuer');
  });
  test('wrong audience', async () => {
    await rejectsWith(v.verify(await signWith(keyA, claims({ aud: 'someone-else' }))), 'wrong audience');
  });
  test('expired (beyond clock tolerance)', async () => {
    await rejectsWith(v.verify(await signWith(keyA, claims({ exp: nowSec() - 60, iat: nowSec() - 120 }))), 'token expired');
  });
  test('expired within clock tolerance still verifies', async () => {
    await v.verify(await signWith(keyA, claims({ exp: nowSec() - 2 })));
  });
  test('nbf in the future', async () => {
    await rejectsWith(v.verify(await signWith(keyA, claims({ nbf: nowSec() + 600 }))), 'token not yet valid');
  });
  test('iat in the future', async () => {
    await rejectsWith(v.verify(await signWith(keyA, claims({ iat: nowSec() + 600 }))), 'token issued in the future');
  });
  test('no exp', async () => {
    const c = claims();
    delete c.exp;
    await rejectsWith(v.verify(await signWith(keyA, c)), 'missing expiry');
  });
  test('malformed tokens', async () => {
    await rejectsWith(v.verify(''), 'malformed token');
    await rejectsWith(v.verify('abc.def.ghi'), 'malformed token');
    await rejectsWith(v.verify('x'.repeat(20_000)), 'malformed token');
    // correctly signed, but the payload is not a JSON claims set
    const { CompactSign } = await import('jose');
    const notJson = await new CompactSign(new TextEncoder().encode('not json')).setProtectedHeader({ alg: 'RS256', kid: 'a' }).sign(keyA.privateKey);
    await rejectsWith(v.verify(notJson), 'malformed token');
    // a tampered payload fails the signature
    const good = await signWith(keyA, claims());
    const [h, , s] = good.split('.');
    await rejectsWith(v.verify(`${h}.${Buffer.from(JSON.stringify(claims({ scope: 'admin' }))).toString('base64url')}.${s}`), 'bad signature');
  });
  test('missing scope claim', async () => {
    const c = claims();
    delete c.scope;
    await rejectsWith(v.verify(await signWith(keyA, c)), 'missing scope claim');
  });
  test('scp array is understood when scope is absent', async () => {
    const c = claims({ scp: ['orders:read', 'admin'] });
    delete c.scope;
    assert.deepEqual((await v.verify(await signWith(keyA, c))).scopes, ['orders:read', 'admin']);
  });
  test('alg none', async () => {
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const t = `${enc({ alg: 'none', typ: 'JWT', kid: 'a' })}.${enc(claims())}.`;
    await rejectsWith(v.verify(t), 'algorithm not allowed', t);
  });
  test('HS256 signed with the RSA public key (algorithm confusion)', async () => {
    const { importJWK } = await import('jose');
    const pub = await importJWK(keyA.publicJwk, 'RS256', { extractable: true });
    const pem = await exportSPKI(pub as Parameters<typeof exportSPKI>[0]);
    const t = await signWith({ privateKey: new TextEncoder().encode(pem), alg: 'HS256', kid: 'a' }, claims());
    await rejectsWith(v.verify(t), 'algorithm not allowed');
    // the same against a PEM public-key config
    const pemFile = join(dir, 'a.pem');
    writeFileSync(pemFile, pem);
    const vp = new TokenVerifier(parseAuthConfig({ method: 'oauth', issuer: srv.issuer, audience: 'scopegate', public_key_file: 'a.pem' }, dir));
    await rejectsWith(vp.verify(t), 'algorithm not allowed');
    await vp.verify(await signWith(keyA, claims()));
  });
  test('an algorithm outside the allow-list', async () => {
    const ec = await makeKey('ES256', 'ec1');
    srv.publish([keyA.publicJwk, ec.publicJwk]);
    const strict = new TokenVerifier(parseAuthConfig({ method: 'oauth', issuer: srv.issuer, audience: 'scopegate', jwks_url: srv.jwksUrl, algorithms: ['RS256'] }, dir));
    await rejectsWith(strict.verify(await signWith(ec, claims())), 'algorithm not allowed');
    srv.publish([keyA.publicJwk]);
  });
  test('failures are logged with the check and without the token', async () => {
    const { logger, lines } = captureLogger();
    const lv = new TokenVerifier(v.cfg, { logger });
    const t = await signWith(keyA, claims({ aud: 'x' }));
    await rejectsWith(lv.verify(t, { address: '10.1.2.3', user: 'alice' }), 'wrong audience');
    const line = lines.find((l) => l.check === 'wrong audience');
    assert.ok(line, 'failure logged');
    assert.equal(line.address, '10.1.2.3');
    assert.ok(!JSON.stringify(lines).includes(t));
    assert.ok(!JSON.stringify(lines).includes(t.split('.')[2]!));
  });
});

describe('JWKS rotation and outages', () => {
  test('a new key is picked up on unknown kid; cached keys survive the issuer going away', async () => {
    const k1 = await makeKey('RS256', 'k1');
    const k2 = await makeKey('ES256', 'k2');
    const srv = await startJwksServer([k1.publicJwk]);
    const cfg = parseAuthConfig({ method: 'oauth', issuer: srv.issuer, audience: 'scopegate', jwks_cooldown: 0 }, dir); // discovery
    const v = new TokenVerifier(cfg);
    const claims = (): JWTPayload => ({ iss: srv.issuer, aud: 'scopegate', sub: 's', scope: 'admin', exp: nowSec() + 300, jti: Math.random().toString(36) });
    await v.verify(await signWith(k1, claims()));
    assert.equal(srv.discoveryHits, 1);
    assert.equal(srv.jwksHits, 1);
    // rotation: publish k2; a token with kid k2 triggers a refresh
    srv.publish([k1.publicJwk, k2.publicJwk]);
    const id = await v.verify(await signWith(k2, claims()));
    assert.equal(id.sub, 's');
    assert.equal(srv.jwksHits, 2);
    // known kids need no refetch
    await v.verify(await signWith(k1, claims()));
    assert.equal(srv.jwksHits, 2);
    // issuer gone: both cached keys still verify; an unknown kid stays unknown
    await srv.stop();
    await v.verify(await signWith(k1, claims()));
    await v.verify(await signWith(k2, claims()));
    const k3 = await makeKey('RS256', 'k3');
    await rejectsWith(v.verify(await signWith(k3, claims())), 'unknown signing key');
    await v.verify(await signWith(k1, claims()));
  });

  test('unknown kid refresh respects the cooldown', async () => {
    const k1 = await makeKey('RS256', 'c1');
    const srv = await startJwksServer([k1.publicJwk]);
    const v = new TokenVerifier(parseAuthConfig({ method: 'oauth', issuer: srv.issuer, audience: 'scopegate', jwks_url: srv.jwksUrl, jwks_cooldown: '1h' }, dir));
    const claims = (): JWTPayload => ({ iss: srv.issuer, aud: 'scopegate', sub: 's', scope: 'admin', exp: nowSec() + 300 });
    await v.verify(await signWith(k1, claims()));
    const stranger = await makeKey('RS256', 'stranger');
    for (let i = 0; i < 5; i++) await rejectsWith(v.verify(await signWith(stranger, claims())), 'unknown signing key');
    assert.equal(srv.jwksHits, 1);
    await srv.stop();
  });

  test('issuer down at startup: fails with signing keys unavailable, then recovers lazily', async () => {
    const port = await freePort();
    const issuer = `http://127.0.0.1:${port}`;
    const k = await makeKey('EdDSA', 'ed');
    const v = new TokenVerifier(parseAuthConfig({ method: 'oauth', issuer, audience: 'scopegate', jwks_cooldown: 0 }, dir));
    const t = await signWith(k, { iss: issuer, aud: 'scopegate', sub: 'bob', scope: 'orders:read', exp: nowSec() + 300 });
    await rejectsWith(v.verify(t), 'signing keys unavailable', t);
    const srv = await startJwksServer([k.publicJwk], { port });
    try {
      const id = await v.verify(t);
      assert.equal(id.sub, 'bob');
    } finally {
      await srv.stop();
    }
  });
});

describe('verified-token cache', () => {
  test('a second verify of the same token runs no crypto; keys are sha256 digests', async () => {
    const k = await makeKey('RS256', 'cache');
    const srv = await startJwksServer([k.publicJwk]);
    try {
      const v = new TokenVerifier(parseAuthConfig({ method: 'oauth', issuer: srv.issuer, audience: 'scopegate', jwks_url: srv.jwksUrl }, dir));
      const t = await signWith(k, { iss: srv.issuer, aud: 'scopegate', sub: 's', scope: 'admin', exp: nowSec() + 300 });
      const a = await v.verify(t);
      assert.equal(v.stats.signatureChecks, 1);
      const b = await v.verify(t);
      assert.equal(v.stats.signatureChecks, 1);
      assert.equal(v.stats.cacheHits, 1);
      assert.equal(a, b);
      const keys = v.cacheKeys();
      assert.deepEqual(keys, [createHash('sha256').update(t).digest('hex')]);
      for (const part of t.split('.')) assert.ok(!keys[0]!.includes(part));
      // concurrent logins with one new token share one verification
      const t2 = await signWith(k, { iss: srv.issuer, aud: 'scopegate', sub: 'par', scope: 'admin', exp: nowSec() + 300 });
      const all = await Promise.all([v.verify(t2), v.verify(t2), v.verify(t2)]);
      assert.ok(all.every((x) => x === all[0]));
      assert.equal(v.stats.signatureChecks, 2);
      v.clearCache();
      await v.verify(t);
      assert.equal(v.stats.signatureChecks, 3);
      // a different token is verified
      await v.verify(await signWith(k, { iss: srv.issuer, aud: 'scopegate', sub: 's2', scope: 'admin', exp: nowSec() + 300 }));
      assert.equal(v.stats.signatureChecks, 4);
      // failures are not cached
      const bad = await signWith(k, { iss: srv.issuer, aud: 'nope', sub: 's', scope: 'admin', exp: nowSec() + 300 });
      await rejectsWith(v.verify(bad), 'wrong audience');
      await rejectsWith(v.verify(bad), 'wrong audience');
      assert.equal(v.stats.signatureChecks, 6);
    } finally {
      await srv.stop();
    }
  });

  test('a cached entry ends at the token expiry', async () => {
    const k = await makeKey('RS256', 'exp');
    const srv = await startJwksServer([k.publicJwk]);
    try {
      let now = Date.now();
      const cfg = parseAuthConfig({ method: 'oauth', issuer: srv.issuer, audience: 'scopegate', jwks_url: srv.jwksUrl, clock_tolerance: 0 }, dir);
      const v = new TokenVerifier(cfg, { now: () => now });
      const t = await signWith(k, { iss: srv.issuer, aud: 'scopegate', sub: 's', scope: 'admin', exp: Math.floor(now / 1000) + 10 });
      await v.verify(t);
      await v.verify(t);
      assert.equal(v.stats.signatureChecks, 1);
      now += 11_000;
      await rejectsWith(v.verify(t), 'token expired');
      assert.equal(v.stats.signatureChecks, 2);
    } finally {
      await srv.stop();
    }
  });

  test('the cache is bounded (LRU)', async () => {
    const k = await makeKey('RS256', 'lru');
    const srv = await startJwksServer([k.publicJwk]);
    try {
      const v = new TokenVerifier(parseAuthConfig({ method: 'oauth', issuer: srv.issuer, audience: 'scopegate', jwks_url: srv.jwksUrl, token_cache_size: 2 }, dir));
      const mk = (sub: string) => signWith(k, { iss: srv.issuer, aud: 'scopegate', sub, scope: 'admin', exp: nowSec() + 300 });
      const [t1, t2, t3] = [await mk('1'), await mk('2'), await mk('3')];
      await v.verify(t1); await v.verify(t2); await v.verify(t1); await v.verify(t3);
      assert.equal(v.cacheKeys().length, 2);
      await v.verify(t1); // still cached (recently used)
      assert.equal(v.stats.signatureChecks, 3);
      await v.verify(t2); // evicted
      assert.equal(v.stats.signatureChecks, 4);
    } finally {
      await srv.stop();
    }
  });
});
