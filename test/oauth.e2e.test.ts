/**
 * OAuth login end to end: a real PostgreSQL 18, a real authorization server (oidc-provider,
 * client_credentials), a local JWKS server for forged tokens, and the real scopegate CLI.
 *
 * scopegate instances (one process each, so their failure limiters and caches are separate):
 *   disco  – keys by OIDC discovery from the oidc-provider issuer; rules: user `saslonly` →
 *            OAUTHBEARER, everyone else → password; log level debug (token cache test)
 *   jwks   – same issuer, explicit jwks_url
 *   forged – issuer/JWKS of the local JWKS server; login role `sg_login`, min_pool_size 0:
 *            every failure case runs here, before any success, so pg_stat_activity shows
 *            whether a failed login ever reached Postgres
 *   hs     – HS256 dev secret (env:SG_SECRET), clock_tolerance 0s, user_claim sub: expiry
 *            during a session, `scopegate token`, user claim
 *   slow   – HS256, failure_delay { after: 2, delay: 200ms }: the slow-down of failures
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { decodeJwt, decodeProtectedHeader, SignJWT, type JWTPayload } from 'jose';
import pg from 'pg';
import postgres from 'postgres';
import { runProcess } from './harness/process.js';
import { startPostgres, SUPERPASS, SUPERUSER, type TestPostgres } from './harness/postgres.js';
import { startScopegate, CLI, type LogLine, type RunningScopegate } from './harness/scopegate.js';
import { AUDIENCE, makeKey, signWith, startIssuer, startJwksServer, type JwksServer, type LocalKey, type TestIssuer } from './harness/issuer.js';
import { errorFields, firstError, RawClient, rows, startupPacket, typed, waitFor, type Msg } from './harness/rawclient.js';

const PSQL = '/usr/bin/psql';
const PGBENCH = '/usr/bin/pgbench';
const LOGIN_ROLE = 'sg_login';
const LOGIN_PASS = 'sg-login-pw';
const HS_ISSUER = 'https://dev.scopegate.test';
const SG_SECRET = randomBytes(32).toString('base64url');
const HS_KEY = new TextEncoder().encode(SG_SECRET);

/** AuthenticationRequest codes. */
const AUTH_OK = 0;
const AUTH_CLEARTEXT = 3;
const AUTH_SASL = 10;
const AUTH_SASL_CONTINUE = 11;
const AUTH_SASL_FINAL = 12;

let db: TestPostgres;
let issuer: TestIssuer;
let jwks: JwksServer;
let key1: LocalKey;
let key2: LocalKey;
let disco: RunningScopegate;
let jwksSg: RunningScopegate;
let forged: RunningScopegate;
let hs: RunningScopegate;
let slow: RunningScopegate;
const tokensSeen: string[] = [];

const nowSec = (): number => Math.floor(Date.now() / 1000);
const sha16 = (t: string): string => createHash('sha256').update(t, 'utf8').digest('hex').slice(0, 16);

function cstr(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

/** A valid claim set for the forged instance's issuer. */
function forgedClaims(over: JWTPayload = {}): JWTPayload {
  const now = nowSec();
  return { iss: jwks.issuer, aud: AUDIENCE, sub: 'alice', scope: 'orders:read', iat: now, exp: now + 600, ...over };
}

async function hsToken(claims: JWTPayload): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(HS_KEY);
}

function authCode(m: Msg): number {
  assert.equal(m.type, 'R', `expected an authentication request, got '${m.type}'`);
  return m.body.readInt32BE(0);
}

interface LoginResult {
  /** The server's first authentication request type (3 cleartext, 10 SASL). */
  firstAuth: number;
  /** Everything after the password message: through ReadyForQuery, or until the server closed. */
  msgs: Msg[];
  client: RawClient;
}

/** Cleartext-password login over a raw socket. Success leaves the client open; failure closed. */
async function passwordLogin(port: number, user: string, token: string, database = 'app'): Promise<LoginResult> {
  const client = await RawClient.connect(port);
  client.write(startupPacket({ user, database }));
  const first = await client.read();
  const firstAuth = authCode(first);
  assert.equal(firstAuth, AUTH_CLEARTEXT, 'expected AuthenticationCleartextPassword');
  client.write(typed('p', cstr(token)));
  const msgs: Msg[] = [];
  for (;;) {
    let m: Msg;
    try {
      m = await client.read();
    } catch (err) {
      await client.closed;
      return { firstAuth, msgs, client };
    }
    msgs.push(m);
    if (m.type === 'Z') return { firstAuth, msgs, client };
    if (m.type === 'E') {
      msgs.push(...(await client.readUntilClosed()));
      await client.closed;
      return { firstAuth, msgs, client };
    }
  }
}

