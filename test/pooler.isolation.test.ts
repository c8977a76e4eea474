/**
 * One server connection shared by several clients (pool_size 1): a client that dies
 * mid-transaction leaves nothing behind, and startup parameters follow their client.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { RawClient, fe, firstError, rows, waitFor } from './harness/rawclient.js';

let db: TestPostgres;
let sg: RunningScopegate;
let direct: pg.Client;

async function client(extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'iso', database: 'app', ...extra });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/** Kills the client's TCP connection without a Terminate message, as a crashed client would. */
function kill(c: pg.Client): void {
  (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
}

async function sleepersRunning(): Promise<number> {
  const r = await direct.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(%' AND pid <> pg_backend_pid()");
  return r.rows[0].n as number;
}

before(async () => {
  db = await startPostgres();
  await db.sql("CREATE TABLE locked (id int PRIMARY KEY, v text); INSERT INTO locked VALUES (1, 'one'), (2, 'two'); CREATE TABLE written (x int); CREATE SCHEMA alpha_schema");
  direct = new pg.Client({ connectionString: db.url('postgres'), application_name: 'direct' });
  await direct.connect();
  sg = await startScopegate({
    databases: { app: { url: db.url('postgres'), pool_size: 1 } },
    pool: { mode: 'transaction', query_wait_timeout: '30s', idle_transaction_timeout: 0 },
    log: { level: 'info' },
  });
});

after(async () => {
  await direct?.end().catch(() => undefined);
  if (sg) await sg.stop();
  if (db) await db.stop();
});

describe('a client killed mid-transaction (pool_size 1)', () => {
  it('its table lock and pg_sleep are gone and its writes rolled back before the next client runs', async () => {
    const a = await client({ application_name: 'doomed' });
    await a.query('BEGIN');
    await a.query('INSERT INTO written VALUES (99)');
    await a.query('LOCK TABLE locked IN ACCESS EXCLUSIVE MODE');
    const { t: txA, p: pidA, n: nowA } = (await a.query('SELECT txid_current()::text AS t, pg_backend_pid() AS p, now()::text AS n')).rows[0];
    void a.query('SELECT pg_sleep(60)').catch(() => undefined);
    await waitFor(async () => (await sleepersRunning()) === 1, 'the doomed client\'s pg_sleep(60) to run');
    kill(a);

    // The next client gets the same (only) backend, outside any transaction.
    const b = await client({ application_name: 'next' });
    try {
      const r = (await b.query("SELECT pg_backend_pid() AS p, txid_current_if_assigned()::text AS t, now()::text AS n, (SELECT count(*)::int FROM pg_locks WHERE relation = 'locked'::regclass) AS locks")).rows[0];
      assert.equal(r.p, pidA, 'pool_size 1: the same server connection serves the next client');
      assert.equal(r.t, null, 'the next client must not be inside the dead client\'s transaction');
      assert.notEqual(r.n, nowA);
      assert.equal(r.locks, 0, 'the table lock must be released');
      await b.query('BEGIN');
      const tB = (await b.query('SELECT txid_current()::text AS t')).rows[0].t;
      assert.notEqual(tB, txA);
      await b.query('LOCK TABLE locked IN ACCESS EXCLUSIVE MODE NOWAIT');
      await b.query('COMMIT');
    } finally {
      await b.end();
    }
    await waitFor(async () => (await sleepersRunning()) === 0, 'the dead client\'s pg_sleep to be cancelled');
    // Another session can take the lock, and the dead client's insert never committed.
    await direct.query('BEGIN');
    await direct.query('LOCK TABLE locked IN ACCESS EXCLUSIVE MODE NOWAIT');
    await direct.query('COMMIT');
    assert.equal((await direct.query('SELECT count(*)::int AS n FROM written WHERE x = 99')).rows[0].n, 0);
  });

  it('a row lock (SELECT ... FOR UPDATE) of a client killed while idle in transaction is released', async () => {
    const a = await client();
    await a.query('BEGIN');
    await a.query('SELECT * FROM locked WHERE id = 1 FOR UPDATE');
    const pidA = (await a.query('SELECT pg_backend_pid() AS p')).rows[0].p;
    kill(a);
    const b = await client();
    try {
      await b.query('BEGIN');
      const r = await b.query('SELECT pg_backend_pid() AS p, v FROM locked WHERE id = 1 FOR UPDATE NOWAIT');
      assert.equal(r.rows[0].p, pidA);
      assert.equal(r.rows[0].v, 'one');
      await b.query('COMMIT');
    } finally {
      await b.end();
    }
    await direct.query('BEGIN');
    await direct.query('SELECT * FROM locked WHERE id = 1 FOR UPDATE NOWAIT');
    await direct.query('COMMIT');
  });

  it('a client killed in the middle of an unsynced extended-protocol pg_sleep leaves a usable backend', async () => {
    const raw = await RawClient.connect(sg.port);
    await raw.startup({ user: 'iso', database: 'app' });
    raw.write(Buffer.concat([fe.query('BEGIN')]));
    await raw.readUntilReady();
    raw.write(Buffer.concat([fe.parse('SELECT pg_sleep(60)'), fe.bind(), fe.execute(), fe.flush()]));
    await waitFor(async () => (await sleepersRunning()) === 1, 'the extended pg_sleep(60) to run');
    raw.close();
    const b = await client();
    try {
      const r = await b.query('SELECT txid_current_if_assigned() AS t, 1 AS ok');
      assert.deepEqual(r.rows[0], { t: null, ok: 1 });
    } finally {
      await b.end();
    }
    await waitFor(async () => (await sleepersRunning()) === 0, 'the extended pg_sleep to be cancelled');
  });

  it('a client killed during COPY FROM STDIN leaves no rows and a usable backend', async () => {
    const raw = await RawClient.connect(sg.port);
    await raw.startup({ user: 'iso', database: 'app' });
    raw.write(fe.query('COPY written FROM STDIN'));
    const m = await raw.read();
    assert.equal(m.type, 'G', 'CopyInResponse expected');
    raw.write(Buffer.concat([Buffer.from('d'), Buffer.from([0, 0, 0, 4 + 8]), Buffer.from('1001\n1002\n')]));
    await waitFor(async () => (await direct.query("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'COPY written%' AND state = 'active'")).rowCount === 1, 'COPY to be active');
    raw.close();
    const b = await client();
    try {
      assert.equal((await b.query('SELECT 1 AS ok')).rows[0].ok, 1);
    } finally {
      await b.end();
    }
    assert.equal((await direct.query('SELECT count(*)::int AS n FROM written WHERE x > 1000')).rows[0].n, 0);
    // And a complete COPY through the same backend works afterwards.
    const raw2 = await RawClient.connect(sg.port);
    await raw2.startup({ user: 'iso', database: 'app' });
    raw2.write(fe.query('COPY written FROM STDIN'));
    assert.equal((await raw2.read()).type, 'G');
    raw2.write(Buffer.concat([Buffer.from('d'), Buffer.from([0, 0, 0, 4 + 5]), Buffer.from('2001\n'), Buffer.from('c'), Buffer.from([0, 0, 0, 4])]));
    const done = await raw2.readUntilReady();
    assert.equal(firstError(done), undefined);
    assert.deepEqual(rows(await raw2.query('SELECT count(*) FROM written WHERE x = 2001')), [['1']]);
    raw2.write(fe.terminate());
    raw2.close();
  });
});

const A_OPTIONS = '-c TimeZone=Asia/Tokyo -c search_path=alpha_schema -c DateStyle=SQL,DMY';

describe('startup parameters follow their client (pool_size 1)', () => {
  it('application_name, TimeZone, search_path and DateStyle of one client are invisible to the next and re-applied', async () => {
    const defaults = (await direct.query("SELECT current_setting('TimeZone') AS tz, current_setting('search_path') AS sp, current_setting('DateStyle') AS ds")).rows[0];
    assert.notEqual(defaults.tz, 'Asia/Tokyo');
    const show = "SELECT pg_backend_pid() AS p, current_setting('application_name') AS app, current_setting('TimeZone') AS tz, current_setting('search_path') AS sp, current_setting('DateStyle') AS ds";
    const a = await client({ application_name: 'alpha', options: A_OPTIONS });
    const b = await client({ application_name: 'beta' });
    const c = await client();
    try {
      // What PostgreSQL itself makes of the same startup parameters on a direct connection.
      const ref = new pg.Client({ connectionString: db.url('postgres'), application_name: 'alpha', options: A_OPTIONS });
      await ref.connect();
      const alpha = (await ref.query(show.replace('pg_backend_pid() AS p, ', ''))).rows[0];
      await ref.end();
      assert.deepEqual(alpha, { app: 'alpha', tz: 'Asia/Tokyo', sp: 'alpha_schema', ds: 'SQL, DMY' });
      const ra1 = (await a.query(show)).rows[0];
      assert.deepEqual({ ...ra1, p: undefined }, { ...alpha, p: undefined });
      const rb = (await b.query(show)).rows[0];
      assert.equal(rb.p, ra1.p, 'pool_size 1: same server connection');
      assert.deepEqual({ app: rb.app, tz: rb.tz, sp: rb.sp, ds: rb.ds }, { app: 'beta', tz: defaults.tz, sp: defaults.sp, ds: defaults.ds });
      const rc = (await c.query(show)).rows[0];
      // A client without application_name sees the server connection's own default, not another client's.
      assert.ok(rc.app !== 'alpha' && rc.app !== 'beta', `unexpected application_name ${rc.app}`);
      assert.deepEqual({ tz: rc.tz, sp: rc.sp, ds: rc.ds }, { tz: defaults.tz, sp: defaults.sp, ds: defaults.ds });
      // A gets its settings back, in and out of transactions, and they take effect.
      const ra2 = (await a.query(show)).rows[0];
      assert.deepEqual({ app: ra2.app, tz: ra2.tz, sp: ra2.sp, ds: ra2.ds }, alpha);
      await a.query('BEGIN');
      const ra3 = (await a.query(`${show}, to_char(TIMESTAMPTZ '2024-01-01 00:00:00+00', 'HH24') AS hour, current_schema() AS cs`)).rows[0];
      await a.query('COMMIT');
      assert.equal(ra3.tz, 'Asia/Tokyo');
      assert.equal(ra3.hour, '09');
      assert.equal(ra3.cs, 'alpha_schema');
      const rb2 = (await b.query("SELECT current_setting('application_name') AS app, to_char(TIMESTAMPTZ '2024-01-01 00:00:00+00' AT TIME ZONE 'UTC', 'HH24') AS h, current_schema() AS cs")).rows[0];
      assert.deepEqual(rb2, { app: 'beta', h: '00', cs: 'public' });
      // pg_stat_activity shows the name of whichever client runs now.
      const rb3 = (await b.query("SELECT application_name AS a FROM pg_stat_activity WHERE pid = pg_backend_pid()")).rows[0];
      assert.equal(rb3.a, 'beta');
    } finally {
      await Promise.all([a.end(), b.end(), c.end()]);
    }
  });

  it('a startup parameter the server refuses ends the session with its FATAL error, as PostgreSQL refuses the login; the next client is served', async () => {
    for (const options of ['-c no_such_setting_xyz=1', '-c DateStyle=nonsense']) {
      // PostgreSQL's own verdict on the same parameter: the login fails.
      const ref = new pg.Client({ connectionString: db.url('postgres'), options });
      const direct = await ref.connect().then(() => null, (e: { code?: string }) => e.code ?? 'no code');
      await ref.end().catch(() => undefined);
      const c = await client({ options });
      const errors: Array<{ code?: string; severity?: string }> = [];
      c.on('error', (e) => errors.push(e as { code?: string }));
      const first = await c.query('SELECT 1').then(() => null, (e: { code?: string; severity?: string; message: string }) => e);
      assert.ok(first !== null, `${options}: the statement ran`);
      assert.equal(first.code, direct, `${options}: the code PostgreSQL gives the login`);
      assert.equal(first.severity, 'FATAL', `${options}: ${first.message}`);
      // The session is over: nothing more runs on it.
      await assert.rejects(c.query('SELECT 2'));
      await c.end().catch(() => undefined);
      const next = await client();
      try {
        assert.equal((await next.query('SELECT 42 AS x')).rows[0].x, 42);
      } finally {
        await next.end();
      }
    }
  });

  it('a list-valued startup parameter (search_path=a,b) means what it means to PostgreSQL', async () => {
    const opts = { application_name: 'lists', options: '-c search_path=alpha_schema,public' };
    const q = "SELECT current_setting('search_path') AS sp, current_schema() AS cs";
    const ref = new pg.Client({ connectionString: db.url('postgres'), ...opts });
    await ref.connect();
    const want = (await ref.query(q)).rows[0];
    await ref.end();
    assert.deepEqual(want, { sp: 'alpha_schema,public', cs: 'alpha_schema' });
    const c = await client(opts);
    try {
      assert.deepEqual((await c.query(q)).rows[0], want);
    } finally {
      await c.end();
    }
  });
});
