/**
 * The central policy source (issue 13 §1, §2) with TWO real scopegate processes against one
 * source database (its own embedded PostgreSQL, so it can be stopped and started) in front of
 * one application database: pushes applied by both (measured), invalid pushes refused, a
 * hand-written invalid version kept out, revocation by subject and by jti ending open
 * sessions on both instances as the list is read, and a source outage during which both
 * keep serving the last good version (stale) and then pick up the next one.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { embeddedServer, SUPERPASS, SUPERUSER, type EmbeddedServer } from './harness/postgres.js';
import { CLI, startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { runProcess, type ProcessResult } from './harness/process.js';
import { freePort } from './harness/ports.js';
import { AUTH, AUTH_PASSWORD, DB, EXAMPLE_POLICY, SECRET, errorOf, mintToken, pollUntil, startFixture, type Fixture } from './scope.fixture.test.js';

const ADMIN = 'scopegate:admin';
const V1 = readFileSync(EXAMPLE_POLICY, 'utf8');
// V2 differs visibly: orders:read may read customers.email.
const V2 = V1.replace('columns: [id, name, country]', 'columns: [id, name, country, email]');
const EMAIL = 'SELECT email FROM customers ORDER BY id LIMIT 1';

let src: EmbeddedServer;
const srcLog: string[] = [];
let fx: Fixture;
let b: RunningScopegate;
const http: number[] = [];
let sourceUrl: string;

interface Instance { name: string; port: number; http: number; sg: RunningScopegate }
let instances: Instance[];

function cli(args: string[], env: Record<string, string> = {}): Promise<ProcessResult> {
  return runProcess(process.execPath, [CLI, ...args], { SCOPEGATE_POLICY_SOURCE: sourceUrl, PGPASSWORD: SUPERPASS, ...env });
}

function file(name: string, text: string): string {
  const p = join(fx.dir, name);
  writeFileSync(p, text);
  return p;
}

async function push(name: string, text: string): Promise<ProcessResult> {
  return cli(['policy', 'push', file(name, text)]);
}

async function srcSql(text: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: src.url('control') });
  await c.connect();
  try { return await c.query(text, params); } finally { await c.end(); }
}

const tokens = new Map<string, Promise<string>>();
/** A development token (cached per scope and subject), signed with the instances' dev secret. */
function token(scope: string, sub: string): Promise<string> {
  const key = `${scope}\0${sub}`;
  let t = tokens.get(key);
  if (t === undefined) tokens.set(key, (t = mintToken(instances[0]!.sg.configFile, scope, sub)));
  return t;
}

async function connect(i: Instance, scope: string, sub: string, password?: string, database = DB): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port: i.port, user: sub, database, password: password ?? await token(scope, sub) });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

async function showPolicy(i: Instance): Promise<Record<string, string | null>> {
  const c = await connect(i, ADMIN, 'ops', undefined, 'scopegate');
  try {
    const r = await c.query<Record<string, string | null>>('SHOW POLICY');
    return r.rows[0]!;
  } finally {
    await c.end();
  }
}

async function metric(i: Instance, name: string, labels = ''): Promise<number | null> {
  const body = await (await fetch(`http://127.0.0.1:${i.http}/metrics`)).text();
  const line = body.split('\n').find((l) => l.startsWith(`${name}${labels} `) || (labels === '' && l.startsWith(`${name} `)));
  return line === undefined ? null : Number(line.split(' ').pop());
}

function instanceConfig(httpPort: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    databases: { [DB]: { url: fx.pg.url(DB, 'authenticator', AUTH_PASSWORD), pool_size: 4 } },
    auth: AUTH,
    log: { level: 'info' },
    admin: { scope: ADMIN, listen_http: `127.0.0.1:${httpPort}` },
    policy_source: { url: `postgres://${SUPERUSER}@127.0.0.1:${src.port}/control`, password: 'env:SRC_PW', poll: '30s' },
    ...extra,
  };
}

