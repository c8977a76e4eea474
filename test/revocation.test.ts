/**
 * Revocation ends open sessions at once (issue 13 §2, red-team findings): one real scopegate
 * with a real policy source (a database on the application's PostgreSQL). For each gap the
 * real effect is asserted as the superuser: a COPY FROM STDIN streaming when the revocation
 * lands commits nothing; a statement running in a transaction is cancelled and its rows are
 * absent; statements already sent (several Queries in one write, a pipelined extended batch,
 * a multi-statement Query) never run; a COPY TO is cut; a revoked admin's open console is
 * closed and a KILL_CLIENT sent after had no effect; the next clients on the pool get clean
 * server connections of their own. The time from the revocation row to the session's end is
 * printed per case.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import pg from 'pg';
import { SUPERPASS, SUPERUSER } from './harness/postgres.js';
import { CLI, startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { runProcess, type ProcessResult } from './harness/process.js';
import { freePort } from './harness/ports.js';
import { errorFields, fe, rawLogin, typed, type Msg, type RawClient } from './harness/rawclient.js';
import { AUTH, AUTH_PASSWORD, DB, EXAMPLE_POLICY, SECRET, errorOf, mintToken, pollUntil, startFixture, type Fixture } from './scope.fixture.test.js';

const ADMIN = 'scopegate:admin';
// The example policy, with pg_sleep for orders:write: statements that run long enough to be caught.
const POLICY = readFileSync(EXAMPLE_POLICY, 'utf8').replace(
  '      - { actions: [execute], functions: [public.place_order] }',
  '      - { actions: [execute], functions: [public.place_order] }\n      - { actions: [execute], functions: [pg_catalog.pg_sleep] }',
);

let fx: Fixture;
let sg: RunningScopegate;
let sourceUrl: string;

function cli(args: string[]): Promise<ProcessResult> {
  return runProcess(process.execPath, [CLI, ...args], { SCOPEGATE_POLICY_SOURCE: sourceUrl, PGPASSWORD: SUPERPASS });
}

const tokens = new Map<string, Promise<string>>();
function token(scope: string, sub: string): Promise<string> {
  const key = `${scope}\0${sub}`;
  let t = tokens.get(key);
  if (t === undefined) tokens.set(key, (t = mintToken(sg.configFile, scope, sub)));
  return t;
}

async function connect(scope: string, sub: string, database = DB, extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: sub, database, password: await token(scope, sub), ...extra });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/** Revokes a subject; returns when the row was written (ms since the epoch, the source's clock). */
async function revoke(sub: string): Promise<number> {
  const r = await cli(['revoke', '--sub', sub]);
  assert.equal(r.code, 0, r.err);
  const row = await fx.pg.sql(`SELECT (extract(epoch FROM created_at) * 1000)::float8 AS t FROM scopegate.revocations WHERE sub = '${sub}'`, 'control');
  return Number(row.rows[0].t);
}

/** The server process running a statement that matches `like` (polled until it runs). */
async function runningPid(like: string): Promise<number> {
  return pollUntil(async () => {
    const r = await fx.su(`SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE '${like}' AND pid <> pg_backend_pid()`);
    return r.rows.length === 0 ? null : Number(r.rows[0].pid);
  }, `a server process runs ${like}`);
}

/** Until the server process is gone: only then is "not committed" final. */
async function gone(pid: number): Promise<void> {
  await pollUntil(async () => (await fx.su(`SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ${pid}`)).rows[0].n === '0', `server process ${pid} gone`);
}

async function ordersWithTotals(lo: number, hi: number): Promise<number> {
  return Number((await fx.su(`SELECT count(*) AS n FROM orders WHERE total BETWEEN ${lo} AND ${hi}`)).rows[0].n);
}

