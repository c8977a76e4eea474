import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { ConfigError } from '../src/errors.js';
import { AuthError } from '../src/auth/errors.js';
import { parseAuthConfig, parseDuration } from '../src/auth/config.js';
import { chooseMechanism, isTransportAllowed } from '../src/auth/mechanism.js';
import { FailureLimiter } from '../src/auth/limiter.js';
import { mintDevToken, runToken, DevKeyMissingError } from '../src/auth/devtoken.js';
import { TokenVerifier } from '../src/auth/verifier.js';
import { checkUser, extractScopes, claimAt } from '../src/auth/scopes.js';
import type { Identity } from '../src/auth/identity.js';

const dir = mkdtempSync(join(tmpdir(), 'scopegate-authcfg-'));
const SECRET = 'a-development-secret-of-at-least-32-bytes!';
process.env.SG_TEST_SECRET = SECRET;
writeFileSync(join(dir, 'secret.txt'), SECRET + '\n');
const base = { method: 'oauth', issuer: 'https://issuer.example.com', audience: 'scopegate' };

function configError(raw: unknown, key: string, problem?: RegExp): void {
  assert.throws(() => parseAuthConfig(raw, dir), (err: unknown) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.key, key);
    if (problem) assert.match(err.message, problem);
    return true;
  });
}

