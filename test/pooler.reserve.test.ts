import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';

describe('reserve_pool_size', () => {
  let db: TestPostgres;
  let sg: RunningScopegate;
  const clients: pg.Client[] = [];
  const client = async (): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'u', database: 'app' });
    await c.connect();
    clients.push(c);
    return c;
  };

  before(async () => {
    db = await startPostgres();
    sg = await startScopegate({
      databases: { app: { url: db.url('postgres'), pool_size: 1, reserve_pool_size: 1 } },
      pool: { reserve_pool_timeout: '1s', query_wait_timeout: '20s' },
      log: { level: 'info' },
    });
  });

  after(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    await sg.stop();
    await db.stop();
  });

  it('a client that waited reserve_pool_timeout gets an extra server connection', async () => {
    const holder = await client();
    await holder.query('BEGIN');
    const held = (await holder.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
    const waiter = await client();
    // The pool is exhausted: this waits, then runs on the reserve instead of timing out.
    const got = (await waiter.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
    assert.notEqual(got, held);
    await sg.waitForLog((l) => l.msg === 'opening a reserve server connection');
    await holder.query('COMMIT');
  });

  it('the reserve is the limit: pool_size + reserve_pool_size connections at most', async () => {
    const a = await client();
    const b = await client();
    await a.query('BEGIN');
    await a.query('SELECT 1');
    await b.query('BEGIN');
    await b.query('SELECT 1');
    const rows = await db.sql(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'scopegate' AND backend_type = 'client backend'`);
    assert.ok(rows.rows[0].n <= 2, `server connections: ${rows.rows[0].n}`);
    await a.query('COMMIT');
    await b.query('COMMIT');
  });
});
