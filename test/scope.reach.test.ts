/**
 * A denied statement never reaches PostgreSQL.
 *
 * PostgreSQL runs with log_statement=all and its stderr kept readable (startLoggedPostgres),
 * so the test reads exactly what the server received. Each denied
 * statement carries a unique marker in a comment; a sentinel statement sent afterwards on the
 * same connection proves the log has caught up before the marker's absence is asserted.
 * The superuser-owned write_log table (statement-level triggers) and row counts back it up.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import postgres from 'postgres';
import { DB, errorOf, pollUntil, startFixture, type Fixture, type LoggedPostgres } from './scope.fixture.test.js';

describe('denied statements never reach PostgreSQL', { timeout: 120_000 }, () => {
  let fx: Fixture;
  let n = 0;

  const serverLog = (): string => (fx.pg as LoggedPostgres).serverLog();
  /** Sends a sentinel on `c` and waits until the server log shows it: everything before it is logged. */
  const logCaughtUp = async (c: pg.Client): Promise<string> => {
    const tag = `sentinel-${process.pid}-${++n}`;
    await c.query(`SELECT '${tag}' AS sentinel`);
    return pollUntil(async () => { const l = serverLog(); return l.includes(tag) ? l : null; }, `server log shows ${tag}`);
  };
  const counts = async (): Promise<{ orders: number; items: number; writes: number }> => {
    const r = await fx.su("SELECT (SELECT count(*) FROM orders)::int AS orders, (SELECT count(*) FROM order_items)::int AS items, (SELECT count(*) FROM write_log WHERE op <> 'INSERT')::int AS writes");
    return r.rows[0] as { orders: number; items: number; writes: number };
  };

  before(async () => {
    fx = await startFixture({ serverLog: true, pgFlags: ['-c', 'log_statement=all'] });
  });
  after(async () => {
    await fx?.stop();
  });

  test('the log captures what the server receives (the method works)', async () => {
    const c = await fx.client('orders:read');
    await c.query('SELECT count(*) FROM orders /* marker-visible */');
    const log = await logCaughtUp(c);
    assert.match(log, /marker-visible/);
  });

  test('simple protocol: denied DELETE, UPDATE, multi-statement messages are not sent', async () => {
    const before = await counts();
    const r = await fx.client('orders:read');
    const w = await fx.client('orders:write');
    const cases: Array<[pg.Client, string, string]> = [
      [r, 'DELETE FROM orders /* marker-del-1 */', 'permission denied: delete on public.orders'],
      [r, 'UPDATE orders SET total = 0 /* marker-upd-1 */', 'permission denied: update on public.orders.total'],
      [r, 'SELECT 1 /* marker-multi-1a */; DELETE FROM orders /* marker-multi-1b */', 'permission denied: delete on public.orders'],
      [w, 'SELECT 1 /* marker-multi-2a */; COMMIT; DELETE FROM orders /* marker-multi-2b */', 'permission denied: delete on public.orders'],
      [w, 'BEGIN; UPDATE orders SET total = 1 /* marker-multi-3a */; COMMIT; DELETE FROM orders /* marker-multi-3b */', 'permission denied: delete on public.orders'],
      [w, 'WITH d AS (DELETE FROM orders RETURNING 1) SELECT count(*) FROM d /* marker-cte-1 */', 'permission denied: delete on public.orders'],
      [w, 'EXPLAIN ANALYZE DELETE FROM orders /* marker-explain-1 */', 'permission denied: delete on public.orders'],
      [w, 'DELETE FROM order_items; DELETE FROM orders /* marker-multi-4 */', 'permission denied: delete on public.orders'],
      [r, "DO $$ BEGIN DELETE FROM orders; END $$ /* marker-do-1 */", 'permission denied: DO (anonymous code block)'],
      [r, "SELECT set_config('role', 'app_admin', false) /* marker-setcfg-1 */", 'permission denied: execute on function pg_catalog.set_config'],
      [r, 'SET ROLE app_admin /* marker-setrole-1 */', 'permission denied: SET ROLE'],
    ];
    for (const [c, sql, message] of cases) {
      const e = await errorOf(() => c.query(sql));
      assert.equal(e.code, '42501', sql);
      assert.equal(e.message, message, sql);
      assert.ok(e.hint, `hint for ${sql}`);
    }
    const log = await logCaughtUp(r);
    await logCaughtUp(w);
    const after = serverLog();
    for (const m of ['marker-del-1', 'marker-upd-1', 'marker-multi-1a', 'marker-multi-1b', 'marker-multi-2a', 'marker-multi-2b', 'marker-multi-3a', 'marker-multi-3b', 'marker-cte-1', 'marker-explain-1', 'marker-multi-4', 'marker-do-1', 'marker-setcfg-1', 'marker-setrole-1']) {
      assert.ok(!after.includes(m), `${m} reached the server:\n${after.split('\n').filter((l) => l.includes(m)).join('\n')}`);
    }
    assert.ok(log.length > 0);
    assert.deepEqual(await counts(), before, 'nothing was deleted or updated');
  });

  test('extended protocol (pg with values, postgres.js): denied statements are not parsed by the server', async () => {
    const before = await counts();
    const r = await fx.client('orders:read');
    const e1 = await errorOf(() => r.query('DELETE FROM orders WHERE id > $1 /* marker-ext-1 */', [0]));
    assert.equal(e1.code, '42501');
    assert.equal(e1.message, 'permission denied: delete on public.orders');
    const e2 = await errorOf(() => r.query({ text: 'UPDATE orders SET total = 0 /* marker-ext-2 */', queryMode: 'extended' } as pg.QueryConfig));
    assert.equal(e2.code, '42501');
    const e3 = await errorOf(() => r.query({ name: 'named-del', text: 'DELETE FROM orders WHERE id > $1 /* marker-ext-3 */', values: [0] }));
    assert.equal(e3.code, '42501');
    const sql = postgres({ host: '127.0.0.1', port: fx.sg.port, user: 'alice', pass: await fx.token('orders:read'), database: DB, max: 1, onnotice: () => undefined });
    try {
      await assert.rejects(sql.unsafe('DELETE FROM orders WHERE id > $1 /* marker-ext-4 */', [0]), (e: { code?: string; message?: string }) => e.code === '42501' && e.message === 'permission denied: delete on public.orders');
      await assert.rejects(sql`UPDATE orders SET total = ${0} /* marker-ext-5 */`, (e: { code?: string }) => e.code === '42501');
      // The connection still works afterwards, and a read runs.
      const ok = await sql`SELECT count(*)::int AS n FROM orders`;
      assert.equal(ok[0]!.n, before.orders);
    } finally {
      await sql.end({ timeout: 5 });
    }
    await logCaughtUp(r);
    const log = serverLog();
    for (const m of ['marker-ext-1', 'marker-ext-2', 'marker-ext-3', 'marker-ext-4', 'marker-ext-5']) assert.ok(!log.includes(m), `${m} reached the server`);
    assert.deepEqual(await counts(), before);
  });

  test('inside a transaction: DO-block error aborts it as PostgreSQL would, ROLLBACK works, rows stay', async () => {
    const before = await counts();
    const r = await fx.client('orders:read');
    await r.query('BEGIN');
    const first = await r.query('SELECT 1 FROM orders');
    assert.ok(first.rowCount! > 0);
    const e = await errorOf(() => r.query('DELETE FROM orders /* marker-tx-1 */'));
    assert.equal(e.code, '42501');
    assert.equal(e.message, 'permission denied: delete on public.orders');
    assert.equal(e.hint, 'scope "admin" grants it');
    const aborted = await errorOf(() => r.query('SELECT 1'));
    assert.equal(aborted.code, '25P02', aborted.message);
    await r.query('ROLLBACK');
    const again = await r.query('SELECT current_user AS u, count(*)::int AS n FROM orders');
    assert.equal(again.rows[0].u, 'app_reader');
    assert.equal(again.rows[0].n, before.orders);

    // The same as one simple-protocol message with several statements.
    const e2 = await errorOf(() => r.query('BEGIN; SELECT 1 FROM orders; DELETE FROM orders /* marker-tx-2 */;'));
    assert.equal(e2.code, '42501');
    // The whole message was refused: no transaction was left open.
    const st = await r.query('SELECT 1 AS one');
    assert.equal(st.rows[0].one, 1);

    // Extended protocol inside a transaction block.
    await r.query('BEGIN');
    await r.query('SELECT id FROM orders WHERE id = $1', [1]);
    const e3 = await errorOf(() => r.query('DELETE FROM orders WHERE id = $1 /* marker-tx-3 */', [1]));
    assert.equal(e3.code, '42501');
    assert.equal(e3.message, 'permission denied: delete on public.orders');
    const aborted3 = await errorOf(() => r.query('SELECT $1::int', [1]));
    assert.equal(aborted3.code, '25P02');
    await r.query('ROLLBACK');

    // A writer's own successful write inside the aborted transaction is rolled back too.
    const w = await fx.client('orders:write');
    await w.query('BEGIN');
    await w.query("UPDATE orders SET status = 'tx-marker-status' WHERE id = 1");
    const e4 = await errorOf(() => w.query('DELETE FROM orders WHERE id = 1 /* marker-tx-4 */'));
    assert.equal(e4.code, '42501');
    assert.equal((await errorOf(() => w.query('SELECT 1'))).code, '25P02');
    await w.query('ROLLBACK');
    const status = await fx.su("SELECT count(*)::int AS n FROM orders WHERE status = 'tx-marker-status'");
    assert.equal(status.rows[0].n, 0);

    // postgres.js transaction helper.
    const sql = postgres({ host: '127.0.0.1', port: fx.sg.port, user: 'alice', pass: await fx.token('orders:read'), database: DB, max: 1, onnotice: () => undefined });
    try {
      await assert.rejects(
        sql.begin(async (tx) => {
          await tx`SELECT 1 FROM orders`;
          await tx`DELETE FROM orders /* marker-tx-5 */`;
        }),
        (err: { code?: string }) => err.code === '42501',
      );
      const [row] = await sql`SELECT count(*)::int AS n FROM orders`;
      assert.equal(row!.n, before.orders);
    } finally {
      await sql.end({ timeout: 5 });
    }

    const log = await logCaughtUp(r);
    for (const m of ['marker-tx-1', 'marker-tx-2', 'marker-tx-3', 'marker-tx-4', 'marker-tx-5']) assert.ok(!log.includes(m), `${m} reached the server`);
    // What the server did receive is scopegate's own DO block raising the error.
    assert.match(log, /DO \$scopegate\$ BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = 'permission denied: delete on public\.orders'/);
    const afterCounts = await counts();
    assert.equal(afterCounts.orders, before.orders);
    assert.equal(afterCounts.items, before.items);
    const deletes = await fx.su("SELECT count(*)::int AS n FROM write_log WHERE tbl = 'orders' AND op = 'DELETE'");
    assert.equal(deletes.rows[0].n, 0);
  });
});