function revokedError(msgs: Msg[], sub: string): Record<string, string> {
  const e = msgs.filter((m) => m.type === 'E').map((m) => errorFields(m.body)).find((f) => f.C === '28000');
  assert.ok(e !== undefined, `a 28000 error: ${JSON.stringify(msgs.filter((m) => m.type === 'E').map((m) => errorFields(m.body)))}`);
  assert.equal(e.S, 'FATAL');
  assert.equal(e.M, `subject "${sub}" revoked: access revoked`);
  return e;
}

/** The audit line of a session ended by the revocation; returns when scopegate ended it (its log line). */
async function endedAudited(sub: string): Promise<number> {
  await sg.waitForLog((l) => l.stream === 'audit' && l.sub === sub && l.audit === 'revoked' && l.decision === 'deny' && l.ended === 'at revocation', 10_000);
  const l = await sg.waitForLog((x) => x.msg === 'session ended: access revoked' && x.sub === sub, 10_000);
  return Date.parse(String(l.time));
}

/** Prints the measured times: revocation row written -> scopegate ended the session -> the client saw it. */
function measured(what: string, revokedAt: number, endedAt: number, clientAt: number, extra = ''): void {
  console.log(`# ${what}: revocation written -> session ended ${Math.round(endedAt - revokedAt)} ms (scopegate log), -> client saw the end by ${Math.round(clientAt - revokedAt)} ms${extra}`);
}

before(async () => {
  fx = await startFixture({ policy: null });
  await fx.sg.stop();
  await fx.pg.sql('CREATE DATABASE control');
  sourceUrl = `postgres://${SUPERUSER}@127.0.0.1:${fx.pg.port}/control`;
  const file = join(fx.dir, 'policy.yaml');
  writeFileSync(file, POLICY);
  const pushed = await cli(['policy', 'push', file]);
  assert.equal(pushed.code, 0, pushed.err);
  sg = await startScopegate({
    databases: { [DB]: { url: fx.pg.url(DB, 'authenticator', AUTH_PASSWORD), pool_size: 4 } },
    auth: AUTH,
    log: { level: 'info' },
    admin: { scope: ADMIN, listen_http: `127.0.0.1:${await freePort()}` },
    policy_source: { url: sourceUrl, password: 'env:SRC_PW', poll: '30s' },
  }, { SG_SECRET: SECRET, SRC_PW: SUPERPASS });
});

after(async () => {
  await sg?.stop().catch(() => null);
  await fx?.stop();
});

test('a COPY FROM STDIN streaming when its subject is revoked is ended at once: none of its rows commit', async () => {
  const { raw } = await rawLogin(sg.port, 'copier', await token('orders:write', 'copier'), DB);
  let closedAt = 0;
  void raw.closed.then(() => { closedAt = Date.now(); });
  raw.write(fe.query('COPY orders (customer_id, total) FROM STDIN'));
  assert.equal((await raw.read()).type, 'G');
  let n = 0;
  const batch = (): Buffer => Buffer.concat(Array.from({ length: 50 }, () => typed('d', Buffer.from(`1\t${100000 + n++}\n`))));
  raw.write(batch());
  const pid = await runningPid('COPY orders%');
  let revokedAt = 0;
  const revoking = revoke('copier').then((t) => { revokedAt = t; });
  // Rows go on streaming while the revocation is written, and after it is in force.
  let after = 0;
  while (closedAt === 0 && after < 4000) {
    raw.write(batch());
    if (revokedAt !== 0) after++;
    await tick();
  }
  await revoking;
  // Without the revocation taking effect the COPY would end here and commit.
  if (closedAt === 0) raw.write(typed('c'));
  const msgs = await raw.readUntilClosed();
  revokedError(msgs, 'copier');
  assert.ok(!msgs.some((m) => m.type === 'C'), 'the COPY never completed');
  measured('COPY FROM STDIN', revokedAt, await endedAudited('copier'), closedAt, ` (${n} rows sent)`);
  await gone(pid);
  assert.equal(await ordersWithTotals(100000, 100000 + n), 0, 'no row of the COPY committed');
});

