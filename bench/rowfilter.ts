/**
 * What a row filter costs: a select-only pgbench custom script
 *
 *   \set id random(1, N)
 *   SELECT total FROM orders WHERE id = :id;
 *
 * through scopegate with a policy whose scope filters `orders` by `tenant_id = claim('tenant')`
 * (every statement rewritten, per-client claims) vs the same scopegate with an identical
 * policy without row_filters (plain grant), same OAuth token (HS256 dev secret,
 * PGPASSWORD=token), extended protocol, interleaved rounds. Audit lines go to a file.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/rowfilter.js [--duration 8] [--clients 20]
 *     [--pool 10] [--rounds 3] [--rows 100000] [--mode extended]
 *
 * Reuses bench/runner.ts (pgbench), bench/cpu.ts (proxy CPU time) and the test harness.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startPostgres, type TestPostgres } from '../test/harness/postgres.js';
import { CLI, startScopegate, type RunningScopegate } from '../test/harness/scopegate.js';
import type { QueryMode } from './options.js';
import { killRunningPgbench, runPgbenchMeasured, type PgbenchResult } from './runner.js';

const SECRET = 'bench-dev-secret-0123456789abcdef0123';
const AUTH = { method: 'oauth', issuer: 'https://issuer.bench.test', audience: 'scopegate', secret: 'env:SG_SECRET', algorithms: ['HS256'] };
const DBNAME = 'postgres';

const policy = (filtered: boolean): string => `default_schema: public
mode: enforce
scopes:
  "orders:read":
    role: bench_reader
    allow:
      - { actions: [select], tables: [orders] }
${filtered ? `    row_filters:
      orders: "tenant_id = claim('tenant')"
` : ''}`;

type Target = 'plain' | 'filtered';
interface Sample { target: Target; round: number; tps: number; cpuUsPerTxn: number | null; failed: number; errors: string[] }

function log(m: string): void {
  process.stderr.write(`[rowfilter] ${m}\n`);
}

function token(configFile: string): string {
  return execFileSync(process.execPath, [CLI, 'token', '--config', configFile, '--scope', 'orders:read', '--sub', 'bench', '--claim', 'tenant=acme'], {
    env: { ...process.env, SG_SECRET: SECRET },
    encoding: 'utf8',
    timeout: 30_000,
  }).trim();
}

async function through(sg: RunningScopegate, password: string, script: string, mode: QueryMode, clients: number, duration: number): Promise<{ res: PgbenchResult; cpu: number | null }> {
  const { res, cpuUsPerTxn } = await runPgbenchMeasured(sg.proc.pid ?? null, {
    host: '127.0.0.1', port: sg.port, user: 'bench', password, dbname: DBNAME,
    clients, jobs: 2, mode, duration, script: { kind: 'file', path: script }, connect: false,
  });
  return { res, cpu: cpuUsPerTxn };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '8' },
      clients: { type: 'string', default: '20' },
      pool: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '3' },
      rows: { type: 'string', default: '100000' },
      mode: { type: 'string', default: 'extended' },
    },
  });
  const duration = Number(values.duration);
  const clients = Number(values.clients);
  const pool = Number(values.pool);
  const rounds = Number(values.rounds);
  const rows = Number(values.rows);
  const mode = values.mode as QueryMode;

  const samples: Sample[] = [];
  const stops: Array<() => Promise<unknown>> = [];
  const cleanup = async (): Promise<void> => {
    killRunningPgbench();
    for (const s of stops.reverse()) await s().catch(() => undefined);
    stops.length = 0;
  };
  process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)); });
  let auditBytes: Record<Target, number> = { plain: 0, filtered: 0 };
  try {
    log('starting PostgreSQL');
    const pg: TestPostgres = await startPostgres({ flags: ['-c', 'max_connections=200'] });
    stops.push(() => pg.stop());
    await pg.sql(`
      CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD 'auth-pw';
      CREATE ROLE bench_reader NOLOGIN;
      GRANT bench_reader TO authenticator;
      CREATE TABLE orders (id int PRIMARY KEY, tenant_id text NOT NULL, total numeric NOT NULL);
      INSERT INTO orders SELECT i, CASE WHEN i % 2 = 0 THEN 'acme' ELSE 'globex' END, i FROM generate_series(1, ${rows}) i;
      GRANT SELECT ON orders TO bench_reader;
      ALTER ROLE authenticator SET search_path = public;`);
    await pg.sql('VACUUM ANALYZE orders');
    const dir = mkdtempSync(join(tmpdir(), 'rowfilter-'));
    stops.push(async () => rmSync(dir, { recursive: true, force: true }));
    const script = join(dir, 'select.sql');
    writeFileSync(script, `\\set id random(1, ${rows})\nSELECT total FROM orders WHERE id = :id;\n`);
    const start = async (target: Target): Promise<RunningScopegate> => {
      const file = join(dir, `policy-${target}.yaml`);
      writeFileSync(file, policy(target === 'filtered'));
      const sg = await startScopegate({
        pool: { mode: 'transaction', max_client_conn: 10_000, shutdown_timeout: '5s' },
        auth: AUTH,
        databases: { [DBNAME]: { url: pg.url(DBNAME, 'authenticator', 'auth-pw'), pool_size: pool } },
        policy: file,
        log: { level: 'info', audit: join(dir, `audit-${target}.log`) },
      }, { SG_SECRET: SECRET });
      stops.push(() => sg.stop());
      return sg;
    };
    const targets: Record<Target, RunningScopegate> = { plain: await start('plain'), filtered: await start('filtered') };
    const tok = token(targets.plain.configFile);
    // Warm-up (JIT, caches, server connections), not recorded.
    for (const t of ['plain', 'filtered'] as const) await through(targets[t], tok, script, mode, clients, 2);
    for (let round = 1; round <= rounds; round++) {
      const order: Target[] = round % 2 === 1 ? ['plain', 'filtered'] : ['filtered', 'plain'];
      for (const t of order) {
        const { res, cpu } = await through(targets[t], tok, script, mode, clients, duration);
        const failed = (res.failed ?? 0) + res.abortedClients + (res.exitCode === 0 ? 0 : 1);
        samples.push({ target: t, round, tps: res.tps ?? 0, cpuUsPerTxn: cpu, failed, errors: res.errors });
        log(`${t} round ${round}: tps ${res.tps ?? 'n/a'} cpu µs/txn ${cpu?.toFixed(1) ?? 'n/a'}${failed ? ` FAILED ${failed} ${res.errors.join(' | ')}` : ''}`);
      }
    }
    auditBytes = {
      plain: statSync(join(dir, 'audit-plain.log'), { throwIfNoEntry: false })?.size ?? 0,
      filtered: statSync(join(dir, 'audit-filtered.log'), { throwIfNoEntry: false })?.size ?? 0,
    };
  } finally {
    await cleanup();
  }

  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const p = samples.filter((s) => s.target === 'plain');
  const f = samples.filter((s) => s.target === 'filtered');
  const pt = mean(p.map((s) => s.tps));
  const ft = mean(f.map((s) => s.tps));
  const out: string[] = [];
  out.push(`# Row filter cost (${new Date().toISOString()})`);
  out.push('');
  out.push(`machine: ${availableParallelism()} CPUs, load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}; pgbench -f select.sql -M ${mode} -c ${clients} -j 2 -T ${duration}, pool ${pool}, ${rounds} interleaved rounds, ${rows} rows, audit to a file (plain ${auditBytes.plain} B, filtered ${auditBytes.filtered} B)`);
  out.push('');
  out.push('| plain grant tps | row filter tps | filtered ÷ plain | cost | plain proxy CPU µs/txn | filtered proxy CPU µs/txn | failed |');
  out.push('|---:|---:|---:|---:|---:|---:|---:|');
  out.push(`| ${pt.toFixed(0)} | ${ft.toFixed(0)} | ${(ft / pt).toFixed(3)} | ${((1 - ft / pt) * 100).toFixed(1)}% | ${mean(p.map((s) => s.cpuUsPerTxn ?? 0)).toFixed(1)} | ${mean(f.map((s) => s.cpuUsPerTxn ?? 0)).toFixed(1)} | ${[...p, ...f].reduce((a, s) => a + s.failed, 0)} |`);
  out.push('');
  out.push('per round: ' + samples.map((s) => `${s.target}#${s.round}=${s.tps.toFixed(0)}`).join(', '));
  out.push(`target: at most 10% cost → ${ft / pt >= 0.9 ? 'met' : 'NOT met'}`);
  process.stdout.write(out.join('\n') + '\n');
  process.exitCode = samples.some((s) => s.failed > 0 || s.tps === 0) ? 1 : 0;
}

main().catch((err: unknown) => {
  killRunningPgbench();
  process.stderr.write(`rowfilter bench failed: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
