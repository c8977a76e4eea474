/**
 * The admin console (virtual database `scopegate`, alias `pgbouncer`) through the real
 * scopegate process: psql and pg against it with tokens of the admin, stats or no scope,
 * each command's effect on real clients and servers, and what it must never do.
 */
import { execFile } from 'node:child_process';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { stringify, parse as parseYaml } from 'yaml';
import { AUTH_PASSWORD, errorOf, SECRET, startFixture, type Fixture } from './scope.fixture.test.js';
import { waitFor } from './harness/rawclient.js';

const run = promisify(execFile);

const ADMIN = 'scopegate:admin';
const STATS = 'scopegate:stats';

/** PgBouncer 1.25's SHOW POOLS columns (doc/usage.md), in order. */
const PGBOUNCER_POOLS = ['database', 'user', 'cl_active', 'cl_waiting', 'cl_active_cancel_req', 'cl_waiting_cancel_req', 'sv_active', 'sv_active_cancel',
  'sv_being_canceled', 'sv_idle', 'sv_used', 'sv_tested', 'sv_login', 'maxwait', 'maxwait_us', 'pool_mode', 'load_balance_hosts'];
/** PgBouncer 1.25's SHOW CLIENTS columns; scopegate adds sub, scopes, expires_at after them. */
const PGBOUNCER_CLIENTS = ['type', 'user', 'database', 'replication', 'state', 'addr', 'port', 'local_addr', 'local_port', 'connect_time', 'request_time',
  'wait', 'wait_us', 'close_needed', 'ptr', 'link', 'remote_pid', 'tls', 'application_name', 'prepared_statements', 'id'];

let fx: Fixture;

before(async () => {
  fx = await startFixture({ config: { admin: { scope: ADMIN, stats_scope: STATS } } });
});

after(async () => {
  await fx?.stop();
});

/** A console connection (simple protocol: pg's query without values). */
async function consoleClient(scope: string, sub = 'ops', database = 'pgbouncer'): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port: fx.sg.port, user: sub, password: await fx.token(scope, sub), database });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

async function psql(database: string, sql: string, scope = ADMIN): Promise<string> {
  const { stdout } = await run('psql', ['-X', '--csv', '-c', sql, `host=127.0.0.1 port=${fx.sg.port} dbname=${database} user=ops`], {
    env: { ...process.env, PGPASSWORD: await fx.token(scope, 'ops') }, timeout: 30_000,
  });
  return stdout;
}

function adminAudit(): Array<Record<string, unknown>> {
  return fx.audit().filter((l) => l.audit === 'admin');
}

test('psql SHOW POOLS on dbname pgbouncer and scopegate: PgBouncer 1.25 columns in order, a row per pool', async () => {
  const app = await fx.client('orders:read', { sub: 'alice' });
  await app.query('SELECT 1');
  for (const db of ['pgbouncer', 'scopegate']) {
    const out = await psql(db, 'SHOW POOLS');
    const [header, ...rows] = out.trim().split('\n');
    assert.deepEqual(header!.split(','), PGBOUNCER_POOLS, db);
    assert.equal(rows.length, 1);
    const row = Object.fromEntries(PGBOUNCER_POOLS.map((k, i) => [k, rows[0]!.split(',')[i]]));
    assert.equal(row.database, 'app');
    assert.equal(row.user, 'authenticator');
    assert.equal(row.pool_mode, 'transaction');
    assert.ok(Number(row.cl_active) >= 1, `cl_active ${row.cl_active}`);
    assert.equal(Number(row.sv_idle) + Number(row.sv_active) + Number(row.sv_tested) >= 1, true);
  }
  await app.end();
});

