/**
 * Roles through the proxy: each statement runs under its scope's role, clients sharing one
 * server connection never see each other's role, clients cannot change their role (neither
 * with SQL nor with startup parameters), pipelined statements needing different roles each
 * run under the right one, and psql's describe commands work with a read-only token.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { runProcess, type ProcessResult } from './harness/process.js';
import { existsSync } from 'node:fs';
import postgres from 'postgres';
import { DB, errorOf, startFixture, type Fixture } from './scope.fixture.test.js';

const PSQL = '/usr/bin/psql';

describe('role isolation on one server connection (pool_size 1)', { timeout: 120_000 }, () => {
  let fx: Fixture;
  before(async () => { fx = await startFixture({ poolSize: 1 }); });
  after(async () => { await fx?.stop(); });

  test('reader and writer interleaved: each sees its own current_user', async () => {
    const r = await fx.client('orders:read', { sub: 'reader' });
    const w = await fx.client('orders:write', { sub: 'writer' });
    const pids = new Set<number>();
    for (let i = 0; i < 25; i++) {
      const a = await r.query('SELECT current_user AS u, pg_backend_pid() AS pid, count(*)::int AS n FROM orders');
      const b = await w.query('SELECT current_user AS u, pg_backend_pid() AS pid, count(*)::int AS n FROM orders');
      assert.equal(a.rows[0].u, 'app_reader', `round ${i}`);
      assert.equal(b.rows[0].u, 'app_writer', `round ${i}`);
      pids.add(a.rows[0].pid).add(b.rows[0].pid);
    }
    assert.equal(pids.size, 1, 'both clients used the one server connection');
    // Concurrently, so the pool hands the connection back and forth under load.
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? r : w).query('SELECT current_user AS u FROM orders LIMIT 1').then((x) => [i % 2, x.rows[0].u] as const)));
    for (const [who, u] of results) assert.equal(u, who === 0 ? 'app_reader' : 'app_writer');
    // A write by the writer, then a denied write by the reader on the same backend.
    const ins = await w.query("INSERT INTO order_items (order_id, sku) VALUES (1, 'iso') RETURNING current_user AS u");
    assert.equal(ins.rows[0].u, 'app_writer');
    const e = await errorOf(() => r.query("INSERT INTO order_items (order_id, sku) VALUES (1, 'iso2')"));
    assert.equal(e.code, '42501');
    assert.match(e.message, /^permission denied: insert on public\.order_items/);
  });

  test('an admin client leaves nothing behind for the next client on the same backend', async () => {
    const a = await fx.client('admin', { sub: 'admin' });
    const ar = await a.query('SELECT current_user AS u, pg_backend_pid() AS pid, count(*)::int AS n FROM secrets');
    assert.equal(ar.rows[0].u, 'app_admin');
    await a.end();
    const r = await fx.client('orders:read', { sub: 'reader2' });
    // The same server connection (pool_size 1).
    const pid = await r.query('SELECT pg_backend_pid() AS pid');
    assert.equal(pid.rows[0].pid, ar.rows[0].pid);
    const e = await errorOf(() => r.query('SELECT * FROM secrets'));
    assert.equal(e.code, '42501');
    assert.equal(e.message, 'permission denied: select on public.secrets');
    assert.equal(e.hint, 'scope "admin" grants it');
    // docs/policy.md: statements that need nothing take the client's first held scope's role.
    const who = await r.query('SELECT current_user AS u');
    assert.notEqual(who.rows[0].u, 'app_admin', "a reader's scope-free statement ran as app_admin (left behind by the previous client)");
    assert.equal(who.rows[0].u, 'app_reader');
    const who2 = await r.query("SELECT current_user AS u, current_setting('role') AS r, has_table_privilege('public.secrets', 'select') AS can");
    assert.equal(who2.rows[0].can, false, 'privileges of app_admin were observable by a reader');
  });

  test('an admin client leaves nothing behind for a client with no scopes', async () => {
    const a = await fx.client('admin', { sub: 'admin2' });
    assert.equal((await a.query('SELECT current_user AS u FROM secrets LIMIT 1')).rows[0].u, 'app_admin');
    await a.end();
    const n = await fx.client('', { sub: 'nobody' });
    assert.equal((await errorOf(() => n.query('SELECT * FROM orders'))).code, '42501');
    const who = await n.query('SELECT current_user AS u');
    assert.equal(who.rows[0].u, 'authenticator', 'a client without scopes must run as the login role');
  });

  test('BEGIN takes the role: inside a transaction current_user is the client\'s', async () => {
    const a = await fx.client('admin', { sub: 'admin3' });
    await a.query('SELECT 1 FROM secrets');
    const r = await fx.client('orders:read', { sub: 'reader3' });
    await r.query('BEGIN');
    const u = await r.query('SELECT current_user AS u');
    const o = await r.query('SELECT current_user AS u, count(*) FROM orders');
    await r.query('COMMIT');
    assert.equal(u.rows[0].u, 'app_reader');
    assert.equal(o.rows[0].u, 'app_reader');
  });

  test('a client cannot change its role with SQL', async () => {
    const r = await fx.client('orders:read', { sub: 'reader4' });
    for (const sql of ['SET ROLE app_admin', 'SET role = app_admin', 'SET SESSION AUTHORIZATION app_admin', 'RESET ROLE', "SELECT set_config('role', 'app_admin', false)", "SELECT pg_catalog.set_config('role', 'app_admin', true)"]) {
      const e = await errorOf(() => r.query(sql));
      assert.equal(e.code, '42501', sql);
      assert.match(e.message, /^permission denied: /, sql);
    }
    await r.query('BEGIN');
    assert.equal((await errorOf(() => r.query('SET LOCAL ROLE app_admin'))).code, '42501');
    await r.query('ROLLBACK');
    const who = await r.query('SELECT current_user AS u FROM orders LIMIT 1');
    assert.equal(who.rows[0].u, 'app_reader');
    assert.equal((await errorOf(() => r.query('SELECT * FROM secrets'))).code, '42501');
  });

  test('DISCARD ALL (always allowed) does not strand the client on the login role', async () => {
    const r = await fx.client('orders:read', { sub: 'reader5' });
    assert.equal((await r.query('SELECT current_user AS u FROM orders LIMIT 1')).rows[0].u, 'app_reader');
    await r.query('DISCARD ALL');
    const after = await r.query('SELECT current_user AS u, count(*)::int AS n FROM orders');
    assert.equal(after.rows[0].u, 'app_reader');
  });

  test('startup parameters: role and session_authorization are refused FATAL 42501', async () => {
    for (const options of ['-c role=app_admin', '-c session_authorization=app_admin', '--role=app_admin']) {
      const e = await errorOf(() => fx.client('orders:read', { sub: 'startup', options }));
      assert.equal(e.code, '42501', `${options}: ${e.message}`);
      assert.equal(e.severity, 'FATAL', options);
    }
    // Even for admin: the role is scopegate's decision.
    const e = await errorOf(() => fx.client('admin', { sub: 'startup-admin', options: '-c role=app_reader' }));
    assert.equal(e.code, '42501');
  });

  test('startup search_path is refused for non-admin scopes, accepted for admin', async () => {
    for (const scope of ['orders:read', 'orders:write', '']) {
      const e = await errorOf(() => fx.client(scope, { sub: 'sp', options: '-c search_path=pg_temp,public' }));
      assert.equal(e.code, '42501', `${scope}: ${e.message}`);
      assert.equal(e.severity, 'FATAL');
      assert.match(e.message, /startup parameter "search_path"/);
    }
    const a = await fx.client('admin', { sub: 'sp-admin', options: '-c search_path=public' });
    assert.equal((await a.query('SHOW search_path')).rows[0].search_path, 'public');
    // Ordinary settings are fine for everyone.
    const r = await fx.client('orders:read', { sub: 'tz', options: '-c statement_timeout=5000', extra: { application_name: 'scope-roles' } });
    assert.equal((await r.query('SHOW statement_timeout')).rows[0].statement_timeout, '5s');
  });
});

describe('pipelined statements needing different roles on one connection', { timeout: 60_000 }, () => {
  let fx: Fixture;
  before(async () => { fx = await startFixture({ poolSize: 1 }); });
  after(async () => { await fx?.stop(); });

  test('postgres.js max 1, scopes "orders:read admin": each result ran under its role', async () => {
    const sql = postgres({ host: '127.0.0.1', port: fx.sg.port, user: 'pipe', pass: await fx.token('orders:read admin', 'pipe'), database: DB, max: 1, onnotice: () => undefined });
    try {
      for (let round = 0; round < 5; round++) {
        const qs: Array<Promise<{ expect: string; got: string }>> = [];
        for (let i = 0; i < 12; i++) {
          if (i % 3 === 0) qs.push(sql`SELECT current_user AS u, count(*) FROM orders WHERE id > ${i}`.then((r) => ({ expect: 'app_reader', got: r[0]!.u as string })));
          else if (i % 3 === 1) qs.push(sql`SELECT current_user AS u, count(*) FROM secrets WHERE id > ${i}`.then((r) => ({ expect: 'app_admin', got: r[0]!.u as string })));
          else qs.push(sql`SELECT current_user AS u, email FROM customers WHERE id = ${1 + (i % 3)}`.then((r) => ({ expect: 'app_admin', got: r[0]!.u as string })));
        }
        const res = await Promise.all(qs);
        assert.deepEqual(res.map((r) => r.got), res.map((r) => r.expect), `round ${round}`);
      }
      // A denied statement in the middle of a pipeline fails alone.
      const mixed = await Promise.allSettled([
        sql`SELECT current_user AS u FROM orders LIMIT 1`,
        sql`DELETE FROM orders WHERE id = ${-1}`.then(() => 'ran'),
        sql`SELECT current_user AS u FROM secrets LIMIT 1`,
      ]);
      assert.equal(mixed[0].status, 'fulfilled');
      assert.equal((mixed[0] as unknown as PromiseFulfilledResult<Array<{ u: string }>>).value[0]!.u, 'app_reader');
      // admin grants delete: this one is allowed (and deletes nothing).
      assert.equal(mixed[1].status, 'fulfilled');
      assert.equal(mixed[2].status, 'fulfilled');
      assert.equal((mixed[2] as unknown as PromiseFulfilledResult<Array<{ u: string }>>).value[0]!.u, 'app_admin');
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

  test('postgres.js pipeline for a reader: a denied statement between allowed ones', async () => {
    const sql = postgres({ host: '127.0.0.1', port: fx.sg.port, user: 'pipe2', pass: await fx.token('orders:read', 'pipe2'), database: DB, max: 1, onnotice: () => undefined });
    try {
      const res = await Promise.allSettled([
        sql`SELECT current_user AS u FROM orders LIMIT 1`,
        sql`SELECT * FROM secrets WHERE id = ${1}`,
        sql`SELECT current_user AS u FROM order_items LIMIT 1`,
      ]);
      assert.equal(res[0].status, 'fulfilled');
      assert.equal(res[1].status, 'rejected');
      assert.equal((res[1] as PromiseRejectedResult).reason.code, '42501');
      assert.equal(res[2].status, 'fulfilled');
      assert.equal((res[2] as unknown as PromiseFulfilledResult<Array<{ u: string }>>).value[0]!.u, 'app_reader');
    } finally {
      await sql.end({ timeout: 5 });
    }
  });
});

describe('psql describe commands with an orders:read token', { timeout: 60_000 }, () => {
  let fx: Fixture;
  before(async () => {
    assert.ok(existsSync(PSQL), `${PSQL} is required for this test (apt-get install postgresql-client)`);
    fx = await startFixture({ poolSize: 2 });
  });
  after(async () => { await fx?.stop(); });

  const psql = async (command: string): Promise<ProcessResult> => {
    const token = await fx.token('orders:read', 'psql-user');
    return runProcess(PSQL, ['-X', '-h', '127.0.0.1', '-p', String(fx.sg.port), '-U', 'psql-user', '-d', DB, '-v', 'ON_ERROR_STOP=1', '-c', command],
      { PGPASSWORD: token, PGCONNECT_TIMEOUT: '10', PGSSLMODE: 'disable' }, 30_000);
  };

  test('\\dt lists the tables', async () => {
    const r = await psql('\\dt');
    assert.equal(r.code, 0, r.err);
    for (const t of ['orders', 'order_items', 'customers', 'secrets']) assert.match(r.out, new RegExp(`\\b${t}\\b`));
  });

  test('\\d lists relations including sequences', async () => {
    const r = await psql('\\d');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /orders_id_seq/);
  });

  test('\\d orders describes the table', async () => {
    const r = await psql('\\d orders');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /Table "public\.orders"/);
    for (const c of ['customer_id', 'total', 'status', 'created_at']) assert.match(r.out, new RegExp(c));
    assert.match(r.out, /orders_pkey/);
  });

  test('a plain query and a denied one from psql', async () => {
    const ok = await psql('SELECT count(*) FROM orders');
    assert.equal(ok.code, 0, ok.err);
    const denied = await psql('SELECT * FROM secrets');
    assert.notEqual(denied.code, 0);
    assert.match(denied.err, /permission denied: select on public\.secrets/);
  });
});