before(async () => {
  src = await embeddedServer({ persistent: true, prefix: 'sg-source-', onLog: (m) => { srcLog.push(m); } });
  await src.server.initialise();
  await src.server.start();
  await src.sql('CREATE DATABASE control');
  sourceUrl = `postgres://${SUPERUSER}@127.0.0.1:${src.port}/control`;
  // The first version, pushed before any instance starts (the CLI creates the schema).
  http.push(await freePort(), await freePort());
  // The application database and its roles; startFixture's own (plain pooler) scopegate is not used.
  // Postgres would let app_reader read customers.email: only the policy version decides.
  fx = await startFixture({ policy: null, setupSql: 'GRANT SELECT (email) ON customers TO app_reader' });
  await fx.sg.stop();
  const first = await push('v1.yaml', V1);
  assert.equal(first.code, 0, first.err);
  assert.match(first.out, /as version 1$/m);
  const a = await startScopegate(instanceConfig(http[0]!), { SG_SECRET: SECRET, SRC_PW: SUPERPASS });
  b = await startScopegate(instanceConfig(http[1]!), { SG_SECRET: SECRET, SRC_PW: SUPERPASS });
  instances = [{ name: 'A', port: a.port, http: http[0]!, sg: a }, { name: 'B', port: b.port, http: http[1]!, sg: b }];
});

after(async () => {
  for (const i of instances ?? []) await i.sg.stop().catch(() => null);
  await fx?.stop();
  await src?.server.stop().catch(() => undefined);
  if (src !== undefined) rmSync(src.parent, { recursive: true, force: true });
});

test('both instances start on version 1 of the source; SHOW POLICY and metrics say where it came from, not stale', async () => {
  for (const i of instances) {
    const p = await showPolicy(i);
    assert.equal(p.version, '1', i.name);
    assert.equal(p.source, sourceUrl, i.name);
    assert.equal(p.stale, 'no', i.name);
    assert.equal(p.revocations, '0', i.name);
    assert.equal(await metric(i, 'scopegate_policy_source_stale'), 0, i.name);
    const c = await connect(i, 'orders:read', 'alice');
    assert.equal((await errorOf(() => c.query(EMAIL))).code, '42501', `${i.name}: email is not granted in version 1`);
    await c.end();
  }
});

test('a pushed version is applied by both instances within one second, without restart (measured)', async () => {
  const r = await push('v2.yaml', V2);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /as version 2$/m);
  // From the row's created_at (the push transaction's start, so an upper bound) to each instance's log line.
  const createdAt = Number((await srcSql('SELECT (extract(epoch FROM created_at) * 1000)::float8 AS t FROM scopegate.policy_versions WHERE version = 2')).rows[0].t);
  const seen = await Promise.all(instances.map(async (i) => {
    const l = await i.sg.waitForLog((x) => x.msg === 'policy reloaded from source' && x.version === '2', 10_000);
    return Math.round(Date.parse(String(l.time)) - createdAt);
  }));
  console.log(`# push -> applied: instance A ${seen[0]} ms, instance B ${seen[1]} ms after the version was written`);
  for (const i of instances) {
    const c = await connect(i, 'orders:read', 'alice');
    assert.equal((await c.query(EMAIL)).rows[0].email, 'ada@example.test', `${i.name} decides with version 2`);
    await c.end();
    assert.equal((await showPolicy(i)).version, '2');
  }
  // Every audit line carries the version that decided it.
  const audit = instances[0]!.sg.logs.filter((l) => l.stream === 'audit' && String(l.statement).includes('email'));
  assert.ok(audit.some((l) => l.policy_version === '2' && l.decision === 'allow'), JSON.stringify(audit.slice(-3)));
  assert.ok(audit.some((l) => l.policy_version === '1' && l.decision === 'deny'), JSON.stringify(audit.slice(-3)));
});

test('an invalid push is refused with the policy file\'s one-line error, nothing is stored, both keep version 2', async () => {
  const before = Number((await srcSql('SELECT count(*) AS n FROM scopegate.policy_versions')).rows[0].n);
  const r = await push('bad.yaml', V2.replace('role: app_reader', 'role: 17'));
  assert.equal(r.code, 2);
  assert.equal(r.err.trim().split('\n').length, 1, r.err);
  assert.match(r.err, /^scopegate policy push: invalid policy .*bad\.yaml: scopes\.orders:read\.role: /);
  assert.equal(Number((await srcSql('SELECT count(*) AS n FROM scopegate.policy_versions')).rows[0].n), before);
  for (const i of instances) assert.equal((await showPolicy(i)).version, '2', i.name);
});

