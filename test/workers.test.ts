/**
 * workers: N (node:cluster): two real scopegate worker processes on one port in front of one real
 * PostgreSQL. Both take clients, a cancel reaches the worker that issued the key whichever worker
 * accepted it, the console and /metrics add up every worker, pool sizes are split so the server
 * never sees more than pool_size, a killed worker is replaced, SIGHUP and RELOAD reach both.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { freePort } from './harness/ports.js';
import { sendCancel, waitFor } from './harness/rawclient.js';
import { shareOf, shareConfig } from '../src/server/worker-share.js';
import { parseConfig } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { availableParallelism, tmpdir } from 'node:os';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const HOST = '127.0.0.1';
const POOL_SIZE = 4;
let db: TestPostgres;
let sg: RunningScopegate;
let http = 0;
const open: pg.Client[] = [];

function config(poolSize: number): Record<string, unknown> {
  return {
    workers: 2,
    databases: { app: { url: db.url('wk'), pool_size: poolSize } },
    pool: { mode: 'transaction', query_wait_timeout: '20s' },
    log: { level: 'debug', audit: 'audit.log' },
    admin: { scope: 'scopegate:admin', listen_http: `${HOST}:${http}`, trust_access: 'admin' },
  };
}

async function client(name = 'wk'): Promise<pg.Client> {
  const c = new pg.Client({ host: HOST, port: sg.port, user: 'app_user', database: 'app', application_name: name });
  c.on('error', () => undefined);
  await c.connect();
  open.push(c);
  return c;
}

async function consoleQuery(sql: string): Promise<Array<Record<string, string | null>>> {
  const c = new pg.Client({ host: HOST, port: sg.port, user: 'admin', database: 'scopegate' });
  await c.connect();
  try {
    return (await c.query(sql)).rows as Array<Record<string, string | null>>;
  } finally {
    await c.end();
  }
}

async function metrics(): Promise<string> {
  return (await fetch(`http://${HOST}:${http}/metrics`)).text();
}

function metricSum(text: string, name: string, ...has: string[]): number {
  return text.split('\n').filter((l) => (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) && has.every((h) => l.includes(h)))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

/** Worker index -> pid, from the primary's scopegate_worker_info. */
function workerPids(text: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of text.matchAll(/^scopegate_worker_info\{worker="(\d+)",pid="(\d+)"\} 1$/gm)) out.set(Number(m[1]), Number(m[2]));
  return out;
}

const serverBackends = async (): Promise<number> =>
  Number((await db.sql("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = 'wk' AND backend_type = 'client backend'")).rows[0].n);

const workersOf = (rows: Array<Record<string, string | null>>): Set<string> => new Set(rows.map((r) => r.worker ?? 'none'));