describe('config', () => {
  test('defaults for a minimal oauth config (discovery)', () => {
    const cfg = parseAuthConfig(base, dir);
    assert.equal(cfg.method, 'oauth');
    assert.deepEqual(cfg.mechanisms, ['password', 'oauthbearer']);
    assert.deepEqual(cfg.keySource, { kind: 'discovery' });
    assert.deepEqual(cfg.audience, ['scopegate']);
    assert.equal(cfg.scopeClaim, 'scope');
    assert.equal(cfg.userClaim, null);
    assert.equal(cfg.clockToleranceMs, 30_000);
    assert.equal(cfg.allowInsecure, false);
    assert.ok(cfg.algorithms.includes('RS256') && !cfg.algorithms.some((a) => a.startsWith('HS')));
  });

  test('the full example from the docs parses', () => {
    const cfg = parseAuthConfig({
      ...base,
      mechanisms: ['oauthbearer', 'password'],
      jwks_url: 'https://issuer.example.com/jwks',
      algorithms: ['RS256', 'ES256', 'EdDSA'],
      scope_claim: 'realm_access.scopes',
      user_claim: 'preferred_username',
      clock_tolerance: '30s',
      allow_insecure: false,
      rules: [{ database: 'app', user: '*', address: '127.0.0.1/32', mechanism: 'oauthbearer' }],
      failure_delay: { after: 3, delay: '1s', max_delay: '10s', window: '60s' },
      oauthbearer_scope: 'openid orders:read',
      http_timeout: 2,
    }, dir);
    assert.deepEqual(cfg.keySource, { kind: 'jwks_url', url: 'https://issuer.example.com/jwks' });
    assert.equal(cfg.rules.length, 1);
    assert.equal(cfg.failureDelay.maxDelayMs, 10_000);
    assert.equal(cfg.httpTimeoutMs, 2000);
    assert.equal(cfg.oauthbearerScope, 'openid orders:read');
  });

  test('trust needs nothing else', () => {
    const cfg = parseAuthConfig({ method: 'trust' }, dir);
    assert.equal(cfg.method, 'trust');
    assert.equal(cfg.keySource, null);
  });

  test('durations', () => {
    assert.equal(parseDuration('30s', 'k'), 30_000);
    assert.equal(parseDuration('500ms', 'k'), 500);
    assert.equal(parseDuration('1h', 'k'), 3_600_000);
    assert.equal(parseDuration('2m', 'k'), 120_000);
    assert.equal(parseDuration(1.5, 'k'), 1500);
    assert.equal(parseDuration('10', 'k'), 10_000);
    assert.throws(() => parseDuration('soon', 'auth.clock_tolerance'), /auth\.clock_tolerance/);
    assert.throws(() => parseDuration(-1, 'k'), ConfigError);
  });

  test('errors name the offending key', () => {
    configError('nope', 'auth', /mapping/);
    configError({ ...base, colour: 'blue' }, 'auth.colour', /unknown key/);
    configError({ issuer: 'https://x' }, 'auth.method', /required/);
    configError({ method: 'ldap' }, 'auth.method');
    configError({ method: 'oauth', audience: 'x' }, 'auth.issuer', /required/);
    configError({ method: 'oauth', issuer: 'https://x' }, 'auth.audience', /required/);
    configError({ ...base, issuer: 42 }, 'auth.issuer', /string/);
    configError({ ...base, issuer: 'ftp://x' }, 'auth.issuer', /URL/);
    configError({ ...base, mechanisms: ['password', 'kerberos'] }, 'auth.mechanisms[1]');
    configError({ ...base, mechanisms: ['password', 'password'] }, 'auth.mechanisms', /twice/);
    configError({ ...base, algorithms: ['none'] }, 'auth.algorithms[0]', /never/);
    configError({ ...base, algorithms: ['RS256', 'HS256'] }, 'auth.algorithms[1]', /secret/);
    configError({ ...base, secret: 'env:SG_TEST_SECRET', algorithms: ['RS256'] }, 'auth.algorithms[0]', /secret/);
    configError({ ...base, algorithms: ['XS999'] }, 'auth.algorithms[0]', /unknown/);
    configError({ ...base, jwks_url: 'https://x/jwks', secret: 'env:SG_TEST_SECRET' }, 'auth.secret', /one key source/);
    configError({ ...base, clock_tolerance: 'a while' }, 'auth.clock_tolerance');
    configError({ ...base, allow_insecure: 'yes' }, 'auth.allow_insecure', /true or false/);
    configError({ ...base, scope_claim: 'a..b' }, 'auth.scope_claim');
    configError({ ...base, rules: {} }, 'auth.rules', /list/);
    configError({ ...base, rules: [{ database: 'app' }] }, 'auth.rules[0].mechanism', /required/);
    configError({ ...base, rules: [{ mechanism: 'oauthbearer', address: '300.1.1.1/8' }] }, 'auth.rules[0].address');
    configError({ ...base, rules: [{ mechanism: 'oauthbearer', port: 5 }] }, 'auth.rules[0].port', /unknown key/);
    configError({ ...base, mechanisms: ['password'], rules: [{ mechanism: 'oauthbearer' }] }, 'auth.rules[0].mechanism', /not listed/);
    configError({ ...base, failure_delay: { after: -1 } }, 'auth.failure_delay.after');
    configError({ ...base, failure_delay: { delay: '5s', max_delay: '1s' } }, 'auth.failure_delay.max_delay');
    configError({ ...base, failure_delay: { burst: 1 } }, 'auth.failure_delay.burst');
    configError({ ...base, introspection: { client_id: 'c', client_secret: 'env:SG_TEST_SECRET' } }, 'auth.introspection.url', /required/);
    configError({ ...base, introspection: { url: 'https://x/i', client_secret: 'env:SG_TEST_SECRET' } }, 'auth.introspection.client_id');
    configError({ ...base, introspection: { url: 'https://x/i', client_id: 'c' } }, 'auth.introspection.client_secret');
    configError({ ...base, introspection: { url: 'https://x/i', client_id: 'c', client_secret: 'hunter2' } }, 'auth.introspection.client_secret', /env:NAME or file:PATH/);
    configError({ ...base, jwks_file: 'missing.json' }, 'auth.jwks_file', /cannot read/);
    configError({ ...base, public_key_file: 'secret.txt' }, 'auth.public_key_file', /PEM/);
    configError({ ...base, token_cache_size: 1.5 }, 'auth.token_cache_size', /integer/);
  });

  test('env: and file: secrets', () => {
    const a = parseAuthConfig({ ...base, secret: 'env:SG_TEST_SECRET' }, dir);
    assert.equal(a.keySource?.kind, 'secret');
    assert.deepEqual(a.algorithms, ['HS256']);
    const f = parseAuthConfig({ ...base, secret: 'file:secret.txt' }, dir);
    assert.ok(f.keySource?.kind === 'secret' && Buffer.from(f.keySource.secret).toString() === SECRET, 'trailing newline stripped');
    configError({ ...base, secret: 'env:SG_TEST_UNSET_VARIABLE' }, 'auth.secret', /not set/);
    configError({ ...base, secret: 'file:nope.txt' }, 'auth.secret', /cannot read/);
    configError({ ...base, secret: SECRET }, 'auth.secret', /literal/);
    process.env.SG_TEST_SHORT = 'short';
    configError({ ...base, secret: 'env:SG_TEST_SHORT' }, 'auth.secret', /32 bytes/);
    process.env.SG_TEST_INTRO = 'intro-secret';
    const i = parseAuthConfig({ ...base, introspection: { url: 'https://issuer.example.com/introspect', client_id: 'c', client_secret: 'env:SG_TEST_INTRO', cache_ttl: '1m' } }, dir);
    assert.equal(i.introspection?.clientSecret, 'intro-secret');
    assert.equal(i.introspection?.cacheTtlMs, 60_000);
  });

  test('key files', () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(join(dir, 'ec.pub.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(join(dir, 'ec.key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'e1' }] }));
    writeFileSync(join(dir, 'private-jwks.json'), JSON.stringify({ keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'e1' }] }));
    assert.equal(parseAuthConfig({ ...base, public_key_file: 'ec.pub.pem' }, dir).keySource?.kind, 'public_key_file');
    assert.equal(parseAuthConfig({ ...base, jwks_file: join(dir, 'jwks.json') }, dir).keySource?.kind, 'jwks_file');
    configError({ ...base, jwks_file: 'private-jwks.json' }, 'auth.jwks_file', /public keys only/);
    configError({ ...base, public_key_file: 'ec.key.pem' }, 'auth.public_key_file', /public key/);
    configError({ ...base, dev_private_key_file: 'ec.pub.pem' }, 'auth.dev_private_key_file', /private key/);
    configError({ ...base, public_key_file: 'ec.pub.pem', algorithms: ['RS256'] }, 'auth.algorithms', /fits/);
  });
});

