/**
 * Benchmarks scopegate against PgBouncer and a direct connection with pgbench, in one run:
 * PostgreSQL (embedded), PgBouncer and scopegate are started here, each (mode, clients)
 * configuration runs against every target in turn, and the proxies' CPU time is read from
 * /proc. See bench/README.md.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPostgres, SUPERPASS, SUPERUSER } from '../test/harness/postgres.js';
import { parseOptions, type BenchOptions, type QueryMode, type Script } from './options.js';
import { ENFORCED_AUDIT } from './options.js';
import { PGBOUNCER2_ENV, PGBOUNCER_BIN, pgbouncerInstalled, pgbouncerVersion, secondPgbouncerBin } from './pgbouncer.js';
import { markdownReport, medianRow, type MachineFacts, type Report, type Row } from './report.js';
import { initPgbench, killRunningPgbench, PGBENCH_BIN, runPgbenchMeasured } from './runner.js';
import { directTarget, enforcedAuditTarget, pgbouncerTarget, scopegateTarget, type Backend, type PgbouncerBinary, type Target } from './targets.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DBNAME = 'postgres';

/** max_prepared_statements of the second PgBouncer, so it can run pgbench -M prepared in transaction mode. */
const PGBOUNCER2_PREPARED = 200;

export const PREPARED_PGBOUNCER_NOTE =
  'pgbench -M prepared is not run against PgBouncer 1.18: in transaction mode it does not track protocol-level prepared statements (that needs PgBouncer ≥ 1.21 with max_prepared_statements), so statements prepared on one server connection are missing on the next.';

async function boundedStep(name: string, run: () => Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => { log(`cleanup: ${name} did not stop within ${ms} ms`); resolve(); }, ms);
  });
  await Promise.race([run().catch((err: unknown) => log(`cleanup: ${name}: ${String(err)}`)), timeout]);
  clearTimeout(timer);
}

/** Stops what was started, newest first, each bounded in time. */
class Cleanup {
  /** Aborted once cleanup starts, so the benchmark loop stops instead of using stopped targets. */
  readonly interrupted = new AbortController();
  private readonly steps: Array<{ name: string; run: () => Promise<void> }> = [];
  private running: Promise<void> | null = null;

  add(name: string, run: () => Promise<void>): void {
    this.steps.push({ name, run });
  }

  /** Idempotent: a second caller waits for the first cleanup to finish. */
  runAll(): Promise<void> {
    this.running ??= this.stopAll();
    return this.running;
  }

  private async stopAll(): Promise<void> {
    this.interrupted.abort();
    killRunningPgbench();
    for (const step of this.steps.reverse()) await boundedStep(step.name, step.run, 20_000);
  }
}

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

