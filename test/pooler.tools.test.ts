/**
 * Stock PostgreSQL client tools through scopegate: psql (catalog commands, \copy in both
 * directions, sslmode negotiation) and pgbench in simple and extended protocol modes.
 * psql and pgbench must be installed (CI installs postgresql-client); the tests fail
 * with a clear message when they are not.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';

const PSQL = '/usr/bin/psql';
const PGBENCH = '/usr/bin/pgbench';

let db: TestPostgres;
let sg: RunningScopegate;

function requireTool(path: string): void {
  assert.ok(existsSync(path), `${path} is missing: install postgresql-client (apt-get install postgresql-client) to run these tests`);
}

function run(cmd: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: { ...process.env, PGCONNECT_TIMEOUT: '10', ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.on('error', reject);
    const t = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('exit', (code) => { clearTimeout(t); resolve({ code, stdout, stderr }); });
    p.stdin.end(opts.input ?? '');
  });
}

function psql(args: string[], opts: { input?: string; conn?: string } = {}) {
  const conn = opts.conn ?? `host=127.0.0.1 port=${sg.port} user=tool dbname=app sslmode=disable`;
  return run(PSQL, ['-X', '-v', 'ON_ERROR_STOP=1', '-d', conn, ...args], { input: opts.input });
}

before(async () => {
  db = await startPostgres();
  await db.sql('CREATE TABLE gadgets (id int PRIMARY KEY, name text NOT NULL, price numeric(8,2)); CREATE INDEX gadgets_name ON gadgets (name)');
  sg = await startScopegate({
    databases: { app: { url: db.url('postgres'), pool_size: 4 } },
    pool: { mode: 'transaction', query_wait_timeout: '30s', idle_transaction_timeout: 0 },
    log: { level: 'info' },
  });
});

after(async () => {
  if (sg) await sg.stop();
  if (db) await db.stop();
});

describe('psql through scopegate', () => {
  it('\\dt and \\d describe tables', async () => {
    requireTool(PSQL);
    const dt = await psql(['-c', '\\dt']);
    assert.equal(dt.code, 0, dt.stderr);
    assert.match(dt.stdout, /public \| gadgets \| table/);
    const d = await psql(['-c', '\\d gadgets']);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /Table "public\.gadgets"/);
    assert.match(d.stdout, /name\s+\| text\s+\|\s+\| not null/);
    assert.match(d.stdout, /price\s+\| numeric\(8,2\)/);
    assert.match(d.stdout, /"gadgets_pkey" PRIMARY KEY, btree \(id\)/);
    assert.match(d.stdout, /"gadgets_name" btree \(name\)/);
  });

  it('\\copy FROM STDIN and TO STDOUT move data both ways', async () => {
    requireTool(PSQL);
    const lines = Array.from({ length: 500 }, (_, i) => `${i + 1}\tgadget ${i + 1}\t${(i * 1.25).toFixed(2)}`);
    const input = `\\copy gadgets FROM STDIN\n${lines.join('\n')}\n\\.\nSELECT count(*) AS n FROM gadgets;\n`;
    const load = await psql(['-At'], { input });
    assert.equal(load.code, 0, load.stderr);
    assert.match(load.stdout, /COPY 500/);
    assert.match(load.stdout, /^500$/m);
    assert.equal((await db.sql('SELECT count(*)::int AS n, sum(price)::text AS s FROM gadgets')).rows[0].n, 500);
    const out = await psql(['-c', '\\copy (SELECT * FROM gadgets ORDER BY id) TO STDOUT']);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(out.stdout.trimEnd().split('\n'), lines);
    // A failing COPY (duplicate key) reports the error; the next statement works.
    const dup = await psql(['-At'], { input: `\\copy gadgets FROM STDIN\n1\tdup\t1.00\n\\.\n` });
    assert.notEqual(dup.code, 0);
    assert.match(dup.stderr, /duplicate key value/);
    const after1 = await psql(['-At', '-c', 'SELECT count(*) FROM gadgets']);
    assert.equal(after1.stdout.trim(), '500');
    // COPY inside an explicit transaction that is rolled back leaves nothing.
    const rb = await psql(['-At'], { input: `BEGIN;\n\\copy gadgets FROM STDIN\n9001\tx\t1.00\n\\.\nROLLBACK;\nSELECT count(*) FROM gadgets;\n` });
    assert.equal(rb.code, 0, rb.stderr);
    assert.match(rb.stdout, /^500$/m);
  });

  it('sslmode=prefer falls back to plain text after the N answer; sslmode=require fails cleanly', async () => {
    requireTool(PSQL);
    const ok = await psql(['-At', '-c', "SELECT 'plain ' || (SELECT count(*) FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl)"], { conn: `host=127.0.0.1 port=${sg.port} user=tool dbname=app sslmode=prefer` });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), 'plain 0');
    const req = await psql(['-At', '-c', 'SELECT 1'], { conn: `host=127.0.0.1 port=${sg.port} user=tool dbname=app sslmode=require` });
    assert.notEqual(req.code, 0);
    assert.match(req.stderr, /server does not support SSL/);
  });

  it('psql reports errors with their SQLSTATE and keeps going after ROLLBACK', async () => {
    requireTool(PSQL);
    const r = await run(PSQL, ['-X', '-At', '-d', `host=127.0.0.1 port=${sg.port} user=tool dbname=app sslmode=disable`, '-v', 'VERBOSITY=verbose'], {
      input: 'BEGIN;\nSELECT 1/0;\nROLLBACK;\nSELECT 7;\n',
    });
    assert.equal(r.code, 0);
    assert.match(r.stderr, /22012/);
    assert.match(r.stdout, /^7$/m);
  });
});

describe('pgbench through scopegate', () => {
  before(async () => {
    requireTool(PGBENCH);
    // Initialise directly against PostgreSQL; the benchmark itself goes through scopegate.
    const init = await run(PGBENCH, ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(db.port), '-U', 'postgres', 'postgres'], { env: { PGPASSWORD: 'postgres-test-pw' } });
    assert.equal(init.code, 0, init.stderr);
  });

  for (const mode of ['simple', 'extended'] as const) {
    it(`pgbench -S -M ${mode}, 10 clients on a pool of 4: no failed transactions`, async () => {
      requireTool(PGBENCH);
      const r = await run(PGBENCH, ['-S', '-M', mode, '-c', '10', '-j', '2', '-T', '3', '-n', '-h', '127.0.0.1', '-p', String(sg.port), '-U', 'bench', 'app']);
      assert.equal(r.code, 0, `pgbench failed: ${r.stderr}\n${r.stdout}`);
      assert.match(r.stdout, /number of failed transactions: 0 \(/, r.stdout);
      const tps = /tps = ([\d.]+)/.exec(r.stdout);
      assert.ok(tps, `no tps line in: ${r.stdout}`);
      assert.ok(Number(tps[1]) > 0);
      const done = /number of transactions actually processed: (\d+)/.exec(r.stdout);
      assert.ok(done && Number(done[1]) > 0, r.stdout);
    });
  }

  it('pgbench tpc-b (read-write) -M extended, 10 clients on a pool of 4: no failed transactions, balances consistent', async () => {
    requireTool(PGBENCH);
    const r = await run(PGBENCH, ['-M', 'extended', '-c', '10', '-j', '2', '-t', '50', '-n', '-h', '127.0.0.1', '-p', String(sg.port), '-U', 'bench', 'app']);
    assert.equal(r.code, 0, `pgbench failed: ${r.stderr}\n${r.stdout}`);
    assert.match(r.stdout, /number of transactions actually processed: 500\/500/);
    assert.match(r.stdout, /number of failed transactions: 0 \(/);
    const sums = (await db.sql('SELECT (SELECT sum(abalance) FROM pgbench_accounts)::bigint AS a, (SELECT sum(bbalance) FROM pgbench_branches)::bigint AS b, (SELECT sum(delta) FROM pgbench_history)::bigint AS h, (SELECT count(*) FROM pgbench_history)::int AS n')).rows[0];
    assert.equal(sums.n, 500);
    assert.equal(sums.a, sums.h);
    assert.equal(sums.b, sums.h);
  });
});
