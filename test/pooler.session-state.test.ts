/**
 * Session state in transaction mode (pool_size 1, so every client shares one server
 * connection): what one client does to its session must not reach another client, and
 * features that cannot work in transaction mode are refused clearly.
 * Each test gets a fresh scopegate so a leak in one cannot fail the next.
 */
import { describe, it, before, after, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';

let db: TestPostgres;
let sg: RunningScopegate;
let clients: pg.Client[] = [];
let defaultTimeout: string;

async function client(name: string): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'state', database: 'app', application_name: name });
  c.on('error', () => undefined);
  await c.connect();
  clients.push(c);
  return c;
}

async function pid(c: pg.Client): Promise<number> {
  return (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
}

before(async () => {
  db = await startPostgres();
  defaultTimeout = (await db.sql('SHOW statement_timeout')).rows[0].statement_timeout as string;
  assert.notEqual(defaultTimeout, '1234ms');
});

after(async () => {
  if (db) await db.stop();
});

beforeEach(async () => {
  clients = [];
  sg = await startScopegate({
    databases: { app: { url: db.url('postgres'), pool_size: 1 } },
    pool: { mode: 'transaction', query_wait_timeout: '10s', idle_transaction_timeout: 0 },
    log: { level: 'info' },
  });
});

afterEach(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  await sg.stop();
});

describe('session state in transaction mode', () => {
  it('SET outside a transaction stays with its client: others see the default, the client keeps its value', async () => {
    const a = await client('a');
    const b = await client('b');
    await a.query("SET statement_timeout = '1234ms'");
    assert.equal((await a.query('SHOW statement_timeout')).rows[0].statement_timeout, '1234ms');
    const pa = await pid(a);
    const rb = await b.query('SELECT pg_backend_pid() AS p, current_setting(\'statement_timeout\') AS st');
    assert.equal(rb.rows[0].p, pa, 'pool_size 1: same server connection');
    assert.equal(rb.rows[0].st, defaultTimeout, 'client B must not inherit client A\'s SET');
    await a.query('BEGIN');
    const ra = await a.query("SELECT current_setting('statement_timeout') AS st");
    await a.query('COMMIT');
    assert.equal(ra.rows[0].st, '1234ms', 'client A keeps its SET in its next transaction');
    assert.equal((await b.query('SHOW statement_timeout')).rows[0].statement_timeout, defaultTimeout);
  });

  it('SET LOCAL inside a transaction does not persist past it', async () => {
    const a = await client('a');
    const b = await client('b');
    await a.query('BEGIN');
    await a.query("SET LOCAL statement_timeout = '4321ms'");
    assert.equal((await a.query('SHOW statement_timeout')).rows[0].statement_timeout, '4321ms');
    await a.query('COMMIT');
    assert.equal((await a.query('SHOW statement_timeout')).rows[0].statement_timeout, defaultTimeout);
    assert.equal((await b.query('SHOW statement_timeout')).rows[0].statement_timeout, defaultTimeout);
  });

  it('a plain SET inside a committed transaction stays with its client; RESET returns to the startup value', async () => {
    const a = await client('a');
    const b = await client('b');
    await a.query('BEGIN');
    await a.query("SET statement_timeout = '2222ms'");
    await a.query('COMMIT');
    assert.equal((await b.query('SHOW statement_timeout')).rows[0].statement_timeout, defaultTimeout);
    assert.equal((await a.query('SHOW statement_timeout')).rows[0].statement_timeout, '2222ms');
    await a.query("SET application_name = 'renamed'");
    assert.equal((await b.query('SHOW application_name')).rows[0].application_name, 'b');
    assert.equal((await a.query('SHOW application_name')).rows[0].application_name, 'renamed');
    await a.query('RESET application_name');
    await a.query('RESET statement_timeout');
    assert.equal((await b.query('SHOW application_name')).rows[0].application_name, 'b');
    const r = (await a.query("SELECT current_setting('application_name') AS app, current_setting('statement_timeout') AS st")).rows[0];
    assert.deepEqual(r, { app: 'a', st: defaultTimeout });
  });

  it('a plain SET inside a transaction that is rolled back is undone, as in PostgreSQL', async () => {
    const a = await client('a');
    const b = await client('b');
    await a.query("SET statement_timeout = '2222ms'");
    await a.query('BEGIN');
    await a.query("SET statement_timeout = '3333ms'");
    await a.query('ROLLBACK');
    // Also a transaction that failed and ends with COMMIT (which PostgreSQL turns into ROLLBACK).
    await a.query('BEGIN');
    await a.query("SET statement_timeout = '4444ms'");
    await assert.rejects(a.query('SELECT 1/0'));
    await a.query('COMMIT');
    // B takes the shared server connection in between, so A's state has to be re-applied.
    assert.equal((await b.query('SHOW statement_timeout')).rows[0].statement_timeout, defaultTimeout);
    assert.equal((await a.query('SHOW statement_timeout')).rows[0].statement_timeout, '2222ms');
  });

  it('a temporary table created by one client is not visible to another', async () => {
    const a = await client('a');
    const b = await client('b');
    // A pooler may refuse session-level temp tables in transaction mode; it must not leak them.
    await a.query('CREATE TEMP TABLE a_private (x int)').catch(() => undefined);
    const r = await b.query("SELECT pg_backend_pid() AS p, to_regclass('a_private') IS NOT NULL AS visible");
    assert.equal(r.rows[0].p, await pid(a));
    assert.equal(r.rows[0].visible, false, 'client B must not see client A\'s temp table');
    await assert.rejects(b.query('SELECT * FROM a_private'), (e: unknown) => (e as { code?: string }).code === '42P01');
  });

  it('a session advisory lock taken by one client is not held after its transaction', async () => {
    const a = await client('a');
    const b = await client('b');
    // Refusing the session-level lock is acceptable; holding it on a shared connection is not.
    await a.query('SELECT pg_advisory_lock(4242)').catch(() => undefined);
    const r = await b.query("SELECT pg_backend_pid() AS p, (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242) AS held");
    assert.equal(r.rows[0].p, await pid(a));
    assert.equal(r.rows[0].held, 0, 'the advisory lock must not outlive client A\'s transaction on a shared server connection');
  });

  it('LISTEN is refused in transaction mode with 0A000 and a message about transaction mode', async () => {
    const a = await client('a');
    await assert.rejects(a.query('LISTEN x'), (e: unknown) => {
      const err = e as { code?: string; message: string };
      assert.equal(err.code, '0A000', `expected 0A000, got ${err.code}: ${err.message}`);
      assert.match(err.message, /transaction (pooling )?mode/i);
      return true;
    });
    // The client can go on.
    assert.equal((await a.query('SELECT 1 AS ok')).rows[0].ok, 1);
    const b = await client('b');
    const r = await b.query('SELECT count(*)::int AS n FROM pg_listening_channels()');
    assert.equal(r.rows[0].n, 0);
  });
});