function installSignalHandlers(cleanup: Cleanup): void {
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: stopping`);
    void cleanup.runAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
}

function firstLine(bin: string, args: string[]): string {
  try {
    return execFileSync(bin, args, { encoding: 'utf8', timeout: 10_000 }).split('\n')[0]?.trim() ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function scopegateVersion(): string {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version?: string };
  const commit = firstLine('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']);
  return `${pkg.version ?? '?'} (git ${commit})`;
}

async function machineFacts(b: Backend): Promise<MachineFacts> {
  const second = secondPgbouncerBin();
  const version = await b.pg.sql("SELECT current_setting('server_version') AS v, current_setting('max_connections') AS m");
  const row = version.rows[0] as { v?: string; m?: string } | undefined;
  return {
    date: new Date().toISOString(),
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    cores: availableParallelism(),
    memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
    kernel: release(),
    node: process.version,
    postgres: `PostgreSQL ${row?.v ?? '?'} (max_connections ${row?.m ?? '?'})`,
    pgbench: firstLine(PGBENCH_BIN, ['--version']),
    pgbouncer: pgbouncerInstalled() ? pgbouncerVersion() : null,
    pgbouncer2: second !== null && pgbouncerInstalled(second) ? `${pgbouncerVersion(second)} (${second}, max_prepared_statements ${PGBOUNCER2_PREPARED})` : null,
    scopegate: scopegateVersion(),
    load: '',
  };
}

function scriptLabel(s: Script): string {
  return s.kind === 'builtin' ? s.name : s.path;
}

function pgbouncerBinary(name: 'pgbouncer' | 'pgbouncer2', notes: string[]): PgbouncerBinary | null {
  if (name === 'pgbouncer') return { name, bin: PGBOUNCER_BIN, maxPreparedStatements: null };
  const bin = secondPgbouncerBin();
  if (bin === null) {
    notes.push(`pgbouncer2: ${PGBOUNCER2_ENV} is not set; its rows are missing.`);
    return null;
  }
  return { name, bin, maxPreparedStatements: PGBOUNCER2_PREPARED };
}

async function startTargets(b: Backend, opts: BenchOptions, cleanup: Cleanup, notes: string[]): Promise<Target[]> {
  const targets: Target[] = [];
  for (const name of opts.targets) {
    if (name === 'direct') {
      targets.push(directTarget(b));
    } else if (name === 'pgbouncer' || name === 'pgbouncer2') {
      const binary = pgbouncerBinary(name, notes);
      if (binary === null) continue;
      log(`starting ${name} (${binary.bin})`);
      const started = await pgbouncerTarget(b, opts, binary);
      if (started === null) notes.push(`${name}: ${binary.bin} does not exist; its rows are missing.`);
      else {
        cleanup.add(name, started.target.stop);
        targets.push(started.target);
      }
    } else if (name === ENFORCED_AUDIT) {
      log(`starting ${name}`);
      const t = await enforcedAuditTarget(b, opts);
      cleanup.add(name, t.stop);
      targets.push(t);
    } else {
      log(`starting ${name}`);
      const t = await scopegateTarget(b, opts, name);
      cleanup.add(name, t.stop);
      targets.push(t);
    }
  }
  return targets;
}

function unsupportedRow(mode: QueryMode, clients: number, t: Target, note: string): Row {
  return { mode, clients, target: t.name, tps: null, latencyMs: null, transactions: null, failed: null, abortedClients: 0, proxyCpuUsPerTxn: null, note };
}

/** When one pgbench run of an audited target ran, to attribute audit lines to it. */
interface RunWindow { mode: QueryMode; clients: number; startMs: number; endMs: number; transactions: number }

async function measure(b: Backend, opts: BenchOptions, t: Target, mode: QueryMode, clients: number): Promise<Row> {
  const { res: result, cpuUsPerTxn } = await runPgbenchMeasured(t.pid, {
    host: '127.0.0.1', port: t.port, user: t.credentials?.user ?? b.user, password: t.credentials?.password ?? b.password, dbname: b.dbname,
    clients, jobs: opts.jobs, mode, duration: opts.duration, script: opts.script, connect: opts.connect,
  });
  const txns = result.transactions;
  const ok = result.exitCode === 0 && result.errors.length === 0 && result.tps !== null;
  // E.g. under load, all clients still connecting when -T ran out: pgbench prints no tps line.
  const why = result.tps === null && result.errors.length === 0 ? `no tps line; pgbench ended with: ${result.output.trim().split('\n').slice(-3).join(' / ')}` : result.errors.join(' / ');
  return {
    mode, clients, target: t.name,
    tps: result.tps, latencyMs: result.latencyMs, transactions: txns, failed: result.failed,
    abortedClients: result.abortedClients,
    proxyCpuUsPerTxn: cpuUsPerTxn,
    note: ok ? null : `pgbench exit ${String(result.exitCode)}: ${why.slice(0, 400)}`,
  };
}

function describeRow(r: Row): string {
  const cpu = r.proxyCpuUsPerTxn === null ? '' : `, proxy ${r.proxyCpuUsPerTxn.toFixed(1)} µs/txn`;
  const failed = r.failed === null && r.abortedClients === 0 ? '' : `, failed ${String(r.failed)}, aborted clients ${r.abortedClients}`;
  return `${r.mode} c=${r.clients} ${r.target}: ${r.tps === null ? 'no tps' : `${r.tps.toFixed(0)} tps`}, ${r.latencyMs ?? '?'} ms${cpu}${failed}`;
}

/** Round `round` starts with a different target each time, so none always runs first. */
function rotated<T>(xs: T[], round: number): T[] {
  const k = round % Math.max(1, xs.length);
  return [...xs.slice(k), ...xs.slice(0, k)];
}

/**
 * Every (mode, clients) configuration runs `rounds` times against each target, the targets
 * interleaved within each round, so drift on the machine hits all alike; a row is the median.
 */
async function runMatrix(b: Backend, opts: BenchOptions, targets: Target[], notes: string[], stop: AbortSignal, windows: RunWindow[]): Promise<Row[]> {
  const rows: Row[] = [];
  for (const mode of opts.modes) {
    for (const clients of opts.clients) {
      // PgBouncer 1.18 cannot pool protocol-level prepared statements.
      const runnable = targets.filter((t) => !(mode === 'prepared' && t.name === 'pgbouncer'));
      const rounds = new Map<Target, Row[]>(runnable.map((t) => [t, []]));
      for (let round = 0; round < opts.rounds; round++) {
        for (const t of rotated(runnable, round)) {
          if (stop.aborted) throw new Error('interrupted');
          const startMs = Date.now();
          const row = await measure(b, opts, t, mode, clients);
          if (stop.aborted) throw new Error('interrupted');
          if (t.finishAudit !== undefined) windows.push({ mode, clients, startMs, endMs: Date.now(), transactions: row.transactions ?? 0 });
          rounds.get(t)?.push(row);
          log(`round ${round + 1}/${opts.rounds} ${describeRow(row)}`);
          if (row.note !== null) notes.push(`${mode} c=${clients} ${t.name} round ${round + 1}: ${row.note}`);
          for (const p of t.drainProblems()) notes.push(`${mode} c=${clients} ${p}`);
        }
      }
      for (const t of targets) {
        const done = rounds.get(t);
        if (done !== undefined) rows.push(medianRow(done));
        else {
          rows.push(unsupportedRow(mode, clients, t, 'not supported by PgBouncer 1.18'));
          if (!notes.includes(PREPARED_PGBOUNCER_NOTE)) notes.push(PREPARED_PGBOUNCER_NOTE);
        }
      }
    }
  }
  return rows;
}

/**
 * The audited target must have written one allowed line, under the scope's role, per statement
 * it decided; lines are attributed to runs by their time. pgbench -S has one statement per
 * transaction.
 */
async function checkAudit(targets: Target[], windows: RunWindow[], notes: string[]): Promise<void> {
  for (const t of targets) {
    if (t.finishAudit === undefined) continue;
    const count = await t.finishAudit();
    const per = new Map<string, { lines: number; transactions: number }>();
    for (const w of windows) {
      const key = `${w.mode} c=${w.clients}`;
      const lines = count.times.filter((ms) => ms >= w.startMs && ms <= w.endMs).length;
      const prev = per.get(key) ?? { lines: 0, transactions: 0 };
      per.set(key, { lines: prev.lines + lines, transactions: prev.transactions + w.transactions });
    }
    const parts = [...per].map(([key, v]) => `${key}: ${v.lines} lines / ${v.transactions} transactions = ${(v.lines / Math.max(1, v.transactions)).toFixed(3)}`);
    const line = `${t.name} audit file: ${count.times.length} lines, ${count.allowedAsReader} allowed under the scope's role, ${count.other} other; ${parts.join('; ')}.`;
    log(line);
    notes.push(line);
  }
}