describe('workers: N', { timeout: 240_000 }, () => {
  before(async () => {
    db = await startPostgres();
    await db.sql('CREATE DATABASE wk');
    http = await freePort();
    sg = await startScopegate(config(POOL_SIZE));
    await sg.waitForLog((l) => l.msg === 'all workers listening');
  });

  after(async () => {
    for (const c of open) await c.end().catch(() => undefined);
    if (sg) {
      const pids = workerPids(await metrics().catch(() => ''));
      // SIGTERM: every worker drains, then the primary exits 0 and no worker is left.
      assert.equal(await sg.stop(), 0);
      for (const pid of pids.values()) assert.throws(() => process.kill(pid, 0), /ESRCH/);
    }
    await db?.stop();
  });

  it('splits pool sizes so the shares add up to the configured size', () => {
    assert.deepEqual([0, 1, 2].map((i) => shareOf(10, i, 3, 1)), [4, 3, 3]);
    assert.deepEqual([0, 1].map((i) => shareOf(1, i, 2, 1)), [1, 1]);
    assert.deepEqual([0, 1].map((i) => shareOf(1, i, 2)), [1, 0]);
    const cfg = parseConfig({
      workers: 2,
      pool: { max_client_conn: 101, reserve_pool_size: 3 },
      databases: {
        a: { url: 'postgres://u@h/a', pool_size: 5, min_pool_size: 1 },
        t: { route_by_claim: 'tenant', routes: { x: { url: 'postgres://u@h/x', pool_size: 7 } } },
      },
    }, null);
    const parts = [0, 1].map((i) => shareConfig(cfg, i, 2));
    assert.deepEqual(parts.map((p) => p.databases.get('a')!.pool_size), [3, 2]);
    assert.deepEqual(parts.map((p) => p.databases.get('a')!.min_pool_size), [1, 0]);
    assert.deepEqual(parts.map((p) => p.databases.get('a')!.reserve_pool_size), [2, 1]);
    assert.deepEqual(parts.map((p) => p.databases.get('t')!.routing!.routes.get('x')!.pool_size), [4, 3]);
    assert.deepEqual(parts.map((p) => p.pool.max_client_conn), [51, 50]);
    const db1 = { a: { url: 'postgres://u@h/a' } };
    assert.equal(parseConfig({ databases: db1 }, null).workers, 1);
    assert.equal(parseConfig({ workers: 'auto', databases: db1 }, null).workers, availableParallelism());
    assert.throws(() => parseConfig({ workers: 0, databases: db1 }, null), (e: unknown) => e instanceof ConfigError && e.message.includes('workers'));
  });

  it('a worker that cannot start ends the primary with its exit code instead of restarting', async () => {
    const bad = startScopegate({ ...config(POOL_SIZE), admin: null, policy: '/nonexistent/policy.yaml' });
    await assert.rejects(bad, /scopegate exited with 2/);
  });

  it('/metrics does not add up what each worker reports once: one policy is scopegate_policy_info 1, not 2', async () => {
    const other = await freePort();
    const dir = join(tmpdir(), `workers-policy-${process.pid}.yaml`);
    writeFileSync(dir, 'default_schema: public\nscopes:\n  "r":\n    role: app_user\n    allow:\n      - { actions: [select], tables: [t] }\n');
    const withPolicy = await startScopegate({ ...config(POOL_SIZE), policy: dir, admin: { scope: 'scopegate:admin', listen_http: `${HOST}:${other}`, trust_access: 'admin' } });
    try {
      const m = await waitFor(async () => {
        const text = await (await fetch(`http://${HOST}:${other}/metrics`)).text();
        return metricSum(text, 'scopegate_workers') === 2 ? text : null;
      }, 'both workers up');
      const info = m!.split('\n').filter((l) => l.startsWith('scopegate_policy_info{'));
      assert.equal(info.length, 1, info.join('\n'));
      assert.match(info[0]!, / 1$/);
    } finally {
      await withPolicy.stop();
      rmSync(dir, { force: true });
    }
  });

  it('both workers take clients; SHOW CLIENTS lists them with a worker column and unique ids', async () => {
    const cs = await Promise.all([1, 2, 3, 4, 5, 6].map(() => client()));
    for (const c of cs) assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
    const rows = (await consoleQuery('SHOW CLIENTS')).filter((r) => r.database === 'app');
    assert.equal(rows.length, 6);
    assert.deepEqual([...workersOf(rows)].sort(), ['0', '1']);
    assert.equal(new Set(rows.map((r) => r.id)).size, 6);
    // KILL_CLIENT reaches a client of either worker, whichever worker runs the console.
    for (const r of ['0', '1'].map((w) => rows.find((x) => x.worker === w)!)) await consoleQuery(`KILL_CLIENT ${r.id}`);
    await waitFor(async () => (await consoleQuery('SHOW CLIENTS')).filter((r) => r.database === 'app').length === 4, 'two clients killed');
  });

  it('a cancel reaches the worker that issued the key, whichever worker accepted the cancel', async () => {
    const owners = new Set<number>();
    const before = metricSum(await metrics(), 'scopegate_worker_cancel_relays_total');
    for (let i = 0; i < 8; i++) {
      const name = `sleeper${i}`;
      // Round-robin: a client and its cancel alternate workers; a filler connection every other
      // round shifts which worker holds the client, so both workers' keys are cancelled.
      if (i % 4 >= 2) await client('filler');
      const c = await client(name);
      const key = c as unknown as { processID: number; secretKey: number };
      owners.add(key.processID & 1);
      const result = c.query('SELECT pg_sleep(60)').then(() => null, (e: { code?: string }) => e.code ?? 'no code');
      await waitFor(async () => (await db.sql(`SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND application_name = '${name}' AND query = 'SELECT pg_sleep(60)'`)).rowCount === 1, `${name}'s sleep`);
      await sendCancel(sg.port, key.processID, key.secretKey);
      assert.equal(await result, '57014', `cancel ${i} (key of worker ${key.processID & 1})`);
    }
    // Clients of both workers were cancelled, and some cancels landed on the other worker.
    assert.deepEqual([...owners].sort(), [0, 1]);
    const relayed = metricSum(await metrics(), 'scopegate_worker_cancel_relays_total') - before;
    assert.ok(relayed > 0, `cancels relayed: ${relayed}`);
  });

  it('SHOW POOLS and /metrics add up every worker', async () => {
    // Two clients on each worker (its share of pool_size 4), each holding a server connection in
    // an open transaction: 4 in all. Which worker takes a connection is the primary's choice.
    const cs: pg.Client[] = [];
    const per = new Map<string, number>();
    for (let k = 0; cs.length < 4; k += 2) {
      assert.ok(k < 40, 'round-robin gave both workers clients');
      // Two connections in a row (then the console's): round-robin alternates between them.
      const pair = [await client(`holder${k}`), await client(`holder${k + 1}`)];
      const shown = await consoleQuery('SHOW CLIENTS');
      for (const [j, c] of pair.entries()) {
        const w = shown.find((r) => r.application_name === `holder${k + j}`)!.worker!;
        if ((per.get(w) ?? 0) >= 2) { await c.end(); continue; }
        per.set(w, (per.get(w) ?? 0) + 1);
        cs.push(c);
      }
    }
    for (const c of cs) await c.query('BEGIN; SELECT 1');
    const pools = (await consoleQuery('SHOW POOLS')).filter((r) => r.database === 'app');
    assert.equal(pools.length, 1);
    assert.equal(Number(pools[0]!.sv_active), 4);
    const servers = (await consoleQuery('SHOW SERVERS')).filter((r) => r.database === 'app' && r.state === 'active');
    assert.equal(servers.length, 4);
    assert.deepEqual([...workersOf(servers)].sort(), ['0', '1']);
    const m = await metrics();
    assert.equal(metricSum(m, 'scopegate_server_connections', 'database="app"', 'state="active"'), 4);
    assert.equal(metricSum(m, 'scopegate_workers'), 2);
    assert.equal(Number((await consoleQuery('SHOW DATABASES')).find((r) => r.name === 'app')!.pool_size), POOL_SIZE);
    for (const c of cs) await c.query('COMMIT');
    const ready = await fetch(`http://${HOST}:${http}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal(((await ready.json()) as { workers: unknown[] }).workers.length, 2);
  });

  it('under load the server never sees more connections than pool_size', async () => {
    const cs = await Promise.all(Array.from({ length: 12 }, () => client('load')));
    let most = 0;
    let running = true;
    const watch = (async () => {
      while (running) { most = Math.max(most, await serverBackends()); await new Promise((r) => setImmediate(r)); }
    })();
    await Promise.all(cs.map(async (c) => { for (let i = 0; i < 5; i++) await c.query('SELECT pg_sleep(0.05)'); }));
    running = false;
    await watch;
    assert.ok(most <= POOL_SIZE, `server connections seen: ${most}`);
    // More than one worker's share: both workers served the load.
    assert.ok(most > POOL_SIZE / 2, `server connections seen: ${most}`);
  });

  it('SIGHUP and the console RELOAD reach every worker', async () => {
    const reloaded = (): Set<unknown> => new Set(sg.logs.filter((l) => l.msg === 'configuration reloaded').map((l) => l.worker));
    const count = (): number => sg.logs.filter((l) => l.msg === 'configuration reloaded').length;
    const n0 = count();
    sg.writeConfig(config(6));
    // logrotate: the audit file renamed, then SIGHUP; every worker must write to a new file.
    renameSync(join(sg.dir, 'audit.log'), join(sg.dir, 'audit.log.1'));
    sg.proc.kill('SIGHUP');
    await waitFor(() => count() >= n0 + 2, 'both workers reloaded');
    assert.deepEqual([...reloaded()].sort(), [0, 1]);
    // Four console connections in a row: round-robin puts two on each worker.
    for (let i = 0; i < 4; i++) await consoleQuery('SHOW VERSION');
    const inNewFile = (): number => { try { return readFileSync(join(sg.dir, 'audit.log'), 'utf8').split('\n').filter((l) => l.includes('"statement":"SHOW VERSION"')).length; } catch { return 0; } };
    await waitFor(() => inNewFile() === 4, 'every worker writing the reopened audit file');
    await waitFor(async () => Number((await consoleQuery('SHOW DATABASES')).find((r) => r.name === 'app')!.pool_size) === 6, 'pool_size 6 over both workers');
    const n1 = count();
    sg.writeConfig(config(POOL_SIZE));
    await consoleQuery('RELOAD');
    await waitFor(() => count() >= n1 + 2, 'RELOAD on both workers');
    await waitFor(async () => Number((await consoleQuery('SHOW DATABASES')).find((r) => r.name === 'app')!.pool_size) === POOL_SIZE, 'pool_size back');
  });

  it('a killed worker is replaced and clients keep being served', async () => {
    const pids = workerPids(await metrics());
    assert.equal(pids.size, 2);
    const victim = pids.get(0)!;
    process.kill(victim, 'SIGKILL');
    await waitFor(async () => {
      const m = await metrics();
      const now = workerPids(m);
      return metricSum(m, 'scopegate_worker_restarts_total') === 1 && metricSum(m, 'scopegate_workers') === 2 && now.get(0) !== undefined && now.get(0) !== victim;
    }, 'worker 0 replaced');
    const cs = await Promise.all([1, 2, 3, 4].map(() => client('after')));
    for (const c of cs) assert.equal((await c.query('SELECT 2 AS two')).rows[0].two, 2);
    const rows = (await consoleQuery('SHOW CLIENTS')).filter((r) => r.application_name === 'after');
    assert.deepEqual([...workersOf(rows)].sort(), ['0', '1']);
  });
});