test('a version written by hand that does not validate is logged once, counted, and the running policy kept', async () => {
  await srcSql("INSERT INTO scopegate.policy_versions (version, document) VALUES (3, 'scopes: 5')");
  await srcSql("SELECT pg_notify('scopegate_policy', 'anything: the payload is never trusted')");
  for (const i of instances) {
    await i.sg.waitForLog((l) => l.msg === 'policy source: version is invalid; keeping the running policy' && l.version === '3', 10_000);
    assert.equal(await metric(i, 'scopegate_policy_source_invalid_versions_total'), 1, i.name);
  }
  // Another notification reads it again: not logged twice.
  await srcSql("SELECT pg_notify('scopegate_policy', '')");
  const r = await push('v4.yaml', V1);
  assert.match(r.out, /as version 4$/m);
  for (const i of instances) {
    await i.sg.waitForLog((l) => l.msg === 'policy reloaded from source' && l.version === '4', 10_000);
    assert.equal(i.sg.logs.filter((l) => l.msg === 'policy source: version is invalid; keeping the running policy').length, 1, i.name);
    const c = await connect(i, 'orders:read', 'alice');
    assert.equal((await errorOf(() => c.query(EMAIL))).code, '42501', `${i.name} runs version 4 (= version 1)`);
    await c.end();
  }
});

test('a prepared statement is judged again at its next Bind against a new version', async () => {
  assert.equal((await push('v5.yaml', V2)).code, 0);
  for (const i of instances) await i.sg.waitForLog((l) => l.msg === 'policy reloaded from source' && l.version === '5', 10_000);
  const clients = await Promise.all(instances.map((i) => connect(i, 'orders:read', 'alice')));
  for (const c of clients) assert.equal((await c.query({ name: 'emails', text: EMAIL })).rows.length, 1);
  assert.equal((await push('v6.yaml', V1)).code, 0);
  for (const i of instances) await i.sg.waitForLog((l) => l.msg === 'policy reloaded from source' && l.version === '6', 10_000);
  for (const c of clients) {
    const e = await errorOf(() => c.query({ name: 'emails', text: EMAIL }));
    assert.equal(e.code, '42501');
    await c.end();
  }
});

test('a revoked subject: open sessions on both instances are ended as the list is read (a statement after does not run), new logins refused', async () => {
  const open = await Promise.all(instances.map((i) => connect(i, 'orders:write', 'mallory')));
  for (const c of open) assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
  const other = await Promise.all(instances.map((i) => connect(i, 'orders:write', 'alice')));
  // Ended as each instance reads the list, unasked (test/revocation.test.ts covers what runs then).
  const endedOpen = open.map((c) => new Promise<pg.DatabaseError>((resolve) => c.once('error', (e) => resolve(e as pg.DatabaseError))));
  const r = await cli(['revoke', '--sub', 'mallory']);
  assert.equal(r.code, 0, r.err);
  const createdAt = Number((await srcSql("SELECT (extract(epoch FROM created_at) * 1000)::float8 AS t FROM scopegate.revocations WHERE sub = 'mallory'")).rows[0].t);
  const appliedAfter = await Promise.all(instances.map(async (i) => {
    const l = await i.sg.waitForLog((x) => x.msg === 'revocation list changed' && x.revocations === 1, 10_000);
    return Math.round(Date.parse(String(l.time)) - createdAt);
  }));
  console.log(`# revoke -> in force: instance A ${appliedAfter[0]} ms, instance B ${appliedAfter[1]} ms after the revocation was written`);
  await Promise.all(instances.map(async (i) => {
    const e = await pollUntil(async () => {
      try {
        const c = await connect(i, 'orders:write', 'mallory');
        await c.end();
        return null;
      } catch (err) {
        return err as pg.DatabaseError;
      }
    }, `${i.name} refuses mallory`);
    assert.equal(e.code, '28000', i.name);
    assert.match(e.message, /revoked/, i.name);
  }));
  for (const [k, c] of open.entries()) {
    const e = await endedOpen[k]!;
    assert.equal(e.code, '28000');
    assert.match(e.message, /subject "mallory" revoked/);
    await errorOf(() => c.query(`INSERT INTO orders (customer_id, total) VALUES (1, ${7000 + k})`));
  }
  // The statements did not run; other subjects are untouched.
  assert.equal((await fx.su('SELECT count(*) AS n FROM orders WHERE total IN (7000, 7001)')).rows[0].n, '0');
  for (const c of other) {
    assert.equal((await c.query('SELECT count(*) AS n FROM orders')).rows.length, 1);
    await c.end();
  }
  assert.ok((await metric(instances[0]!, 'scopegate_auth_failures_total', '{check="revoked"}'))! >= 1);
  for (const i of instances) assert.equal((await showPolicy(i)).revocations, '1');
  // Each refusal is audited: the login and the statement, on both instances.
  for (const i of instances) {
    await i.sg.waitForLog((l) => l.sub === 'mallory' && l.decision === 'deny' && l.audit === 'revoked' && /revoked/.test(String(l.reason)), 10_000);
    await i.sg.waitForLog((l) => l.sub === 'mallory' && l.decision === 'deny' && l.audit === 'login' && /revoked/.test(String(l.reason)), 10_000);
  }
});