test('SHOW CLIENTS lists a client with its sub, scopes, expiry and tls; never a token', async () => {
  const app = await fx.client('orders:read orders:write', { sub: 'carol' });
  const token = await fx.token('orders:read orders:write', 'carol');
  const c = await consoleClient(ADMIN);
  const r = await c.query('SHOW CLIENTS');
  assert.deepEqual(r.fields.map((f) => f.name), [...PGBOUNCER_CLIENTS, 'sub', 'scopes', 'expires_at']);
  const carol = r.rows.find((row) => row.sub === 'carol');
  assert.ok(carol, JSON.stringify(r.rows));
  assert.equal(carol.database, 'app');
  assert.equal(carol.type, 'C');
  assert.equal(carol.scopes, 'orders:read orders:write');
  assert.equal(carol.tls, '');
  assert.ok(!Number.isNaN(Date.parse(carol.expires_at)) && Date.parse(carol.expires_at) > Date.now(), carol.expires_at);
  const text = JSON.stringify(r.rows);
  assert.ok(!text.includes(token) && !text.includes(token.split('.')[2]!), 'a token in SHOW CLIENTS');
  // The console's own connection is listed too, as PgBouncer lists admin clients.
  assert.ok(r.rows.some((row) => row.database === 'pgbouncer' && row.sub === 'ops'));
  await c.end();
  await app.end();
});

test('every SHOW answers with its PgBouncer columns; SHOW CONFIG and the others show no secret', async () => {
  const c = await consoleClient(ADMIN);
  const expect: Record<string, string[]> = {
    STATS: ['database', 'total_server_assignment_count', 'total_xact_count', 'total_query_count', 'total_received', 'total_sent', 'total_xact_time', 'total_query_time', 'total_wait_time',
      'total_client_parse_count', 'total_server_parse_count', 'total_bind_count', 'avg_server_assignment_count', 'avg_xact_count', 'avg_query_count', 'avg_recv', 'avg_sent',
      'avg_xact_time', 'avg_query_time', 'avg_wait_time', 'avg_client_parse_count', 'avg_server_parse_count', 'avg_bind_count'],
    SERVERS: PGBOUNCER_CLIENTS,
    DATABASES: ['name', 'host', 'port', 'database', 'force_user', 'pool_size', 'min_pool_size', 'reserve_pool_size', 'server_lifetime', 'pool_mode', 'load_balance_hosts',
      'max_connections', 'current_connections', 'max_client_connections', 'current_client_connections', 'paused', 'disabled'],
    CONFIG: ['key', 'value', 'default', 'changeable'],
    LISTS: ['list', 'items'],
    VERSION: ['version'],
    POLICY: ['version', 'source', 'scopes', 'mode', 'reload_failures', 'stale', 'revocations'],
  };
  let all = '';
  for (const [what, cols] of Object.entries(expect)) {
    const r = await c.query(`SHOW ${what}`);
    assert.deepEqual(r.fields.map((f) => f.name), cols, what);
    all += JSON.stringify(r.rows);
  }
  const config = await c.query('SHOW CONFIG');
  const secret = config.rows.find((row) => row.key === 'auth.secret');
  assert.equal(secret?.value, '********');
  assert.equal(config.rows.find((row) => row.key === 'pool.default_pool_size')?.default, '20');
  for (const leak of [SECRET, 'env:SG_SECRET', AUTH_PASSWORD]) assert.ok(!all.includes(leak), `SHOW output holds ${leak}`);
  const policy = (await c.query('SHOW POLICY')).rows[0];
  assert.match(policy.version, /\S/);
  assert.ok(policy.scopes.split(' ').includes('orders:read'), policy.scopes);
  const lists = new Map((await c.query('SHOW LISTS')).rows.map((row) => [row.list, Number(row.items)]));
  assert.equal(lists.get('databases'), 1);
  assert.match((await c.query('SHOW VERSION')).rows[0].version, /^scopegate \d/);
  await c.end();
});

test('a token without the admin or stats scope is refused at login with 42501; a stats token may SHOW, not change', async () => {
  const none = await errorOf(() => consoleClient('orders:read', 'mallory'));
  assert.equal(none.code, '42501');
  assert.match(none.message, /admin console needs a token with scope "scopegate:admin" or "scopegate:stats"/);
  const bad = await errorOf(() => consoleClient('orders:read', 'mallory', 'scopegate'));
  assert.equal(bad.code, '42501');

  const app = await fx.client('orders:read', { sub: 'dave' });
  const stats = await consoleClient(STATS, 'watcher');
  const pools = await stats.query('SHOW POOLS');
  assert.equal(pools.rows.length, 1);
  // Other clients' subjects and scopes are the admin's to see.
  const clients = await stats.query('SHOW CLIENTS');
  const dave = clients.rows.find((row) => row.database === 'app');
  assert.ok(dave);
  assert.equal(dave.sub, null);
  assert.equal(dave.scopes, null);
  assert.ok(!JSON.stringify(clients.rows).includes('dave"'), 'a stats token read another client\'s sub');
  assert.equal(clients.rows.find((row) => row.database === 'pgbouncer')?.sub, 'watcher');
  for (const cmd of ['RELOAD', 'PAUSE', 'RESUME', 'KILL app', `KILL_CLIENT ${dave.id}`, 'SHUTDOWN']) {
    const e = await errorOf(() => stats.query(cmd));
    assert.equal(e.code, '42501', cmd);
    assert.match(e.message, /needs the admin scope "scopegate:admin"/);
  }
  // Nothing happened: dave still runs, scopegate still serves.
  assert.equal((await app.query('SELECT 1 AS one')).rows[0].one, 1);
  await stats.end();
  await app.end();
});