/** SASLInitialResponse for OAUTHBEARER with the given GS2/kvpairs payload. */
function saslInitial(data: Buffer, mechanism = 'OAUTHBEARER'): Buffer {
  const len = Buffer.alloc(4);
  len.writeInt32BE(data.length, 0);
  return typed('p', Buffer.concat([cstr(mechanism), len, data]));
}

function bearerPayload(token: string | null): Buffer {
  return Buffer.from(token === null ? 'n,,\x01auth=\x01\x01' : `n,,\x01auth=Bearer ${token}\x01\x01`, 'latin1');
}

/** Asserts a 28000 FATAL naming `check`, with no field echoing `token`. */
function assertAuthFailure(msgs: Msg[], check: RegExp, token: string | null): Record<string, string> {
  const err = firstError(msgs);
  assert.ok(err, `expected an ErrorResponse, got ${msgs.map((m) => m.type).join(',')}`);
  assert.equal(err.C, '28000', JSON.stringify(err));
  assert.equal(err.S, 'FATAL', JSON.stringify(err));
  assert.match(err.M ?? '', check);
  if (token !== null) {
    for (const [f, v] of Object.entries(err)) assert.ok(!v.includes(token), `field ${f} of the error contains the token`);
  }
  assert.ok(!msgs.some((m) => m.type === 'Z'), 'no ReadyForQuery after a failed login');
  return err;
}

function assertReady(msgs: Msg[]): void {
  assert.equal(firstError(msgs), undefined, `unexpected error: ${JSON.stringify(firstError(msgs))}`);
  assert.equal(authCode(msgs[0]!), AUTH_OK);
  assert.equal(msgs[msgs.length - 1]!.type, 'Z');
}

async function selectOne(c: RawClient): Promise<void> {
  const r = await c.query('SELECT 1 AS one');
  assert.equal(firstError(r), undefined, JSON.stringify(firstError(r)));
  assert.deepEqual(rows(r), [['1']]);
}