test('a long statement in a transaction is cancelled when its subject is revoked: its rows and the earlier ones are absent; the next clients get clean connections', async () => {
  const c = await connect('orders:write', 'sleeper', DB, { application_name: 'sleeper-app' });
  await c.query('BEGIN');
  await c.query('INSERT INTO orders (customer_id, total) VALUES (1, 200001)');
  const t0 = performance.now();
  const running = errorOf(() => c.query('INSERT INTO orders (customer_id, total) SELECT 1, 200002 FROM pg_sleep(20)'));
  const pid = await runningPid('%pg_sleep(20)%');
  const revokedAt = await revoke('sleeper');
  const e = await running;
  const endedAt = Date.now();
  assert.equal(e.code, '28000');
  assert.equal(e.message, 'subject "sleeper" revoked: access revoked');
  measured('statement in a transaction', revokedAt, await endedAudited('sleeper'), endedAt, ` (it ran ${Math.round(performance.now() - t0)} ms of its 20 s)`);
  await gone(pid);
  assert.equal(await ordersWithTotals(200001, 200002), 0, 'the transaction was rolled back');
  // Every pool slot in use at once: each client sees its own role, subject and settings, in a fresh transaction.
  const next = await Promise.all([0, 1, 2, 3].map((k) => connect('orders:read', `next${k}`, DB, { application_name: `next-app-${k}` })));
  await Promise.all(next.map((n) => n.query('BEGIN')));
  const seen = await Promise.all(next.map((n) => n.query<{ u: string; sub: string; app: string; fresh: boolean; ours: string }>(
    "SELECT current_user AS u, current_setting('scopegate.sub', true) AS sub, current_setting('application_name') AS app, pg_current_xact_id_if_assigned() IS NULL AS fresh, (SELECT count(*) FROM orders WHERE total BETWEEN 200001 AND 200002)::text AS ours")));
  for (const [k, r] of seen.entries()) assert.deepEqual(r.rows[0], { u: 'app_reader', sub: `next${k}`, app: `next-app-${k}`, fresh: true, ours: '0' });
  for (const n of next) { await n.query('COMMIT'); await n.end(); }
});

test('statements already sent when the revocation lands never run: several Queries in one write, a pipelined batch, a multi-statement Query', async () => {
  const t = await token('orders:write', 'piper');
  const a = await rawLogin(sg.port, 'piper', t, DB);
  const b = await rawLogin(sg.port, 'piper', t, DB);
  // One write: a long Query, then autocommit INSERTs as Queries and as an extended batch.
  a.raw.write(Buffer.concat([
    fe.query('SELECT pg_sleep(20)'),
    fe.query('INSERT INTO orders (customer_id, total) VALUES (1, 300001)'),
    fe.parse('INSERT INTO orders (customer_id, total) VALUES (1, 300002)'), fe.bind(), fe.execute(), fe.sync(),
    fe.query('INSERT INTO orders (customer_id, total) VALUES (1, 300003)'),
  ]));
  b.raw.write(fe.query('INSERT INTO orders (customer_id, total) VALUES (1, 300011); SELECT pg_sleep(20.5); INSERT INTO orders (customer_id, total) VALUES (1, 300012)'));
  const pids = [await runningPid('%pg_sleep(20)%'), await runningPid('%pg_sleep(20.5)%')];
  const revokedAt = await revoke('piper');
  const ended = await Promise.all([a.raw, b.raw].map(async (r: RawClient) => { const m = await r.readUntilClosed(25_000); return { m, at: Date.now() }; }));
  for (const { m } of ended) {
    revokedError(m, 'piper');
    assert.ok(!m.some((x) => x.type === 'C'), `nothing completed: ${m.map((x) => x.type).join('')}`);
  }
  measured('pipelined / multi-statement', revokedAt, await endedAudited('piper'), Math.max(...ended.map((x) => x.at)));
  for (const pid of pids) await gone(pid);
  assert.equal(await ordersWithTotals(300001, 300012), 0, 'none of the statements sent before the revocation ran');
});

