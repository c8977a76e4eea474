/**
 * Many clients over a small pool, and server connections dying under a client.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import postgres from 'postgres';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { waitFor } from './harness/rawclient.js';

const POOL = 5;
let db: TestPostgres;
let sg: RunningScopegate;

function connectOpts(extra: Partial<pg.ClientConfig> = {}): pg.ClientConfig {
  return { host: '127.0.0.1', port: sg.port, user: 'conc', database: 'app', ...extra };
}

async function client(extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = new pg.Client(connectOpts(extra));
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/** Backend pids of scopegate's server connections, seen from a direct superuser session. */
async function proxyBackends(): Promise<number[]> {
  const r = await db.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> 'direct'");
  return r.rows.map((x) => x.pid as number);
}

before(async () => {
  db = await startPostgres();
  await db.sql('CREATE TABLE hits (client int, n int)');
  sg = await startScopegate({
    databases: { app: { url: db.url('postgres'), pool_size: POOL } },
    pool: { mode: 'transaction', query_wait_timeout: '60s', idle_transaction_timeout: 0 },
    log: { level: 'info' },
  });
});

after(async () => {
  if (sg) await sg.stop();
  if (db) await db.stop();
});

describe('200 concurrent clients over a pool of 5', () => {
  it('every client gets its own results, and a transaction stays on one backend', async () => {
    const N = 200;
    const seenPids = new Set<number>();
    const failures: string[] = [];
    const one = async (i: number): Promise<void> => {
      const c = await client({ application_name: `c${i}` });
      try {
        for (let k = 0; k < 3; k++) {
          const v = i * 10 + k;
          const r = await c.query('SELECT $1::int * 2 AS d, $2::text AS tag', [v, `client-${i}`]);
          if (r.rows[0].d !== v * 2 || r.rows[0].tag !== `client-${i}`) failures.push(`client ${i} extended got ${JSON.stringify(r.rows[0])}`);
        }
        const s = await c.query(`SELECT ${i} AS me, current_setting('application_name') AS app`);
        if (s.rows[0].me !== i) failures.push(`client ${i} simple got ${JSON.stringify(s.rows[0])}`);
        if (s.rows[0].app !== `c${i}`) failures.push(`client ${i} saw application_name ${s.rows[0].app}`);
        await c.query('BEGIN');
        const a = await c.query('SELECT pg_backend_pid() AS p, txid_current() AS t');
        await c.query('INSERT INTO hits VALUES ($1, 1)', [i]);
        const b = await c.query('SELECT pg_backend_pid() AS p, txid_current() AS t, (SELECT count(*)::int FROM hits WHERE client = $1) AS mine', [i]);
        await c.query('COMMIT');
        if (a.rows[0].p !== b.rows[0].p) failures.push(`client ${i} changed backend inside a transaction`);
        if (a.rows[0].t !== b.rows[0].t) failures.push(`client ${i} changed transaction inside a transaction`);
        if (b.rows[0].mine !== 1) failures.push(`client ${i} saw ${b.rows[0].mine} own rows`);
        seenPids.add(a.rows[0].p as number);
      } finally {
        await c.end();
      }
    };
    const results = await Promise.allSettled(Array.from({ length: N }, (_, i) => one(i)));
    const rejected = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
    assert.deepEqual(rejected, [], 'no client may fail');
    assert.deepEqual(failures, []);
    assert.ok(seenPids.size >= 1 && seenPids.size <= POOL, `at most ${POOL} server connections may serve clients, saw ${seenPids.size}`);
    const direct = await db.sql('SELECT count(*)::int AS n, count(DISTINCT client)::int AS d FROM hits');
    assert.deepEqual(direct.rows[0], { n: N, d: N });
    assert.ok((await proxyBackends()).length <= POOL);
  });

  it('postgres.js with many connections and transactions gets correct results', async () => {
    const sql = postgres({ host: '127.0.0.1', port: sg.port, database: 'app', username: 'pgjs', prepare: false, max: 20 });
    try {
      const values = await Promise.all(Array.from({ length: 300 }, async (_, i) => (await sql`SELECT ${i}::int * 3 AS n`)[0]!.n as number));
      assert.deepEqual(values, Array.from({ length: 300 }, (_, i) => i * 3));
      const txs = await Promise.all(Array.from({ length: 40 }, (_, i) => sql.begin(async (tx) => {
        const [a] = await tx`SELECT pg_backend_pid() AS p, txid_current() AS t`;
        const [b] = await tx`SELECT pg_backend_pid() AS p, txid_current() AS t, ${i}::int AS i`;
        return { same: a!.p === b!.p && a!.t === b!.t, i: b!.i as number };
      })));
      assert.ok(txs.every((t) => t.same));
      assert.deepEqual(txs.map((t) => t.i), Array.from({ length: 40 }, (_, i) => i));
    } finally {
      await sql.end();
    }
  });
});

describe('a server connection killed under a client', () => {
  it('the client gets an error, others keep working, the pool recovers', async () => {
    const victim = await client({ application_name: 'victim' });
    const bystander = await client({ application_name: 'bystander' });
    try {
      await bystander.query('BEGIN');
      const bPid = (await bystander.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
      await victim.query('BEGIN');
      const vPid = (await victim.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
      assert.notEqual(vPid, bPid);
      const running = victim.query('SELECT pg_sleep(30)').then(() => null, (e: unknown) => e as Error);
      await waitFor(async () => (await db.sql(`SELECT 1 FROM pg_stat_activity WHERE pid = ${vPid} AND state = 'active'`)).rowCount === 1, 'victim sleep to run');
      await db.sql(`SELECT pg_terminate_backend(${vPid})`);
      const err = await running;
      assert.ok(err instanceof Error, 'the victim\'s query must fail, not succeed or hang');
      // The client learns its server connection is gone; its session cannot continue.
      await assert.rejects(victim.query('SELECT 1'));
      // The bystander's transaction on another backend is intact.
      assert.equal((await bystander.query('SELECT pg_backend_pid() AS p')).rows[0].p, bPid);
      await bystander.query('COMMIT');
      // The pool replaces the dead connection: POOL transactions can run side by side.
      const holders = await Promise.all(Array.from({ length: POOL }, () => client()));
      try {
        const pids = await Promise.all(holders.map(async (h) => {
          await h.query('BEGIN');
          return (await h.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
        }));
        assert.equal(new Set(pids).size, POOL);
        assert.ok(!pids.includes(vPid));
        await Promise.all(holders.map((h) => h.query('COMMIT')));
      } finally {
        await Promise.all(holders.map((h) => h.end()));
      }
      // A fresh client works too.
      const fresh = await client();
      assert.equal((await fresh.query('SELECT 1 AS ok')).rows[0].ok, 1);
      await fresh.end();
    } finally {
      await victim.end().catch(() => undefined);
      await bystander.end().catch(() => undefined);
    }
  });

  it('idle pooled server connections terminated by the server are replaced transparently', async () => {
    const c = await client();
    try {
      const before = await proxyBackends();
      assert.ok(before.length > 0);
      await db.sql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (${before.join(',')})`);
      await waitFor(async () => (await proxyBackends()).every((p) => !before.includes(p)), 'terminated backends to exit');
      // Clients must not be handed a dead server connection once the server has closed them.
      for (let i = 0; i < 10; i++) {
        const r = await c.query('SELECT pg_backend_pid() AS p');
        assert.ok(!before.includes(r.rows[0].p as number));
      }
    } finally {
      await c.end();
    }
  });
});
