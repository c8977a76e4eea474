/**
 * Real client libraries through the real scopegate process in transaction mode:
 * node-postgres (simple and extended protocol), postgres.js, transactions with errors,
 * multi-statement queries and query cancellation.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import postgres from 'postgres';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { sendCancel, waitFor } from './harness/rawclient.js';

let db: TestPostgres;
let sg: RunningScopegate;
const open: pg.Client[] = [];

async function client(extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'app_user', database: 'app', ...extra });
  c.on('error', () => undefined);
  await c.connect();
  open.push(c);
  return c;
}

function sqlState(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

before(async () => {
  db = await startPostgres();
  await db.sql('CREATE TABLE kv (k int PRIMARY KEY, v text)');
  sg = await startScopegate({
    databases: { app: { url: db.url('postgres'), pool_size: 5 } },
    pool: { mode: 'transaction', query_wait_timeout: '10s', idle_transaction_timeout: 0 },
    log: { level: 'info' },
  });
});

after(async () => {
  for (const c of open) await c.end().catch(() => undefined);
  if (sg) await sg.stop();
  if (db) await db.stop();
});

describe('node-postgres through scopegate', () => {
  it('runs simple-protocol queries', async () => {
    const c = await client();
    const r = await c.query("SELECT 1 AS one, 'x'::text AS s, version() AS v");
    assert.equal(r.rows[0].one, 1);
    assert.equal(r.rows[0].s, 'x');
    assert.match(r.rows[0].v, /^PostgreSQL 18/);
  });

  it('runs extended-protocol queries with parameters', async () => {
    const c = await client();
    const r = await c.query('SELECT $1::int * 2 AS d, $2::text || $3::text AS cat, $4::int IS NULL AS isnull', [21, 'ab', 'cd', null]);
    assert.deepEqual(r.rows[0], { d: 42, cat: 'abcd', isnull: true });
    const r2 = await c.query({ text: 'SELECT 7 AS seven', queryMode: 'extended' } as pg.QueryConfig);
    assert.equal(r2.rows[0].seven, 7);
    // A named prepared statement used twice within one transaction stays on one backend.
    await c.query('BEGIN');
    const a = await c.query({ name: 'twice', text: 'SELECT $1::int + 1 AS n', values: [1] });
    const b = await c.query({ name: 'twice', text: 'SELECT $1::int + 1 AS n', values: [2] });
    await c.query('COMMIT');
    assert.equal(a.rows[0].n, 2);
    assert.equal(b.rows[0].n, 3);
  });

  it('reports a syntax error and keeps the connection usable', async () => {
    const c = await client();
    await assert.rejects(c.query('SELEC 1'), (e) => sqlState(e) === '42601');
    await assert.rejects(c.query('SELECT $1::int', ['not a number']), (e) => sqlState(e) === '22P02');
    assert.equal((await c.query('SELECT 5 AS n')).rows[0].n, 5);
  });

  it('commits and rolls back transactions', async () => {
    const c = await client();
    await c.query('BEGIN');
    await c.query("INSERT INTO kv VALUES (1, 'committed')");
    await c.query('COMMIT');
    await c.query('BEGIN');
    await c.query("INSERT INTO kv VALUES (2, 'rolled back')");
    const inside = await c.query('SELECT count(*)::int AS n FROM kv WHERE k = 2');
    assert.equal(inside.rows[0].n, 1);
    await c.query('ROLLBACK');
    const direct = await db.sql('SELECT k, v FROM kv WHERE k IN (1, 2) ORDER BY k');
    assert.deepEqual(direct.rows, [{ k: 1, v: 'committed' }]);
  });

  it('an error inside a transaction aborts it; ROLLBACK works and the next transaction is fine', async () => {
    const c = await client();
    await c.query('BEGIN');
    await c.query("INSERT INTO kv VALUES (10, 'lost')");
    await assert.rejects(c.query('SELECT 1/0'), (e) => sqlState(e) === '22012');
    await assert.rejects(c.query('SELECT 1'), (e) => sqlState(e) === '25P02');
    await c.query('ROLLBACK');
    await c.query('BEGIN');
    await c.query("INSERT INTO kv VALUES (11, 'kept')");
    await c.query('COMMIT');
    const direct = await db.sql('SELECT k FROM kv WHERE k IN (10, 11) ORDER BY k');
    assert.deepEqual(direct.rows, [{ k: 11 }]);
    // Same with the extended protocol.
    await c.query('BEGIN');
    await assert.rejects(c.query('SELECT $1::int / 0', [1]), (e) => sqlState(e) === '22012');
    await c.query('ROLLBACK');
    assert.equal((await c.query('SELECT $1::int AS n', [3])).rows[0].n, 3);
  });

  it('runs multi-statement simple queries, including ones that open and close a transaction', async () => {
    const c = await client();
    const res = (await c.query("SELECT 1 AS a; SELECT 'two' AS b; SELECT 3 AS c")) as unknown as pg.QueryResult[];
    assert.equal(res.length, 3);
    assert.deepEqual(res.map((r) => r.rows[0]), [{ a: 1 }, { b: 'two' }, { c: 3 }]);
    await c.query("BEGIN; INSERT INTO kv VALUES (20, 'multi'); COMMIT");
    assert.equal((await db.sql('SELECT v FROM kv WHERE k = 20')).rows[0]?.v, 'multi');
    // A multi-statement query that leaves a transaction open keeps its backend.
    const r2 = (await c.query('BEGIN; SELECT pg_backend_pid() AS p')) as unknown as pg.QueryResult[];
    const pid = r2[1]!.rows[0].p;
    const again = await c.query('SELECT pg_backend_pid() AS p');
    await c.query('COMMIT');
    assert.equal(again.rows[0].p, pid);
    // An error in the middle of an implicit transaction rolls all of it back.
    await assert.rejects(c.query("INSERT INTO kv VALUES (21, 'x'); SELECT 1/0"), (e) => sqlState(e) === '22012');
    assert.equal((await db.sql('SELECT count(*)::int AS n FROM kv WHERE k = 21')).rows[0].n, 0);
    assert.equal((await c.query('SELECT 1 AS ok')).rows[0].ok, 1);
  });
});

describe('postgres.js through scopegate', () => {
  it('runs queries, parameters and transactions with prepare: false', async () => {
    const sql = postgres({ host: '127.0.0.1', port: sg.port, database: 'app', username: 'pgjs', prepare: false, max: 4, onnotice: () => undefined });
    try {
      const [r] = await sql`SELECT ${5}::int * 3 AS n, ${'hi'}::text AS s`;
      assert.equal(r!.n, 15);
      assert.equal(r!.s, 'hi');
      const pids = await sql.begin(async (tx) => {
        const [a] = await tx`SELECT pg_backend_pid() AS p, txid_current() AS t`;
        await tx`INSERT INTO kv VALUES (30, 'pgjs')`;
        const [b] = await tx`SELECT pg_backend_pid() AS p, txid_current() AS t`;
        return [a!, b!];
      });
      assert.equal(pids[0].p, pids[1].p);
      assert.equal(pids[0].t, pids[1].t);
      await assert.rejects(sql.begin(async (tx) => {
        await tx`INSERT INTO kv VALUES (31, 'never')`;
        await tx`SELECT 1/0`;
      }), (e) => sqlState(e) === '22012');
      const rows = await sql`SELECT k FROM kv WHERE k IN (30, 31) ORDER BY k`;
      assert.deepEqual(rows.map((x) => x.k), [30]);
      const many = await Promise.all(Array.from({ length: 40 }, (_, i) => sql`SELECT ${i}::int + 1000 AS n`));
      assert.deepEqual(many.map((m) => m[0]!.n), Array.from({ length: 40 }, (_, i) => i + 1000));
      const multi = await sql.unsafe('SELECT 1 AS a; SELECT 2 AS b');
      assert.deepEqual((multi as unknown as Array<Array<Record<string, number>>>).map((x) => x[0]), [{ a: 1 }, { b: 2 }]);
    } finally {
      await sql.end();
    }
  });

  it('default settings (named prepared statements) work across pooled server connections', async () => {
    const sql = postgres({ host: '127.0.0.1', port: sg.port, database: 'app', username: 'pgjs', max: 3 });
    const other = await client();
    try {
      for (let round = 0; round < 5; round++) {
        // Other clients hold server connections in between, so statements land on different ones.
        await other.query('BEGIN');
        await other.query('SELECT 1');
        const got = await Promise.all(Array.from({ length: 30 }, async (_, i) => {
          const [a] = await sql`SELECT ${i}::int + ${round}::int AS n`;
          const [b] = await sql`SELECT ${'k' + i}::text AS k, ${round}::int AS r`;
          return [a!.n, b!.k, b!.r];
        }));
        await other.query('COMMIT');
        assert.deepEqual(got, Array.from({ length: 30 }, (_, i) => [i + round, 'k' + i, round]));
      }
      const [t] = await sql.begin(async (tx) => tx`SELECT ${2}::int * 21 AS n`);
      assert.equal(t!.n, 42);
    } finally {
      await sql.end();
    }
  });

  it('cancels a running query with query.cancel()', async () => {
    const sql = postgres({ host: '127.0.0.1', port: sg.port, database: 'app', username: 'pgjs', prepare: false, max: 1 });
    try {
      const q = sql`SELECT pg_sleep(30)`;
      const done = q.then(() => null, (e: unknown) => e);
      await waitFor(async () => (await db.sql("SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'")).rowCount === 1, 'pg_sleep(30) to run');
      q.cancel();
      const err = await done;
      assert.equal(sqlState(err), '57014');
      const [r] = await sql`SELECT 1 AS ok`;
      assert.equal(r!.ok, 1);
    } finally {
      await sql.end();
    }
  });
});

describe('cancel', () => {
  it('a CancelRequest with the client key cancels only that client\'s query', async () => {
    const a = await client({ application_name: 'cancel_a' });
    const b = await client({ application_name: 'cancel_b' });
    const order: string[] = [];
    const qa = a.query('SELECT pg_sleep(30)').then(() => { order.push('a-ok'); return null; }, (e: unknown) => { order.push('a-err'); return e; });
    const qb = b.query("SELECT pg_sleep(2), 'b' AS who").then((r) => { order.push('b-ok'); return r; }, (e: unknown) => { order.push('b-err'); throw e; });
    // Both sleeps run on their own backends before the cancel is sent.
    await waitFor(async () => (await db.sql("SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(%'")).rowCount === 2, 'both sleeps to run');
    const key = a as unknown as { processID: number; secretKey: number };
    // A wrong secret cancels nothing.
    await sendCancel(sg.port, key.processID, key.secretKey ^ 0x5a5a);
    await sendCancel(sg.port, key.processID, key.secretKey);
    const errA = await qa;
    assert.equal(sqlState(errA), '57014', `expected query_canceled, got ${String(errA)}`);
    const rb = await qb;
    assert.equal(rb.rows[0].who, 'b');
    assert.deepEqual(order, ['a-err', 'b-ok'], 'the canceled query must end before the other client\'s 2s sleep');
    assert.equal((await a.query('SELECT 1 AS ok')).rows[0].ok, 1);
    assert.equal((await b.query('SELECT 2 AS ok')).rows[0].ok, 2);
  });

  it('cancels a query inside a transaction, which then must be rolled back', async () => {
    const a = await client();
    await a.query('BEGIN');
    await a.query("INSERT INTO kv VALUES (40, 'canceled txn')");
    const qa = a.query('SELECT pg_sleep(30)').then(() => null, (e: unknown) => e);
    await waitFor(async () => (await db.sql("SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'")).rowCount === 1, 'pg_sleep(30) to run');
    const key = a as unknown as { processID: number; secretKey: number };
    await sendCancel(sg.port, key.processID, key.secretKey);
    assert.equal(sqlState(await qa), '57014');
    await assert.rejects(a.query('SELECT 1'), (e) => sqlState(e) === '25P02');
    await a.query('ROLLBACK');
    assert.equal((await db.sql('SELECT count(*)::int AS n FROM kv WHERE k = 40')).rows[0].n, 0);
    assert.equal((await a.query('SELECT 1 AS ok')).rows[0].ok, 1);
  });
});