function jtiOf(token: string): string {
  const payload = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as { jti: string };
  return payload.jti;
}

test('a revoked token (jti): its open sessions (in a transaction) are ended as the list is read, the same subject with another token still works', async () => {
  const revoked = await token('orders:write', 'bob');
  const open = await Promise.all(instances.map((i) => connect(i, 'orders:write', 'bob', revoked)));
  // Statements in flight when the revocation lands: a transaction already open.
  for (const c of open) await c.query('BEGIN');
  const endedOpen = open.map((c) => new Promise<pg.DatabaseError>((resolve) => c.once('error', (e) => resolve(e as pg.DatabaseError))));
  const r = await cli(['revoke', '--jti', jtiOf(revoked), '--until', '1h']);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^revoked token jti .* until \d{4}-/);
  for (const i of instances) {
    const e = await pollUntil(async () => {
      try { (await connect(i, 'orders:write', 'bob', revoked)).end(); return null; } catch (err) { return err as pg.DatabaseError; }
    }, `${i.name} refuses the revoked token`);
    assert.equal(e.code, '28000');
    assert.match(e.message, /access token revoked/);
  }
  for (const [k, c] of open.entries()) {
    const e = await endedOpen[k]!;
    assert.equal(e.code, '28000');
    assert.match(e.message, /access token revoked/);
    await errorOf(() => c.query(`INSERT INTO orders (customer_id, total) VALUES (1, ${8000 + k})`));
  }
  assert.equal((await fx.su('SELECT count(*) AS n FROM orders WHERE total IN (8000, 8001)')).rows[0].n, '0');
  // A fresh token of the same subject has another jti.
  const fresh = await runProcess(process.execPath, [CLI, 'token', '--config', instances[0]!.sg.configFile, '--scope', 'orders:write', '--sub', 'bob'], { SG_SECRET: SECRET });
  for (const i of instances) {
    const c = await connect(i, 'orders:write', 'bob', fresh.out.trim());
    assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
    await c.end();
  }
});

test('a statement already queued for a server connection when the revocation lands is refused as it leaves the queue', async () => {
  const a = instances[0]!;
  // Every server connection of A (pool_size 4) held in a transaction: the next client waits.
  const holders = await Promise.all([0, 1, 2, 3].map(() => connect(a, 'orders:read', 'alice')));
  for (const h of holders) await h.query('BEGIN; SELECT 1');
  const eve = await connect(a, 'orders:write', 'eve');
  const queued = errorOf(() => eve.query('INSERT INTO orders (customer_id, total) VALUES (1, 9000)'));
  await pollUntil(async () => {
    const c = await connect(a, ADMIN, 'ops', undefined, 'scopegate');
    try {
      const r = await c.query<{ database: string; cl_waiting: string }>('SHOW POOLS');
      return r.rows.some((x) => x.database === DB && Number(x.cl_waiting) >= 1);
    } finally {
      await c.end();
    }
  }, 'the INSERT waits for a server connection');
  assert.equal((await cli(['revoke', '--sub', 'eve'])).code, 0);
  await a.sg.waitForLog((x) => x.msg === 'revocation list changed' && x.revocations === 3, 10_000);
  for (const h of holders) { await h.query('COMMIT'); await h.end(); }
  const e = await queued;
  assert.equal(e.code, '28000');
  assert.match(e.message, /subject "eve" revoked/);
  assert.equal((await fx.su('SELECT count(*) AS n FROM orders WHERE total = 9000')).rows[0].n, '0');
});

