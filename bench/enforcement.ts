/**
 * What scope enforcement costs: pgbench -S through scopegate with a policy (every statement
 * parsed/decided, role switched to the scope's role) vs the same scopegate without a policy
 * (plain pooler), same OAuth authentication (HS256 dev tokens, PGPASSWORD=token), side by
 * side, interleaved, for the simple and extended protocols; then the policy engine alone,
 * in-process: µs per cold parse+decision (N distinct texts) and per cached decision (one text
 * repeated).
 *
 *   npx tsc -p tsconfig.json && node dist/bench/enforcement.js [--duration 8] [--clients 20]
 *     [--pool 10] [--rounds 2] [--scale 10] [--modes simple,extended] [--n 5000] [--audit]
 *
 * --audit compares the enforcing scopegate with `log.audit: off` ("plain" column) against the
 * same with `log.audit` a file at audit_sample 1 ("enforced" column): what the audit trail costs.
 *
 * Reuses bench/runner.ts (pgbench), bench/cpu.ts (proxy CPU time) and the test harness.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startPostgres, type TestPostgres } from '../test/harness/postgres.js';
import { startScopegate, type RunningScopegate } from '../test/harness/scopegate.js';
import { AUTH, AUTHENTICATOR, createEnforcementRoles, mintToken, POLICY, SECRET_ENV, TABLES, writePolicy } from './enforced.js';
import type { QueryMode } from './options.js';
import { initPgbench, killRunningPgbench, runPgbenchMeasured, type PgbenchResult } from './runner.js';
import { initParser, PolicyStore } from '../src/policy/index.js';
import { openAuditLog } from '../src/log.js';

const DBNAME = 'postgres';

function auditFile(dir: string): string {
  return join(dir, 'audit.log');
}

function log(m: string): void {
  process.stderr.write(`[enforcement] ${m}\n`);
}

interface Sample { mode: QueryMode; target: 'plain' | 'enforced'; round: number; tps: number; cpuUsPerTxn: number | null; failed: number; errors: string[] }

async function pgbenchThrough(sg: RunningScopegate, password: string, mode: QueryMode, clients: number, duration: number): Promise<{ res: PgbenchResult; cpu: number | null }> {
  const { res, cpuUsPerTxn } = await runPgbenchMeasured(sg.proc.pid ?? null, {
    host: '127.0.0.1', port: sg.port, user: 'bench', password, dbname: DBNAME,
    clients, jobs: 2, mode, duration, script: { kind: 'builtin', name: 'select-only' }, connect: false,
  });
  return { res, cpu: cpuUsPerTxn };
}

function micro(n: number): Array<{ what: string; count: number; usPerCall: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'enf-policy-'));
  try {
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, POLICY);
    const out: Array<{ what: string; count: number; usPerCall: number }> = [];
    const measure = (what: string, texts: (i: number) => string, count: number, scopes: readonly string[]): void => {
      // A fresh store per measurement; parse cache sized so cold texts stay cold.
      const store = PolicyStore.load(file, { cacheSize: count + 10, parseCacheSize: count + 10 });
      let denied = 0;
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < count; i++) if (!store.check(texts(i), scopes).allowed) denied++;
      const ns = Number(process.hrtime.bigint() - t0);
      if (denied !== 0 && scopes.length > 0) throw new Error(`${what}: ${denied} unexpected denials`);
      out.push({ what, count, usPerCall: ns / 1000 / count });
    };
    const scopes = ['bench'];
    // Warm up the parser and JIT.
    measure('warm-up', (i) => `SELECT abalance FROM pgbench_accounts WHERE aid = ${i}`, 2000, scopes);
    out.length = 0;
    measure('cold: pgbench -S text, distinct literal', (i) => `SELECT abalance FROM pgbench_accounts WHERE aid = ${1_000_000 + i}`, n, scopes);
    measure('cold: 3-way join + CTE + subquery, distinct literal', (i) =>
      `WITH t AS (SELECT tid, bid FROM pgbench_tellers WHERE tbalance > ${i}) SELECT a.aid, b.bbalance, (SELECT count(*) FROM pgbench_history h WHERE h.aid = a.aid) FROM pgbench_accounts a JOIN pgbench_branches b ON b.bid = a.bid JOIN t ON t.bid = b.bid WHERE a.aid = ${i} ORDER BY 1 LIMIT 5`, n, scopes);
    measure('cached: pgbench -S text (simple), repeated', () => 'SELECT abalance FROM pgbench_accounts WHERE aid = 4242;', n * 20, scopes);
    measure('cached: pgbench -S text (extended, $1), repeated', () => 'SELECT abalance FROM pgbench_accounts WHERE aid = $1;', n * 20, scopes);
    // What one audit line costs at full sampling: the per-statement part appended to the
    // client's pre-serialised fields, buffered and written to a file in 4 KiB chunks.
    const audit = openAuditLog(join(dir, 'micro-audit.log'));
    const client = '"addr":"127.0.0.1","tls":null,"sub":"bench","user":"bench","scopes":["bench"],"db":"postgres",';
    const decision = '"role":"bench_reader","fingerprint":"0123456789abcdef","statement":"SELECT abalance FROM pgbench_accounts WHERE aid = $1","decision":"allow","reason":"granted","policy_version":"0123456789ab"';
    const lines = n * 40;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < lines; i++) audit.line(`${client}"audit":"statement",${decision}`);
    audit.close();
    out.push({ what: 'audit: one line to a file (log.audit path, sample 1)', count: lines, usPerCall: Number(process.hrtime.bigint() - t0) / 1000 / lines });
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '8' },
      clients: { type: 'string', default: '20' },
      pool: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '2' },
      scale: { type: 'string', default: '10' },
      modes: { type: 'string', default: 'simple,extended' },
      n: { type: 'string', default: '5000' },
      'skip-pgbench': { type: 'boolean', default: false },
      audit: { type: 'boolean', default: false },
    },
  });
  const duration = Number(values.duration);
  const clients = Number(values.clients);
  const pool = Number(values.pool);
  const rounds = Number(values.rounds);
  const modes = values.modes!.split(',') as QueryMode[];
  const n = Number(values.n);

  await initParser();
  log('policy engine micro-benchmark');
  const microRows = micro(n);

  const samples: Sample[] = [];
  let auditLines = 0;
  const stops: Array<() => Promise<unknown>> = [];
  const cleanup = async (): Promise<void> => {
    killRunningPgbench();
    for (const s of stops.reverse()) await s().catch(() => undefined);
    stops.length = 0;
  };
  process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)); });
  if (!values['skip-pgbench']) {
    try {
      log('starting PostgreSQL');
      const pg: TestPostgres = await startPostgres({ flags: ['-c', 'max_connections=200'] });
      stops.push(() => pg.stop());
      log(`pgbench -i -s ${values.scale}`);
      await initPgbench({ host: pg.host, port: pg.port, user: 'postgres', password: 'postgres-test-pw', dbname: DBNAME }, Number(values.scale));
      await createEnforcementRoles(pg);
      await pg.sql(`
        CREATE ROLE bench_plain LOGIN PASSWORD 'plain-pw';
        GRANT SELECT ON ${TABLES.join(', ')} TO bench_plain;`);
      const dir = mkdtempSync(join(tmpdir(), 'enf-'));
      stops.push(async () => rmSync(dir, { recursive: true, force: true }));
      const policyFile = writePolicy(dir);
      const base = { pool: { mode: 'transaction', max_client_conn: 10_000, shutdown_timeout: '5s' }, auth: AUTH };
      const enforced = await startScopegate({
        ...base,
        databases: { [DBNAME]: { url: pg.url(DBNAME, AUTHENTICATOR.user, AUTHENTICATOR.password), pool_size: pool } },
        policy: policyFile,
        log: { level: 'info', audit: values.audit ? auditFile(dir) : 'off', audit_sample: 1 },
      }, SECRET_ENV);
      stops.push(() => enforced.stop());
      // The plain pooler: no policy, so no role switching either; its login role holds the grants.
      // With --audit: the same enforcing scopegate, audit off.
      const plain = values.audit
        ? await startScopegate({
          ...base,
          databases: { [DBNAME]: { url: pg.url(DBNAME, AUTHENTICATOR.user, AUTHENTICATOR.password), pool_size: pool } },
          policy: policyFile,
          log: { level: 'info', audit: 'off' },
        }, SECRET_ENV)
        : await startScopegate({
          ...base,
          databases: { [DBNAME]: { url: pg.url(DBNAME, 'bench_plain', 'plain-pw'), pool_size: pool } },
          log: { level: 'info', audit: 'off' },
        }, SECRET_ENV);
      stops.push(() => plain.stop());
      const tok = mintToken(enforced.configFile, 'bench', 'bench');
      for (const mode of modes) {
        for (let round = 1; round <= rounds; round++) {
          // Alternate which goes first so drift on the machine hits both alike.
          const order: Array<['plain' | 'enforced', RunningScopegate]> = round % 2 === 1 ? [['plain', plain], ['enforced', enforced]] : [['enforced', enforced], ['plain', plain]];
          for (const [name, sg] of order) {
            const { res, cpu } = await pgbenchThrough(sg, tok, mode, clients, duration);
            const failed = (res.failed ?? 0) + res.abortedClients;
            samples.push({ mode, target: name, round, tps: res.tps ?? 0, cpuUsPerTxn: cpu, failed, errors: res.errors });
            log(`${mode} ${name} round ${round}: tps ${res.tps ?? 'n/a'} cpu µs/txn ${cpu?.toFixed(1) ?? 'n/a'}${failed ? ` FAILED ${failed} ${res.errors.join(' | ')}` : ''}`);
          }
        }
      }
      if (values.audit) {
        // Stop first so the last buffered lines are in the file, then count them.
        await enforced.stop();
        auditLines = readFileSync(auditFile(dir), 'utf8').split('\n').length - 1;
      }
    } finally {
      await cleanup();
    }
  }

  const out: string[] = [];
  out.push(values.audit
    ? `# Audit trail cost: enforced with log.audit off ("plain" columns) vs a file at audit_sample 1 ("enforced" columns) (${new Date().toISOString()})`
    : `# Scope enforcement cost (${new Date().toISOString()})`);
  out.push('');
  out.push(`machine: ${availableParallelism()} CPUs, load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}; pgbench -S -c ${clients} -j 2 -T ${duration}, pool ${pool}, ${rounds} interleaved rounds per mode`);
  out.push('');
  if (samples.length > 0) {
    out.push('| mode | plain tps | enforced tps | enforced ÷ plain | plain proxy CPU µs/txn | enforced proxy CPU µs/txn | failed |');
    out.push('|---|---:|---:|---:|---:|---:|---:|');
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    for (const mode of modes) {
      const p = samples.filter((s) => s.mode === mode && s.target === 'plain');
      const e = samples.filter((s) => s.mode === mode && s.target === 'enforced');
      const pt = mean(p.map((s) => s.tps));
      const et = mean(e.map((s) => s.tps));
      const pc = mean(p.map((s) => s.cpuUsPerTxn ?? 0));
      const ec = mean(e.map((s) => s.cpuUsPerTxn ?? 0));
      const failed = [...p, ...e].reduce((a, s) => a + s.failed, 0);
      out.push(`| ${mode} | ${pt.toFixed(0)} | ${et.toFixed(0)} | ${(et / pt).toFixed(3)} | ${pc.toFixed(1)} | ${ec.toFixed(1)} | ${failed} |`);
    }
    out.push('');
    if (values.audit) out.push(`audit lines written: ${auditLines}`, '');
    out.push('per round: ' + samples.map((s) => `${s.mode}/${s.target}#${s.round}=${s.tps.toFixed(0)}`).join(', '));
    out.push('');
  }
  out.push('| policy engine, in-process (PolicyStore.check) | calls | µs per call |');
  out.push('|---|---:|---:|');
  for (const r of microRows) out.push(`| ${r.what} | ${r.count} | ${r.usPerCall.toFixed(2)} |`);
  process.stdout.write(out.join('\n') + '\n');
  const anyFailed = samples.some((s) => s.failed > 0 || s.tps === 0);
  process.exitCode = anyFailed ? 1 : 0;
}

main().catch((err: unknown) => {
  killRunningPgbench();
  process.stderr.write(`enforcement bench failed: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