describe('mechanism rules and transport', () => {
  const cfg = parseAuthConfig({
    ...base,
    mechanisms: ['password', 'oauthbearer'],
    rules: [
      { database: 'app', user: '*', address: '127.0.0.1/32', mechanism: 'oauthbearer' },
      { database: ['reports', 'bi'], user: ['svc'], mechanism: 'password' },
      { user: 'robot', address: ['10.0.0.0/8', '::1/128'], mechanism: 'oauthbearer' },
      { address: '::ffff:192.168.0.0/112', mechanism: 'oauthbearer' },
      { database: 'all', user: 'all', address: 'all', mechanism: 'password' },
    ],
  }, dir);
  test('first match wins', () => {
    assert.equal(chooseMechanism(cfg, { database: 'app', user: 'alice', address: '127.0.0.1' }), 'oauthbearer');
    assert.equal(chooseMechanism(cfg, { database: 'app', user: 'alice', address: '::ffff:127.0.0.1' }), 'oauthbearer');
    assert.equal(chooseMechanism(cfg, { database: 'app', user: 'alice', address: '127.0.0.2' }), 'password');
    assert.equal(chooseMechanism(cfg, { database: 'bi', user: 'svc', address: '10.1.1.1' }), 'password');
    assert.equal(chooseMechanism(cfg, { database: 'x', user: 'robot', address: '10.200.0.9' }), 'oauthbearer');
    assert.equal(chooseMechanism(cfg, { database: 'x', user: 'robot', address: '::ffff:10.0.0.1' }), 'oauthbearer');
    assert.equal(chooseMechanism(cfg, { database: 'x', user: 'robot', address: '::1' }), 'oauthbearer');
    assert.equal(chooseMechanism(cfg, { database: 'x', user: 'robot', address: '11.0.0.1' }), 'password');
    assert.equal(chooseMechanism(cfg, { database: 'x', user: 'y', address: '192.168.7.7' }), 'oauthbearer');
    assert.equal(chooseMechanism(cfg, { database: 'x', user: 'y', address: '192.169.0.1' }), 'password');
  });
  test('no rule matches → first mechanism', () => {
    const c2 = parseAuthConfig({ ...base, mechanisms: ['oauthbearer', 'password'], rules: [{ database: 'only', mechanism: 'password' }] }, dir);
    assert.equal(chooseMechanism(c2, { database: 'other', user: 'u', address: '1.2.3.4' }), 'oauthbearer');
    assert.equal(chooseMechanism(c2, { database: 'only', user: 'u', address: '1.2.3.4' }), 'password');
    const c3 = parseAuthConfig({ ...base, rules: [{ address: '2001:db8::/32', mechanism: 'oauthbearer' }] }, dir);
    assert.equal(chooseMechanism(c3, { database: 'd', user: 'u', address: '2001:db8:1::5' }), 'oauthbearer');
    assert.equal(chooseMechanism(c3, { database: 'd', user: 'u', address: '2001:db9::5' }), 'password');
  });
  test('plain TCP from non-loopback is refused unless allow_insecure', () => {
    assert.equal(isTransportAllowed(cfg, { address: '127.0.0.1', tls: false }), true);
    assert.equal(isTransportAllowed(cfg, { address: '::ffff:127.0.0.1', tls: false }), true);
    assert.equal(isTransportAllowed(cfg, { address: '::1', tls: false }), true);
    assert.equal(isTransportAllowed(cfg, { address: '10.0.0.5', tls: false }), false);
    assert.equal(isTransportAllowed(cfg, { address: '::ffff:10.0.0.5', tls: false }), false);
    assert.equal(isTransportAllowed(cfg, { address: '10.0.0.5', tls: true }), true);
    const insecure = parseAuthConfig({ ...base, allow_insecure: true }, dir);
    assert.equal(isTransportAllowed(insecure, { address: '10.0.0.5', tls: false }), true);
  });
});