async function benchmark(opts: BenchOptions, cleanup: Cleanup): Promise<Report> {
  log(`starting PostgreSQL (max_connections=${opts.maxConnections})`);
  const pg = await startPostgres({ flags: ['-c', `max_connections=${opts.maxConnections}`] });
  cleanup.add('postgres', () => pg.stop());
  const b: Backend = { pg, user: SUPERUSER, password: SUPERPASS, dbname: DBNAME };
  log(`pgbench -i -s ${opts.scale}`);
  await initPgbench({ host: pg.host, port: pg.port, user: b.user, password: b.password, dbname: b.dbname }, opts.scale);
  const notes: string[] = [];
  const targets = await startTargets(b, opts, cleanup, notes);
  const machine = await machineFacts(b);
  const loadBefore = loadavg()[0] ?? 0;
  const windows: RunWindow[] = [];
  const rows = await runMatrix(b, opts, targets, notes, cleanup.interrupted.signal, windows);
  await checkAudit(targets, windows, notes);
  machine.load = `${loadBefore.toFixed(2)} before, ${(loadavg()[0] ?? 0).toFixed(2)} after`;
  return {
    machine,
    settings: {
      duration: opts.duration, script: scriptLabel(opts.script), connect: opts.connect, pool: opts.pool,
      jobs: opts.jobs, rounds: opts.rounds, scale: opts.scale, pgbouncerAuth: opts.pgbouncerAuth,
    },
    rows,
    notes,
  };
}

function writeOutput(report: Report, out: string | null): void {
  const markdown = markdownReport(report);
  process.stdout.write(markdown);
  if (out === null) return;
  writeFileSync(out, out.endsWith('.json') ? `${JSON.stringify(report, null, 2)}\n` : markdown);
  log(`wrote ${out}`);
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const cleanup = new Cleanup();
  installSignalHandlers(cleanup);
  try {
    writeOutput(await benchmark(opts, cleanup), opts.out);
  } finally {
    await cleanup.runAll();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