test('the source goes down: both keep serving the last good version and say stale; back up, both read the new version', async () => {
  await src.server.stop();
  for (const i of instances) {
    await pollUntil(async () => (await metric(i, 'scopegate_policy_source_stale')) === 1, `${i.name} stale`);
    const p = await showPolicy(i);
    assert.equal(p.stale, 'yes');
    assert.equal(p.version, '6');
    // Still serving, with version 6 (email denied) and its revocations.
    const c = await connect(i, 'orders:read', 'alice');
    assert.equal((await c.query('SELECT count(*) AS n FROM orders')).rows.length, 1);
    assert.equal((await errorOf(() => c.query(EMAIL))).code, '42501');
    await c.end();
    assert.equal((await errorOf(() => connect(i, 'orders:write', 'mallory'))).code, '28000');
  }
  await src.server.start();
  const r = await push('v7.yaml', V2);
  assert.match(r.out, /as version 7$/m, r.err);
  for (const i of instances) {
    await pollUntil(async () => (await showPolicy(i)).version === '7', `${i.name} on version 7`, 400);
    await pollUntil(async () => (await metric(i, 'scopegate_policy_source_stale')) === 0, `${i.name} not stale`);
    assert.equal((await showPolicy(i)).stale, 'no');
    const c = await connect(i, 'orders:read', 'alice');
    assert.equal((await c.query(EMAIL)).rows.length, 1);
    await c.end();
  }
});

test('startup refuses a source that is unreachable, empty or whose latest version is invalid (exit 2, one line); both policy and policy_source is a config error', async () => {
  const tryStart = async (cfg: Record<string, unknown>): Promise<ProcessResult> => {
    const f = file('refused.yaml', stringify({ listen: { host: '127.0.0.1', port: await freePort() }, ...cfg }));
    return runProcess(process.execPath, [CLI, '--config', f], { SG_SECRET: SECRET, SRC_PW: SUPERPASS });
  };
  const base = instanceConfig(await freePort());
  const closed = await freePort();
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['unreachable', { ...base, policy_source: { url: `postgres://${SUPERUSER}@127.0.0.1:${closed}/control`, password: 'env:SRC_PW' } }, /^scopegate: policy source: policy_source\.url: cannot connect to /],
    ['empty', { ...base, policy_source: { url: sourceUrl, password: 'env:SRC_PW', schema: 'empty_source' } }, /^scopegate: policy source: policy_source: no policy in empty_source\.policy_versions/],
    ['both', { ...base, policy: EXAMPLE_POLICY }, /^scopegate: invalid config .*: policy_source: set either policy \(a file\) or policy_source/],
    ['poll', { ...base, policy_source: { url: sourceUrl, poll: '500ms' } }, /policy_source\.poll: must be at least 1s/],
  ];
  await srcSql('CREATE SCHEMA bad_source');
  await srcSql('CREATE TABLE bad_source.policy_versions (version bigint PRIMARY KEY, document text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), created_by text NOT NULL DEFAULT current_user)');
  await srcSql("INSERT INTO bad_source.policy_versions (version, document) VALUES (1, 'mode: sideways')");
  cases.push(['invalid', { ...base, policy_source: { url: sourceUrl, password: 'env:SRC_PW', schema: 'bad_source' } }, /^scopegate: policy source: policy_source: version 1 is invalid: /]);
  for (const [what, cfg, expected] of cases) {
    const r = await tryStart(cfg);
    assert.equal(r.code, 2, `${what}: ${r.err}`);
    assert.equal(r.err.trim().split('\n').length, 1, `${what}: ${r.err}`);
    assert.match(r.err, expected, what);
  }
});

test('policy show prints the current version', async () => {
  const r = await cli(['policy', 'show']);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^# version 7, pushed \S+ by postgres\n/);
  assert.ok(r.out.includes('columns: [id, name, country, email]'));
});