describe('failure limiter', () => {
  test('delays after N failures, exponentially up to max; success resets; window expires', () => {
    const l = new FailureLimiter({ after: 2, delayMs: 100, maxDelayMs: 350, windowMs: 1000, maxClients: 100 });
    const t0 = 1_000_000;
    assert.equal(l.delayFor('10.0.0.1', t0), 0);
    assert.equal(l.recordFailure('10.0.0.1', t0), 0);
    assert.equal(l.recordFailure('10.0.0.1', t0 + 1), 0);
    assert.equal(l.delayFor('10.0.0.1', t0 + 2), 100);
    assert.equal(l.recordFailure('10.0.0.1', t0 + 2), 100);
    assert.equal(l.recordFailure('::ffff:10.0.0.1', t0 + 3), 200); // same client, mapped form
    assert.equal(l.recordFailure('10.0.0.1', t0 + 4), 350);
    assert.equal(l.recordFailure('10.0.0.1', t0 + 5), 350);
    assert.equal(l.delayFor('10.0.0.2', t0 + 5), 0, 'other clients unaffected');
    l.recordSuccess('10.0.0.1');
    assert.equal(l.delayFor('10.0.0.1', t0 + 6), 0);
    assert.equal(l.recordFailure('10.0.0.1', t0 + 7), 0);
    // window: old failures fall out
    l.recordFailure('10.0.0.1', t0 + 8);
    assert.equal(l.recordFailure('10.0.0.1', t0 + 9), 100);
    assert.equal(l.recordFailure('10.0.0.1', t0 + 2000), 0);
  });
  test('bounded memory', () => {
    const l = new FailureLimiter({ after: 0, delayMs: 10, maxDelayMs: 10, windowMs: 60_000, maxClients: 3 });
    for (let i = 0; i < 10; i++) l.recordFailure(`10.0.0.${i}`, 1);
    assert.equal(l.size, 3);
  });
});

describe('scopes and user claim', () => {
  const id = (claims: Record<string, unknown>): Identity => ({ sub: 's', scopes: [], claims, expiresAt: null, tokenHash: 'h', via: 'jwt' });
  test('dotted paths, scp arrays, exact keys with dots', () => {
    assert.deepEqual(extractScopes({ scope: 'a  b a' }, 'scope'), ['a', 'b']);
    assert.deepEqual(extractScopes({ scp: ['a', 'b'] }, 'scope'), ['a', 'b']);
    assert.deepEqual(extractScopes({ realm: { access: { scopes: ['x'] } } }, 'realm.access.scopes'), ['x']);
    assert.deepEqual(extractScopes({ 'https://x.io/s': 'q' }, 'https://x.io/s'), ['q']);
    assert.deepEqual(extractScopes({ scope: '' }, 'scope'), []);
    assert.throws(() => extractScopes({ scp: ['a'] }, 'perms'), (e: unknown) => e instanceof AuthError && e.check === 'missing scope claim');
    assert.throws(() => extractScopes({ scope: 5 }, 'scope'), (e: unknown) => e instanceof AuthError && e.check === 'missing scope claim');
    assert.equal(claimAt({ a: { b: 1 } }, 'a.c'), undefined);
  });
  test('user_claim must equal the startup user', () => {
    const cfg = parseAuthConfig({ ...base, user_claim: 'preferred_username' }, dir);
    checkUser(cfg, id({ preferred_username: 'alice' }), 'alice');
    for (const [claims, user] of [[{ preferred_username: 'alice' }, 'bob'], [{}, 'alice'], [{ preferred_username: ['alice'] }, 'alice']] as const) {
      assert.throws(() => checkUser(cfg, id(claims), user), (e: unknown) => {
        assert.ok(e instanceof AuthError);
        assert.equal(e.code, '28000');
        assert.equal(e.check, 'user does not match token');
        assert.match(e.message, /user does not match token/);
        return true;
      });
    }
    checkUser(parseAuthConfig(base, dir), id({}), 'anyone');
  });
});

