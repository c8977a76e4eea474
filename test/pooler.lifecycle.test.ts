/**
 * The scopegate process: config validation at start, SIGHUP reload, SIGTERM shutdown.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { CLI, startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { freePort } from './harness/ports.js';
import { waitFor } from './harness/rawclient.js';

let db: TestPostgres;
let dir: string;

async function client(port: number, name = 'life'): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'life', database: 'app', application_name: name });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/** Runs the CLI on a config file; resolves with exit code and output. */
function runCli(file: string): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    const t = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.on('exit', (code) => { clearTimeout(t); resolve({ code, stderr, stdout }); });
  });
}

async function activeIn(appPrefix: string, state: string): Promise<number> {
  const r = await db.sql(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE '${appPrefix}%' AND state = '${state}'`);
  return r.rows[0].n as number;
}

before(async () => {
  db = await startPostgres();
  await db.sql('CREATE TABLE shutdown_t (x int)');
  dir = mkdtempSync(join(tmpdir(), 'scopegate-life-'));
});

after(async () => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (db) await db.stop();
});

describe('bad config', () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['an unknown top-level key', { bogus: 1 }, 'bogus'],
    ['an unknown pool key', { pool: { poolsize: 3 } }, 'pool.poolsize'],
    ['a wrong type', { pool: { max_client_conn: 'lots' } }, 'pool.max_client_conn'],
    ['a bad duration', { pool: { query_wait_timeout: 'soon' } }, 'pool.query_wait_timeout'],
    ['a missing database url', { databases: { app: { pool_size: 2 } } }, 'databases.app.url'],
    ['an unknown database key', { databases: { app: { url: 'postgres://u@127.0.0.1:1/x', poolsize: 2 } } }, 'databases.app.poolsize'],
  ];
  for (const [what, patch, key] of cases) {
    it(`${what} makes the CLI exit non-zero with one line naming ${key}`, async () => {
      const port = await freePort();
      const cfg = { listen: { host: '127.0.0.1', port }, databases: { app: { url: db.url('postgres') } }, ...patch };
      const file = join(dir, `bad-${key}.yaml`);
      writeFileSync(file, stringify(cfg));
      const r = await runCli(file);
      assert.notEqual(r.code, 0, 'the CLI must fail');
      assert.notEqual(r.code, null, 'the CLI must exit by itself');
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line on stderr expected, got: ${r.stderr}`);
      assert.ok(lines[0]!.includes(key), `stderr must name ${key}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    });
  }
});

describe('SIGHUP reload', () => {
  let sg: RunningScopegate;
  const cfg = (poolSize: number) => ({
    databases: { app: { url: db.url('postgres'), pool_size: poolSize } },
    pool: { mode: 'transaction', query_wait_timeout: '1s', idle_transaction_timeout: 0 },
    log: { level: 'info' },
  });
  before(async () => { sg = await startScopegate(cfg(1)); });
  after(async () => { await sg.stop(); });

  it('raises pool_size without dropping connected clients', async () => {
    const keeper = await client(sg.port, 'keeper');
    const holders = await Promise.all([1, 2, 3].map((i) => client(sg.port, `holder${i}`)));
    // pool_size 1: a second concurrent transaction cannot get a server connection.
    await holders[0]!.query('BEGIN');
    await holders[0]!.query('SELECT 1');
    await assert.rejects(holders[1]!.query('SELECT 1'), (e: unknown) => (e as { code?: string }).code === '53300');
    // holders[0] keeps its transaction open across the reload.
    sg.writeConfig(cfg(3));
    const reloads = sg.logs.filter((l) => l.msg === 'configuration reloaded').length;
    sg.proc.kill('SIGHUP');
    await waitFor(() => sg.logs.filter((l) => l.msg === 'configuration reloaded').length > reloads, 'the reload log line');
    // The held transaction survives and commits.
    await holders[0]!.query('INSERT INTO shutdown_t VALUES (-1)');
    await holders[0]!.query('COMMIT');
    assert.equal((await db.sql('SELECT count(*)::int AS n FROM shutdown_t WHERE x = -1')).rows[0].n, 1);
    // The connected client keeps working.
    assert.equal((await keeper.query('SELECT 41 + 1 AS n')).rows[0].n, 42);
    // Three transactions now run side by side.
    const sleeps = holders.map(async (h) => {
      await h.query('BEGIN');
      await h.query('SELECT pg_sleep(0.5)');
      await h.query('COMMIT');
    });
    await waitFor(async () => (await activeIn('holder', 'active')) + (await activeIn('holder', 'idle in transaction')) === 3, 'three concurrent holder sessions', 15_000, 10);
    await Promise.all(sleeps);
    assert.equal((await keeper.query('SELECT 1 AS n')).rows[0].n, 1);
    await Promise.all([keeper, ...holders].map((c) => c.end()));
  });

  it('a broken config on reload keeps the running configuration', async () => {
    const c = await client(sg.port);
    writeFileSync(sg.configFile, 'databases: { app: { pool_size: 2 } }\n');
    sg.proc.kill('SIGHUP');
    await sg.waitForLog((l) => l.msg === 'reload failed; keeping the running configuration');
    assert.equal((await c.query('SELECT 5 AS n')).rows[0].n, 5);
    const d = await client(sg.port);
    assert.equal((await d.query('SELECT 6 AS n')).rows[0].n, 6);
    await c.end();
    await d.end();
    sg.writeConfig(cfg(3));
  });
});

describe('SIGTERM', () => {
  it('stops accepting, lets a running transaction commit, closes idle clients and exits 0', async () => {
    const sg = await startScopegate({
      databases: { app: { url: db.url('postgres'), pool_size: 2 } },
      pool: { mode: 'transaction', query_wait_timeout: '5s', shutdown_timeout: '30s' },
      log: { level: 'info' },
    });
    const idle = await client(sg.port, 'idle');
    const idleErr = new Promise<Error>((resolve) => idle.on('error', resolve));
    const busy = await client(sg.port, 'busy');
    await busy.query('BEGIN');
    await busy.query('INSERT INTO shutdown_t VALUES (1)');
    const sleep = busy.query('SELECT pg_sleep(1)');
    await waitFor(async () => (await activeIn('busy', 'active')) === 1, 'the busy client\'s sleep to run');
    const exited = sg.stop('SIGTERM');
    await sg.waitForLog((l) => l.msg === 'shutting down');
    // The idle client is told to go away.
    const e = await idleErr;
    assert.equal((e as { code?: string }).code, '57P01');
    // New connections are refused.
    await assert.rejects(client(sg.port, 'late'));
    // The running transaction finishes and commits.
    await sleep;
    await busy.query('COMMIT');
    assert.equal(await exited, 0, 'scopegate exits 0');
    assert.equal((await db.sql('SELECT count(*)::int AS n FROM shutdown_t WHERE x = 1')).rows[0].n, 1);
    await busy.end().catch(() => undefined);
    await idle.end().catch(() => undefined);
  });
});