async function sessionsOf(role: string): Promise<number> {
  const r = await db.sql(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = '${role}'`);
  return (r.rows[0] as { n: number }).n;
}


function cliToken(args: string[], env: Record<string, string>): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'token', ...args], { env: { ...process.env, ...env }, timeout: 30_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : -1;
      resolve({ code, out: stdout, err: stderr });
    });
  });
}

function authFailedLines(sg: RunningScopegate): LogLine[] {
  return sg.logs.filter((l) => l.msg === 'authentication failed');
}

const lenient = { failure_delay: { after: 1000 } };

before(async () => {
  db = await startPostgres();
  await db.sql(`CREATE ROLE ${LOGIN_ROLE} LOGIN PASSWORD '${LOGIN_PASS}'`);
  issuer = await startIssuer();
  key1 = await makeKey('RS256');
  key2 = await makeKey('RS256');
  jwks = await startJwksServer([key1.publicJwk]);
  const appDb = { app: { url: db.url('postgres'), pool_size: 4 } };
  disco = await startScopegate({
    databases: appDb,
    pool: { mode: 'transaction' },
    log: { level: 'debug', audit: 'off' },
    auth: {
      method: 'oauth',
      mechanisms: ['password', 'oauthbearer'],
      issuer: issuer.issuer,
      audience: AUDIENCE,
      oauthbearer_scope: 'orders:read',
      rules: [{ user: 'saslonly', mechanism: 'oauthbearer' }],
      ...lenient,
    },
  });
  jwksSg = await startScopegate({
    databases: appDb,
    pool: { mode: 'transaction' },
    log: { level: 'info', audit: 'off' },
    auth: { method: 'oauth', issuer: issuer.issuer, audience: AUDIENCE, jwks_url: issuer.jwksUrl, ...lenient },
  });
  forged = await startScopegate({
    databases: { app: { url: db.url('postgres', LOGIN_ROLE, LOGIN_PASS), pool_size: 2, min_pool_size: 0 } },
    pool: { mode: 'transaction', min_pool_size: 0 },
    log: { level: 'info', audit: 'off' },
    auth: { method: 'oauth', issuer: jwks.issuer, audience: AUDIENCE, jwks_url: jwks.jwksUrl, ...lenient },
  });
  const hsAuth = { method: 'oauth', issuer: HS_ISSUER, audience: AUDIENCE, secret: 'env:SG_SECRET', clock_tolerance: '0s' };
  hs = await startScopegate({
    databases: { ...appDb, app_session: { url: db.url('postgres'), pool_size: 2, pool_mode: 'session' } },
    pool: { mode: 'transaction' },
    log: { level: 'info', audit: 'off' },
    auth: {
      ...hsAuth,
      user_claim: 'sub',
      mechanisms: ['password', 'oauthbearer'],
      rules: [{ user: ['sasl-erin', 'sasl-frank'], mechanism: 'oauthbearer' }],
      ...lenient,
    },
  }, { SG_SECRET });
  slow = await startScopegate({
    databases: appDb,
    pool: { mode: 'transaction' },
    log: { level: 'info', audit: 'off' },
    auth: { ...hsAuth, failure_delay: { after: 2, delay: '200ms', max_delay: '1s', window: '60s' } },
  }, { SG_SECRET });
});

after(async () => {
  // No scopegate log line may ever contain a token.
  const all = [disco, jwksSg, forged, hs, slow].filter(Boolean).flatMap((s) => s.logs.map((l) => JSON.stringify(l)).concat(s.stderr));
  for (const s of [slow, hs, forged, jwksSg, disco]) if (s) await s.stop();
  if (jwks) await jwks.stop();
  if (issuer) await issuer.stop();
  if (db) await db.stop();
  for (const t of tokensSeen) assert.ok(!all.some((l) => l.includes(t)), 'a scopegate log line contains a token');
});

describe('tokens from the real authorization server as the password', () => {
  it('oidc-provider issues a JWT access token for the scopegate audience', async () => {
    const t = await issuer.token({ scope: 'orders:read' });
    tokensSeen.push(t);
    const claims = decodeJwt(t);
    assert.equal(claims.iss, issuer.issuer);
    assert.equal(claims.aud, AUDIENCE);
    assert.equal(decodeProtectedHeader(t).alg, 'RS256');
  });

  for (const which of ['discovery', 'jwks_url'] as const) {
    it(`node-postgres (keys via ${which})`, async () => {
      const sg = which === 'discovery' ? disco : jwksSg;
      const token = await issuer.token({ scope: 'orders:read' });
      tokensSeen.push(token);
      const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'alice', database: 'app', password: token });
      c.on('error', () => undefined);
      await c.connect();
      try {
        const r = await c.query('SELECT 1 AS one');
        assert.equal(r.rows[0].one, 1);
        // extended protocol too
        const r2 = await c.query('SELECT $1::int + 1 AS two', [1]);
        assert.equal(r2.rows[0].two, 2);
      } finally {
        await c.end();
      }
    });

    it(`postgres.js (keys via ${which})`, async () => {
      const sg = which === 'discovery' ? disco : jwksSg;
      const token = await issuer.token({ scope: 'orders:read' });
      tokensSeen.push(token);
      const sql = postgres({ host: '127.0.0.1', port: sg.port, database: 'app', username: 'alice', pass: token, prepare: false, max: 1, onnotice: () => undefined });
      try {
        const r = await sql`SELECT 1 AS one`;
        assert.equal(r[0]!.one, 1);
        const r2 = await sql`SELECT ${41}::int + 1 AS n`;
        assert.equal(r2[0]!.n, 42);
      } finally {
        await sql.end({ timeout: 5 });
      }
    });
  }

  it('psql with PGPASSWORD', async () => {
    assert.ok(existsSync(PSQL), `${PSQL} is missing: install postgresql-client to run this test`);
    const token = await issuer.token({ scope: 'orders:read' });
    tokensSeen.push(token);
    const r = await runProcess(PSQL, ['-X', '-At', '-h', '127.0.0.1', '-p', String(disco.port), '-U', 'alice', '-d', 'app', '-c', 'select 1'], { PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' });
    assert.equal(r.code, 0, `psql failed: ${r.err}`);
    assert.equal(r.out.trim(), '1');
  });

  it('pgbench -S with PGPASSWORD (tables made directly against Postgres)', async () => {
    assert.ok(existsSync(PGBENCH), `${PGBENCH} is missing: install postgresql-contrib/postgresql-client to run this test`);
    const init = await runProcess(PGBENCH, ['-i', '-q', '-s', '1', '-h', db.host, '-p', String(db.port), '-U', SUPERUSER, 'postgres'], { PGPASSWORD: SUPERPASS });
    assert.equal(init.code, 0, `pgbench -i failed: ${init.err}`);
    const token = await issuer.token({ scope: 'orders:read' });
    tokensSeen.push(token);
    const r = await runProcess(PGBENCH, ['-n', '-S', '-T', '2', '-c', '2', '-j', '2', '-h', '127.0.0.1', '-p', String(jwksSg.port), '-U', 'alice', 'app'], { PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' });
    const output = r.out + r.err;
    assert.equal(r.code, 0, `pgbench failed: ${output}`);
    assert.doesNotMatch(output, /aborted|error/i);
    const m = /number of transactions actually processed: (\d+)/.exec(output);
    assert.ok(m && Number(m[1]) > 0, output);
  });
});

describe('SASL OAUTHBEARER over a raw socket', () => {
  async function saslStart(user: string): Promise<RawClient> {
    const c = await RawClient.connect(disco.port);
    c.write(startupPacket({ user, database: 'app' }));
    const m = await c.read();
    assert.equal(authCode(m), AUTH_SASL);
    const mechs = m.body.toString('utf8', 4).split('\0').filter((s) => s !== '');
    assert.deepEqual(mechs, ['OAUTHBEARER']);
    return c;
  }

  it('a token: AuthenticationOk directly (no SASLFinal), then ReadyForQuery and queries', async () => {
    const token = await issuer.token({ scope: 'orders:read' });
    tokensSeen.push(token);
    const c = await saslStart('saslonly');
    try {
      c.write(saslInitial(bearerPayload(token)));
      const msgs = await c.readUntilReady();
      assert.equal(msgs[0]!.type, 'R');
      assert.equal(authCode(msgs[0]!), AUTH_OK, 'first answer is AuthenticationOk');
      assert.ok(!msgs.some((m) => m.type === 'R' && m.body.readInt32BE(0) === AUTH_SASL_FINAL), 'no SASLFinal');
      assertReady(msgs);
      await selectOne(c);
    } finally {
      c.close();
    }
  });

  it('a discovery request (empty auth=) gets the JSON challenge, then 28000 after the \\x01', async () => {
    const c = await saslStart('saslonly');
    c.write(saslInitial(bearerPayload(null)));
    const m = await c.read();
    assert.equal(authCode(m), AUTH_SASL_CONTINUE);
    const json = JSON.parse(m.body.toString('utf8', 4)) as Record<string, unknown>;
    assert.equal(json.status, 'invalid_token');
    assert.equal(json['openid-configuration'], `${issuer.issuer}/.well-known/openid-configuration`);
    assert.equal(json.scope, 'orders:read');
    c.write(typed('p', Buffer.from([0x01])));
    const rest = await c.readUntilClosed();
    assertAuthFailure(rest, /./, null);
    await c.closed;
  });

  it('a bad token gets the same challenge, then 28000 naming the check', async () => {
    const bad = await signWith({ ...key2, kid: 'nope' }, { iss: issuer.issuer, aud: AUDIENCE, sub: 'x', scope: 'a', exp: nowSec() + 600 });
    tokensSeen.push(bad);
    const c = await saslStart('saslonly');
    c.write(saslInitial(bearerPayload(bad)));
    const m = await c.read();
    assert.equal(authCode(m), AUTH_SASL_CONTINUE);
    const json = JSON.parse(m.body.toString('utf8', 4)) as Record<string, unknown>;
    assert.equal(json.status, 'invalid_token');
    assert.equal(json['openid-configuration'], `${issuer.issuer}/.well-known/openid-configuration`);
    assert.ok(!m.body.toString('latin1').includes(bad));
    c.write(typed('p', Buffer.from([0x01])));
    const rest = await c.readUntilClosed();
    assertAuthFailure(rest, /unknown signing key/, bad);
  });

  it('mechanism chosen by auth.rules: saslonly gets SASL (10), other users cleartext (3)', async () => {
    for (const [user, want] of [['saslonly', AUTH_SASL], ['alice', AUTH_CLEARTEXT], ['bob', AUTH_CLEARTEXT]] as const) {
      const c = await RawClient.connect(disco.port);
      try {
        c.write(startupPacket({ user, database: 'app' }));
        assert.equal(authCode(await c.read()), want, `first auth request for ${user}`);
      } finally {
        c.close();
      }
    }
  });
});

describe('failed logins never reach Postgres', () => {
  const cases: Array<{ name: string; check: RegExp; token: () => Promise<string> }> = [
    { name: 'bad signature', check: /bad signature/, token: () => signWith({ privateKey: key2.privateKey, alg: 'RS256', kid: key1.kid }, forgedClaims()) },
    { name: 'unknown key (kid)', check: /unknown signing key/, token: () => signWith(key2, forgedClaims()) },
    { name: 'wrong issuer', check: /wrong issuer/, token: () => signWith(key1, forgedClaims({ iss: 'http://127.0.0.1:1/evil' })) },
    { name: 'wrong audience', check: /wrong audience/, token: () => signWith(key1, forgedClaims({ aud: 'some-other-api' })) },
    { name: 'expired', check: /token expired/, token: () => signWith(key1, forgedClaims({ iat: nowSec() - 7200, exp: nowSec() - 3600 })) },
    { name: 'not yet valid (nbf)', check: /token not yet valid/, token: () => signWith(key1, forgedClaims({ nbf: nowSec() + 3600 })) },
    { name: 'malformed (not a JWT)', check: /malformed token/, token: async () => 'this-is-not-a-token' },
    { name: 'malformed (JWT-shaped garbage)', check: /malformed token/, token: async () => 'eyJub3QiOiJqc29u.eyJhIjoxfQ.c2ln' },
    { name: 'missing scope claim', check: /missing scope claim/, token: () => signWith(key1, forgedClaims({ scope: undefined })) },
  ];

  before(async () => {
    assert.equal(await sessionsOf(LOGIN_ROLE), 0, `no ${LOGIN_ROLE} session before the failure cases`);
  });

  for (const c of cases) {
    it(`${c.name} → 28000 naming the check, token not echoed`, async () => {
      const token = await c.token();
      tokensSeen.push(token);
      const r = await passwordLogin(forged.port, 'alice', token);
      assertAuthFailure(r.msgs, c.check, token);
      assert.match(firstError(r.msgs)!.M!, /^OAuth authentication failed: /);
    });
  }

  it(`after all failures pg_stat_activity has no ${LOGIN_ROLE} session; a successful login creates one`, async () => {
    await waitFor(() => authFailedLines(forged).length >= cases.length, 'the failures to be logged');
    assert.equal(await sessionsOf(LOGIN_ROLE), 0, 'a failed login opened a server connection');
    const token = await signWith(key1, forgedClaims());
    tokensSeen.push(token);
    const r = await passwordLogin(forged.port, 'alice', token);
    try {
      assertReady(r.msgs);
      await selectOne(r.client);
      await waitFor(async () => (await sessionsOf(LOGIN_ROLE)) > 0, `a ${LOGIN_ROLE} session after a successful login`);
    } finally {
      r.client.close();
    }
  });
});

describe('user_claim: sub', () => {
  it('startup user different from sub → 28000; equal → ok', async () => {
    const token = await hsToken({ iss: HS_ISSUER, aud: AUDIENCE, sub: 'carol', scope: 'orders:read', iat: nowSec(), exp: nowSec() + 600 });
    tokensSeen.push(token);
    const bad = await passwordLogin(hs.port, 'mallory', token);
    assertAuthFailure(bad.msgs, /user does not match token/, token);
    const good = await passwordLogin(hs.port, 'carol', token);
    try {
      assertReady(good.msgs);
      await selectOne(good.client);
    } finally {
      good.client.close();
    }
  });
});

describe('user_claim over OAUTHBEARER', () => {
  it('a user that does not match the token gets the SASL failure challenge, then 28000 (as PostgreSQL 18 does for a failed user map)', async () => {
    const token = await hsToken({ iss: HS_ISSUER, aud: AUDIENCE, sub: 'sasl-erin', scope: 'orders:read', iat: nowSec(), exp: nowSec() + 600 });
    tokensSeen.push(token);
    // The matching user logs in directly.
    const ok = await RawClient.connect(hs.port);
    try {
      ok.write(startupPacket({ user: 'sasl-erin', database: 'app' }));
      assert.equal(authCode(await ok.read()), AUTH_SASL);
      ok.write(saslInitial(bearerPayload(token)));
      const msgs = await ok.readUntilReady();
      assertReady(msgs);
      await selectOne(ok);
    } finally {
      ok.close();
    }
    // Another user with the same (valid) token: PostgreSQL's auth-oauth.c runs the user map
    // inside validate(); a failure is answered with the JSON challenge, the client's \x01, then 28000.
    const c = await RawClient.connect(hs.port);
    try {
      c.write(startupPacket({ user: 'sasl-frank', database: 'app' }));
      assert.equal(authCode(await c.read()), AUTH_SASL);
      c.write(saslInitial(bearerPayload(token)));
      const m = await c.read();
      assert.ok(m.type === 'R', `expected AuthenticationSASLContinue, got '${m.type}' ${m.type === 'E' ? JSON.stringify(errorFields(m.body)) : ''}`);
      assert.equal(authCode(m), AUTH_SASL_CONTINUE);
      assert.equal((JSON.parse(m.body.toString('utf8', 4)) as { status?: string }).status, 'invalid_token');
      c.write(typed('p', Buffer.from([0x01])));
      assertAuthFailure(await c.readUntilClosed(), /user does not match token/, token);
    } finally {
      c.close();
    }
  });
});

describe('failure slow-down per client address', () => {
  it('after `after` failures the answer is delayed (delay_ms in the log), a success resets it', async () => {
    const base = authFailedLines(slow).length;
    for (let i = 0; i < 4; i++) {
      const r = await passwordLogin(slow.port, 'alice', `garbage-${i}`);
      assertAuthFailure(r.msgs, /malformed token/, `garbage-${i}`);
    }
    await waitFor(() => authFailedLines(slow).length >= base + 4, 'four authentication failed lines');
    const delays = authFailedLines(slow).slice(base, base + 4).map((l) => l.delay_ms);
    assert.deepEqual(delays, [0, 0, 200, 400]);
    for (const l of authFailedLines(slow)) assert.equal(l.addr, '127.0.0.1');

    const token = await hsToken({ iss: HS_ISSUER, aud: AUDIENCE, sub: 'alice', scope: 'orders:read', iat: nowSec(), exp: nowSec() + 600 });
    tokensSeen.push(token);
    const ok = await passwordLogin(slow.port, 'alice', token);
    assertReady(ok.msgs);
    ok.client.close();
    const again = await passwordLogin(slow.port, 'alice', 'garbage-after-success');
    assertAuthFailure(again.msgs, /malformed token/, null);
    await waitFor(() => authFailedLines(slow).length >= base + 5, 'the fifth authentication failed line');
    assert.equal(authFailedLines(slow)[base + 4]!.delay_ms, 0, 'a success clears the failure count');
  });
});

describe('token expiry during a session', () => {
  let exp = 0;
  let token = '';
  const conns: Array<{ c: pg.Client; ended: Promise<void>; errors: Error[] }> = [];

  function open(database: string): Promise<{ c: pg.Client; ended: Promise<void>; errors: Error[] }> {
    const c = new pg.Client({ host: '127.0.0.1', port: hs.port, user: 'dave', database, password: token });
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    const ended = new Promise<void>((resolve) => c.once('end', () => resolve()));
    return c.connect().then(() => { const o = { c, ended, errors }; conns.push(o); return o; });
  }

  function assertExpired(err: unknown): true {
    const e = err as { code?: string; severity?: string; message?: string };
    assert.equal(e.code, '28000');
    assert.equal(e.severity, 'FATAL');
    assert.match(e.message ?? '', /access token expired/);
    assert.ok(!(e.message ?? '').includes(token));
    return true;
  }

  let tx: { c: pg.Client; ended: Promise<void>; errors: Error[] };
  let session: { c: pg.Client; ended: Promise<void>; errors: Error[] };

  before(async () => {
    // 4 s rather than 3: connecting both clients must finish before expiry even on a loaded machine.
    exp = nowSec() + 4;
    token = await hsToken({ iss: HS_ISSUER, aud: AUDIENCE, sub: 'dave', scope: 'orders:read', iat: nowSec(), exp });
    tokensSeen.push(token);
    tx = await open('app');
    session = await open('app_session');
    for (const { c } of [tx, session]) {
      await c.query('BEGIN');
      const inTx = await c.query('SELECT txid_current() AS x');
      assert.ok(inTx.rows[0].x);
    }
    // The one place this file waits for the wall clock: the token must actually expire
    // (clock_tolerance is 0s). Bounded poll on Date.now, not a fixed sleep.
    await waitFor(() => Date.now() >= exp * 1000 + 50, 'the token to expire', 15_000, 50);
  });

  after(async () => {
    for (const { c } of conns) await c.end().catch(() => undefined);
  });

  it('transaction pooling: the running transaction commits; the next one gets FATAL 28000 access token expired and the connection closes', async () => {
    const still = await tx.c.query('SELECT 2 AS two');
    assert.equal(still.rows[0].two, 2);
    await tx.c.query('COMMIT');
    await assert.rejects(tx.c.query('SELECT 3'), assertExpired);
    await within(tx.ended, 10_000, 'the connection to be closed by scopegate');
    assert.ok(tx.errors.every((e) => !e.message.includes(token)));
  });

  it('session pooling: the running transaction commits; the next one gets FATAL 28000 access token expired too', async () => {
    const still = await session.c.query('SELECT 2 AS two');
    assert.equal(still.rows[0].two, 2);
    await session.c.query('COMMIT');
    await assert.rejects(session.c.query('SELECT 3'), assertExpired);
    await within(session.ended, 10_000, 'the connection to be closed by scopegate');
  });
});

/** Awaits `p`, failing after `ms` (a bound, not a sleep). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms); });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe('verified-token cache', () => {
  it('two connections with one token verify it once (one `token accepted` debug line)', async () => {
    const token = await issuer.token({ scope: 'orders:read' });
    tokensSeen.push(token);
    for (let i = 0; i < 2; i++) {
      const r = await passwordLogin(disco.port, 'alice', token);
      assertReady(r.msgs);
      await selectOne(r.client);
      r.client.close();
    }
    // Barrier: a third login with another token logs its own `token accepted`; once it is
    // seen, everything logged before it (by the single ordered stdout stream) is in too.
    const other = await issuer.token({ scope: 'orders:read' });
    tokensSeen.push(other);
    const r3 = await passwordLogin(disco.port, 'alice', other);
    assertReady(r3.msgs);
    r3.client.close();
    await disco.waitForLog((l) => l.msg === 'token accepted' && l.token === sha16(other));
    const hits = disco.logs.filter((l) => l.msg === 'token accepted' && l.token === sha16(token));
    assert.equal(hits.length, 1, `token accepted lines for the reused token: ${hits.length}`);
  });
});

describe('scopegate token (development tokens)', () => {
  it('mints a token from the config that logs in through scopegate with that config', async () => {
    const r = await cliToken(['--config', hs.configFile, '--scope', 'orders:read', '--sub', 'alice', '--claim', 'tenant=acme'], { SG_SECRET });
    assert.equal(r.code, 0, r.err);
    const token = r.out.trim();
    tokensSeen.push(token);
    const claims = decodeJwt(token);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.scope, 'orders:read');
    assert.equal(claims.tenant, 'acme');
    assert.equal(claims.iss, HS_ISSUER);
    const c = new pg.Client({ host: '127.0.0.1', port: hs.port, user: 'alice', database: 'app', password: token });
    c.on('error', () => undefined);
    await c.connect();
    try {
      assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
    } finally {
      await c.end();
    }
  });

  it('fails with a clear message and a non-zero exit without a development key', async () => {
    const r = await cliToken(['--config', disco.configFile, '--scope', 'orders:read', '--sub', 'alice'], {});
    assert.notEqual(r.code, 0);
    assert.equal(r.out.trim(), '', 'nothing on stdout');
    assert.match(r.err, /no development key configured/);
  });
});
