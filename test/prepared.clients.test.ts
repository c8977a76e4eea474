/**
 * Prepared statements through scopegate with real clients: pgbench -M prepared,
 * postgres.js (named statements by default), node-postgres named queries, and many
 * clients using the same statement name for different texts at the same time. There are
 * always more clients than server connections, so statements follow clients across them.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import pg from 'pg';
import postgres from 'postgres';
import { startPostgres, SUPERPASS, SUPERUSER, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';

const PGBENCH = '/usr/bin/pgbench';

let db: TestPostgres;
let sg: RunningScopegate;

before(async () => {
  db = await startPostgres();
  await db.sql(`
    CREATE TABLE pc_items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
    INSERT INTO pc_items SELECT g, 'item ' || g, g * 3 FROM generate_series(1, 200) g;
    CREATE TABLE pc_events (client int, seq int, note text);
  `);
  sg = await startScopegate({
    databases: {
      bench3: { url: db.url('postgres'), pool_size: 3 },
      app4: { url: db.url('postgres'), pool_size: 4 },
      app2: { url: db.url('postgres'), pool_size: 2 },
    },
    pool: { mode: 'transaction', query_wait_timeout: '10s', idle_transaction_timeout: 0 },
    log: { level: 'info' },
  });
});

after(async () => {
  if (sg) await sg.stop();
  if (db) await db.stop();
});

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: { ...process.env, PGCONNECT_TIMEOUT: '10', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.on('error', reject);
    const t = setTimeout(() => p.kill('SIGKILL'), 90_000);
    p.on('exit', (code) => { clearTimeout(t); resolve({ code, stdout, stderr }); });
  });
}

interface PgbenchOutcome { processed: number; expected: number | null; failed: number; tps: number; output: string }

/** Runs pgbench through scopegate (database bench3, pool 3) and checks it reported no failure. */
async function pgbenchThroughScopegate(args: string[], jobs = 2): Promise<PgbenchOutcome> {
  assert.ok(existsSync(PGBENCH), `${PGBENCH} is missing: install postgresql-client`);
  const r = await run(PGBENCH, ['-n', '-M', 'prepared', '-c', '12', '-j', String(jobs), ...args, '-h', '127.0.0.1', '-p', String(sg.port), '-U', 'bench', 'bench3']);
  const output = `${r.stdout}\n${r.stderr}`;
  assert.equal(r.code, 0, `pgbench failed:\n${output}`);
  assert.doesNotMatch(output, /client \d+ (script \d+ )?aborted/, output);
  assert.doesNotMatch(output, /ERROR|FATAL/, output);
  const failed = /^number of failed transactions: (\d+)/m.exec(r.stdout);
  const processed = /^number of transactions actually processed: (\d+)(?:\/(\d+))?/m.exec(r.stdout);
  const tps = /^tps = ([\d.]+)/m.exec(r.stdout);
  assert.ok(failed && processed && tps, `unexpected pgbench output:\n${output}`);
  return { processed: Number(processed[1]), expected: processed[2] === undefined ? null : Number(processed[2]), failed: Number(failed[1]), tps: Number(tps[1]), output };
}

describe('pgbench -M prepared, 12 clients on a pool of 3', () => {
  before(async () => {
    assert.ok(existsSync(PGBENCH), `${PGBENCH} is missing: install postgresql-client`);
    const init = await run(PGBENCH, ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(db.port), '-U', SUPERUSER, 'postgres'], { PGPASSWORD: SUPERPASS });
    assert.equal(init.code, 0, init.stderr);
  });

  it('select-only (-S), -T 3: no failed transactions', async () => {
    const r = await pgbenchThroughScopegate(['-S', '-T', '3']);
    assert.equal(r.failed, 0, r.output);
    assert.ok(r.processed > 0 && r.tps > 0, r.output);
  });

  // pgbench prepares a statement with PQprepare (Parse + Sync), which blocks its whole thread
  // until the answer comes; -j 2 puts 6 clients on each thread. A client's Parse must
  // therefore be answered even while every server connection is inside another client's
  // transaction (BEGIN ... END), or the thread, and the clients holding those transactions
  // with it, wait for each other until query_wait_timeout.
  it('TPC-B-like (default script), -T 3, -j 2: no failed transactions', async () => {
    const r = await pgbenchThroughScopegate(['-T', '3']);
    assert.equal(r.failed, 0, r.output);
    assert.ok(r.processed > 0, r.output);
  });

  // One pgbench thread per client (-j 12): a blocking PQprepare stalls only its own client.
  it('TPC-B-like, -t 40 per client, -j 12: all 480 transactions, balances consistent', async () => {
    const before = (await db.sql('SELECT count(*)::int AS n FROM pgbench_history')).rows[0].n as number;
    const r = await pgbenchThroughScopegate(['-t', '40'], 12);
    assert.equal(r.failed, 0, r.output);
    assert.equal(r.processed, 480, r.output);
    assert.equal(r.expected, 480, r.output);
    const s = (await db.sql(`SELECT (SELECT sum(abalance) FROM pgbench_accounts)::bigint AS a, (SELECT sum(bbalance) FROM pgbench_branches)::bigint AS b,
      (SELECT sum(tbalance) FROM pgbench_tellers)::bigint AS t, (SELECT sum(delta) FROM pgbench_history)::bigint AS h, (SELECT count(*) FROM pgbench_history)::int AS n`)).rows[0];
    assert.equal(s.n - before, 480);
    assert.equal(s.a, s.h);
    assert.equal(s.b, s.h);
    assert.equal(s.t, s.h);
  });
});