test('the console speaks the simple protocol only, one command per query, and runs no SQL anywhere', async () => {
  const c = await consoleClient(ADMIN);
  const unknown = await errorOf(() => c.query('SELECT 1'));
  assert.equal(unknown.code, '42601');
  assert.match(unknown.message, /invalid command 'SELECT 1', use SHOW HELP;/);
  const chained = await errorOf(() => c.query("SHOW POOLS; UPDATE secrets SET value = 'pwned'"));
  assert.equal(chained.code, '42601');
  const notHere = await errorOf(() => c.query('SUSPEND'));
  assert.equal(notHere.code, '0A000');
  const badShow = await errorOf(() => c.query('SHOW secrets'));
  assert.equal(badShow.code, '42601');
  // The console still answers after errors.
  assert.equal((await c.query('show pools;')).rows.length, 1);
  const secrets = await fx.su('SELECT value FROM secrets ORDER BY id');
  assert.deepEqual(secrets.rows.map((r) => r.value), ['the-launch-code', 'another-secret']);
  assert.equal((await fx.su("SELECT count(*)::int AS n FROM write_log WHERE tbl = 'secrets'")).rows[0].n, 0);

  const ext = await errorOf(() => c.query({ text: 'SHOW POOLS', queryMode: 'extended' } as pg.QueryConfig));
  assert.equal(ext.code, '0A000');
  assert.match(ext.message, /only the simple query protocol/);
  await c.end().catch(() => undefined);
});

test('commands match ASCII letters only: a look-alike (PAU\u017fE, \u0131) is no command and pauses nothing', async () => {
  const c = await consoleClient(ADMIN);
  // 'ſ' (U+017F) and 'ı' (U+0131) upper-case to S and I in JavaScript; they must not make PAUSE, SHOW LISTS.
  for (const text of ['PAU\u017fE app', 'SHOW L\u0131STS', 'pau\u017fe']) {
    const e = await errorOf(() => c.query(text));
    assert.equal(e.code, '42601', text);
  }
  assert.equal((await c.query('SHOW DATABASES')).rows[0].paused, '0');
  const app = await fx.client('orders:read', { sub: 'lookalike' });
  assert.equal((await app.query('SELECT 3 AS three')).rows[0].three, 3);
  // Lower-case ASCII still works.
  assert.equal((await c.query('show lists')).rows.length > 0, true);
  await app.end();
  await c.end();
});

test('PAUSE makes new transactions wait, RESUME lets them go; both audited', async () => {
  const app = await fx.client('orders:read', { sub: 'erin' });
  await app.query('SELECT 1');
  const c = await consoleClient(ADMIN);
  await c.query('PAUSE app');
  assert.equal((await c.query('SHOW DATABASES')).rows[0].paused, '1');
  let done = false;
  const pending = app.query('SELECT 2 AS two').then((r) => { done = true; return r; });
  await waitFor(async () => (await c.query('SHOW POOLS')).rows[0].cl_waiting === '1', 'the client waiting while paused');
  assert.equal(done, false);
  // The servers were closed, as PgBouncer's PAUSE does.
  assert.equal((await c.query('SHOW SERVERS')).rows.length, 0);
  await c.query('RESUME app');
  assert.equal((await pending).rows[0].two, 2);
  const lines = adminAudit().map((l) => `${String(l.statement)} ${String(l.decision)}`);
  await waitFor(() => adminAudit().some((l) => l.statement === 'RESUME app'), 'the RESUME audit line');
  assert.ok(adminAudit().some((l) => l.statement === 'PAUSE app' && l.decision === 'allow' && l.sub === 'ops'), lines.join('\n'));
  await c.end();
  await app.end();
});