describe('development tokens', () => {
  test('HS256 dev token verifies with the same config; claims and ttl', async () => {
    const cfg = parseAuthConfig({ ...base, secret: 'env:SG_TEST_SECRET', scope_claim: 'ext.scopes' }, dir);
    const t = await mintDevToken(cfg, { sub: 'alice', scope: 'orders:read  orders:write', ttlMs: 120_000, claims: { tenant: 'acme', 'org.id': 7 } });
    assert.equal(decodeProtectedHeader(t).alg, 'HS256');
    const p = decodeJwt(t);
    assert.equal(p.iss, 'https://issuer.example.com');
    assert.equal(p.aud, 'scopegate');
    assert.equal((p.exp ?? 0) - (p.iat ?? 0), 120);
    const id = await new TokenVerifier(cfg).verify(t);
    assert.equal(id.sub, 'alice');
    assert.deepEqual(id.scopes, ['orders:read', 'orders:write']);
    assert.equal(id.claims.tenant, 'acme');
    assert.deepEqual(id.claims.org, { id: 7 });
  });
  test('dev private key (Ed25519) signs, its public half verifies; other configs refuse', async () => {
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(join(dir, 'dev-ed.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const cfg = parseAuthConfig({ ...base, dev_private_key_file: 'dev-ed.pem' }, dir);
    const t = await mintDevToken(cfg, { sub: 'bob', scope: 'admin' });
    assert.equal(decodeProtectedHeader(t).alg, 'EdDSA');
    assert.deepEqual((await new TokenVerifier(cfg).verify(t)).scopes, ['admin']);
    // a different secret config rejects it
    await assert.rejects(new TokenVerifier(parseAuthConfig({ ...base, secret: 'env:SG_TEST_SECRET' }, dir)).verify(t),
      (e: unknown) => e instanceof AuthError && e.check === 'algorithm not allowed');
    await assert.rejects(mintDevToken(parseAuthConfig(base, dir), { sub: 'x', scope: 'y' }), DevKeyMissingError);
  });
  test('runToken prints a token for the config file', async () => {
    const file = join(dir, 'scopegate.yaml');
    writeFileSync(file, `listen: 127.0.0.1:6432\nauth:\n  method: oauth\n  issuer: https://issuer.example.com\n  audience: scopegate\n  secret: file:secret.txt\n`);
    const out: string[] = [];
    const errs: string[] = [];
    const io = { stdout: { write: (x: string) => out.push(x) }, stderr: { write: (x: string) => errs.push(x) } };
    const code = await runToken(['--scope', 'orders:read', '--sub', 'alice', '--ttl', '10m', '--claim', 'tenant=acme', '--claim', 'n=3', '--config', file], io);
    assert.equal(code, 0);
    const token = out.join('').trim();
    const cfg = parseAuthConfig({ ...base, secret: 'env:SG_TEST_SECRET' }, dir);
    const id = await new TokenVerifier(cfg).verify(token);
    assert.equal(id.sub, 'alice');
    assert.equal(id.claims.tenant, 'acme');
    assert.equal(id.claims.n, 3);
    assert.ok(id.expiresAt !== null && id.expiresAt - Date.now() <= 600_000);
    assert.equal(await runToken(['--sub', 'alice', '--config', file], io), 2);
    assert.match(errs.join(''), /--scope and --sub are required/);
    assert.equal(await runToken(['--scope', 'a', '--sub', 'alice', '--config', join(dir, 'nope.yaml')], io), 1);
    assert.match(errs.join(''), /cannot read/);
    assert.equal(await runToken(['--bogus'], io), 2);
  });
});