describe('drivers with named statements, 100 clients on a pool of 4', () => {
  it('postgres.js (prepare: true by default)', async () => {
    const clients = Array.from({ length: 100 }, () => postgres({ host: '127.0.0.1', port: sg.port, user: 'pjs', database: 'app4', max: 1, onnotice: () => undefined }));
    try {
      await Promise.all(clients.map(async (sql, i) => {
        for (let round = 0; round < 4; round++) {
          // Shared text: one server statement for everyone.
          const id = ((i * 7 + round) % 200) + 1;
          const [item] = await sql`SELECT id, name, qty FROM pc_items WHERE id = ${id}`;
          assert.deepEqual({ ...item }, { id, name: `item ${id}`, qty: id * 3 });
          // Text of this client only.
          const [own] = await sql.unsafe(`SELECT $1::int * ${i} AS v, 'client ${i}'::text AS who`, [round], { prepare: true });
          assert.deepEqual({ ...own }, { v: round * i, who: `client ${i}` });
          // A transaction with prepared statements inside.
          const seen = await sql.begin(async (tx) => {
            await tx`INSERT INTO pc_events VALUES (${i}, ${round}, 'pjs')`;
            const [c] = await tx`SELECT count(*)::int AS n FROM pc_events WHERE client = ${i} AND note = 'pjs'`;
            return c!.n as number;
          });
          assert.equal(seen, round + 1);
        }
      }));
    } finally {
      await Promise.all(clients.map((sql) => sql.end({ timeout: 5 })));
    }
    const n = (await db.sql("SELECT count(*)::int AS n, count(DISTINCT client)::int AS c FROM pc_events WHERE note = 'pjs'")).rows[0];
    assert.deepEqual(n, { n: 400, c: 100 });
  });

  it('node-postgres named queries ({ name, text, values })', async () => {
    const clients = await Promise.all(Array.from({ length: 100 }, async () => {
      const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'npg', database: 'app4' });
      c.on('error', () => undefined);
      await c.connect();
      return c;
    }));
    try {
      await Promise.all(clients.map(async (c, i) => {
        for (let round = 0; round < 4; round++) {
          const id = ((i * 13 + round) % 200) + 1;
          const shared = await c.query({ name: 'item_by_id', text: 'SELECT id, name, qty FROM pc_items WHERE id = $1', values: [id] });
          assert.deepEqual(shared.rows, [{ id, name: `item ${id}`, qty: id * 3 }]);
          const own = await c.query({ name: `own_${i % 10}`, text: `SELECT $1::int + ${i} AS v, $2::text AS t`, values: [round, `r${round}`] });
          assert.deepEqual(own.rows, [{ v: round + i, t: `r${round}` }]);
          await c.query('BEGIN');
          await c.query({ name: 'ev_insert', text: 'INSERT INTO pc_events VALUES ($1, $2, $3)', values: [i, round, 'npg'] });
          const cnt = await c.query({ name: 'ev_count', text: 'SELECT count(*)::int AS n FROM pc_events WHERE client = $1 AND note = $2', values: [i, 'npg'] });
          await c.query('COMMIT');
          assert.equal(cnt.rows[0].n, round + 1);
        }
      }));
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    }
    const n = (await db.sql("SELECT count(*)::int AS n, count(DISTINCT client)::int AS c FROM pc_events WHERE note = 'npg'")).rows[0];
    assert.deepEqual(n, { n: 400, c: 100 });
  });
});

describe('the same statement name for different texts', () => {
  it('30 clients using "S_1" for 30 different texts at the same time each get their own results', async () => {
    const clients = await Promise.all(Array.from({ length: 30 }, async () => {
      const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'same', database: 'app2' });
      c.on('error', () => undefined);
      await c.connect();
      return c;
    }));
    try {
      for (let round = 0; round < 5; round++) {
        const results = await Promise.all(clients.map((c, i) => {
          // Different column names and types per client, so a mix-up cannot go unnoticed.
          const text = i % 2 === 0
            ? `SELECT $1::int * ${i + 1} AS v${i}, 'client ${i}'::text AS who`
            : `SELECT 'client ${i}'::text AS who, $1::bigint + ${i} AS w${i}, now() IS NOT NULL AS ok`;
          return c.query({ name: 'S_1', text, values: [round] });
        }));
        results.forEach((r, i) => {
          const expected = i % 2 === 0 ? { [`v${i}`]: round * (i + 1), who: `client ${i}` } : { who: `client ${i}`, [`w${i}`]: String(round + i), ok: true };
          assert.deepEqual(r.rows, [expected], `client ${i}, round ${round}`);
        });
      }
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    }
  });
});