test('KILL db closes its clients and servers; KILL_CLIENT closes exactly one client; an unknown id is an error', async () => {
  const c = await consoleClient(ADMIN);
  const a = await fx.client('orders:read', { sub: 'frank' });
  const b = await fx.client('orders:read', { sub: 'grace' });
  await Promise.all([a.query('SELECT 1'), b.query('SELECT 1')]);
  const ids = (await c.query('SHOW CLIENTS')).rows;
  const frank = ids.find((r) => r.sub === 'frank');
  assert.ok(frank);
  const frankGone = new Promise<Error>((resolve) => a.once('error', resolve));
  await c.query(`KILL_CLIENT ${frank.id}`);
  const err = (await frankGone) as Error & { code?: string };
  assert.equal(err.code, '57P01');
  assert.match(err.message, /closed by the admin console \(KILL_CLIENT \d+\)/);
  assert.equal((await b.query('SELECT 2 AS two')).rows[0].two, 2);
  const missing = await errorOf(() => c.query('KILL_CLIENT 999999'));
  assert.equal(missing.code, '22023');
  assert.match(missing.message, /no client with id 999999/);

  const graceGone = new Promise<Error>((resolve) => b.once('error', resolve));
  await c.query('KILL app');
  assert.equal(((await graceGone) as Error & { code?: string }).code, '57P01');
  await waitFor(async () => (await c.query('SHOW SERVERS')).rows.length === 0, 'no server connection left');
  assert.equal((await c.query('SHOW CLIENTS')).rows.filter((row) => row.database === 'app').length, 0);
  // KILL pauses the database until RESUME, as PgBouncer's does.
  await c.query('RESUME');
  const again = await fx.client('orders:read', { sub: 'grace' });
  assert.equal((await again.query('SELECT 3 AS three')).rows[0].three, 3);
  await again.end();
  await c.end();
});

test('RELOAD applies a changed config; a broken one is refused and the running one kept', async () => {
  const c = await consoleClient(ADMIN);
  const cfg = parseYaml(readFileSync(fx.sg.configFile, 'utf8')) as Record<string, unknown> & { databases: Record<string, Record<string, unknown>> };
  const { listen: _listen, ...rest } = cfg;
  fx.sg.writeConfig({ ...rest, databases: { app: { ...cfg.databases.app, pool_size: 7 } } });
  assert.equal((await c.query('RELOAD')).command, 'RELOAD');
  assert.equal((await c.query('SHOW DATABASES')).rows[0].pool_size, '7');
  fx.sg.writeConfig({ ...rest, pool: { default_pool_size: 'many' } });
  const e = await errorOf(() => c.query('RELOAD'));
  assert.equal(e.code, 'F0000');
  assert.match(e.message, /pool.default_pool_size/);
  assert.equal((await c.query('SHOW DATABASES')).rows[0].pool_size, '7');
  fx.sg.writeConfig(rest);
  void stringify;
  await c.end();
});

test('every console command leaves an audit line, denials too', async () => {
  const before = adminAudit().length;
  const c = await consoleClient(STATS, 'auditor');
  await c.query('SHOW LISTS');
  await errorOf(() => c.query('RELOAD'));
  await errorOf(() => c.query('DROP TABLE secrets'));
  const mineNow = (): Array<Record<string, unknown>> => adminAudit().slice(before).filter((l) => l.sub === 'auditor');
  await waitFor(() => mineNow().length >= 4, 'four audit lines');
  const mine = mineNow();
  assert.deepEqual(mine.map((l) => [l.statement, l.decision]), [['(login)', 'allow'], ['SHOW LISTS', 'allow'], ['RELOAD', 'deny'], ['DROP TABLE secrets', 'deny']]);
  assert.deepEqual(mine[2]!.scopes, [STATS]);
  await c.end();
});

test('SHUTDOWN stops the process', async () => {
  const c = await consoleClient(ADMIN);
  const exited = new Promise<number | null>((resolve) => fx.sg.proc.once('exit', (code) => resolve(code)));
  await c.query('SHUTDOWN');
  assert.equal(await exited, 0);
  await c.end().catch(() => undefined);
});