test('a COPY TO STDOUT streaming when its subject is revoked is cut: fewer rows than the total, then 28000', async () => {
  const { raw } = await rawLogin(sg.port, 'dumper', await token('orders:write', 'dumper'), DB);
  const total = 20000;
  // A row a millisecond: the stream is still running when the revocation lands.
  raw.write(fe.query(`COPY (SELECT i, pg_sleep(0.001) FROM generate_series(1, ${total}) i) TO STDOUT`));
  const msgs: Msg[] = [];
  let rows = 0;
  while (rows < 100) {
    const m = await raw.read();
    msgs.push(m);
    if (m.type === 'd') rows++;
  }
  const revokedAt = await revoke('dumper');
  msgs.push(...await raw.readUntilClosed(60_000));
  const closedAt = Date.now();
  rows = msgs.filter((m) => m.type === 'd').length;
  revokedError(msgs, 'dumper');
  assert.ok(!msgs.some((m) => m.type === 'C' || m.type === 'c'), 'the COPY did not complete');
  assert.ok(rows < total, `${rows} of ${total} rows`);
  measured('COPY TO STDOUT', revokedAt, await endedAudited('dumper'), closedAt, ` (${rows} of ${total} rows reached the client)`);
});

test('a revoked admin\'s open console session is closed; a KILL_CLIENT it sends after has no effect', async () => {
  const victim = await connect('orders:read', 'victim');
  assert.equal((await victim.query('SELECT 1 AS one')).rows[0].one, 1);
  const ops = await connect(ADMIN, 'ops', 'scopegate');
  const clients = await ops.query<{ id: string; user: string }>('SHOW CLIENTS');
  const id = clients.rows.find((r) => r.user === 'victim')!.id;
  await ops.end();
  const { raw } = await rawLogin(sg.port, 'rogue', await token(ADMIN, 'rogue'), 'scopegate');
  assert.ok((await raw.query('SHOW VERSION')).some((m) => m.type === 'D'), 'the console answers before the revocation');
  const revokedAt = await revoke('rogue');
  // Unasked: the console session ends with the revocation, before any command.
  const err = await raw.read(10_000);
  const closedAt = Date.now();
  revokedError([err], 'rogue');
  measured('console session', revokedAt, await endedAudited('rogue'), closedAt);
  raw.write(fe.query(`KILL_CLIENT ${id}`));
  const rest = await raw.readUntilClosed();
  assert.ok(!rest.some((m) => m.type === 'C'), 'KILL_CLIENT was not answered');
  // The victim is still connected and served.
  assert.equal((await victim.query('SELECT 2 AS two')).rows[0].two, 2);
  await victim.end();
  assert.ok(!sg.logs.some((l) => l.stream === 'audit' && l.audit === 'admin' && String(l.statement).startsWith('KILL_CLIENT')), 'no KILL_CLIENT ran');
});

test('a Describe sent by a revoked session is not answered: the session is closed first', async () => {
  const { raw } = await rawLogin(sg.port, 'describer', await token('orders:write', 'describer'), DB);
  raw.write(Buffer.concat([fe.parse('SELECT id FROM orders', 's1'), fe.sync()]));
  assert.deepEqual((await raw.readUntilReady()).map((m) => m.type), ['1', 'Z']);
  const revokedAt = await revoke('describer');
  const first = await raw.read(10_000);
  const closedAt = Date.now();
  revokedError([first], 'describer');
  measured('idle session', revokedAt, await endedAudited('describer'), closedAt);
  raw.write(Buffer.concat([typed('D', Buffer.from('Ss1\0')), fe.sync()]));
  const rest = await raw.readUntilClosed();
  assert.ok(!rest.some((m) => m.type === 't' || m.type === 'T'), `no description: ${rest.map((m) => m.type).join('')}`);
});
