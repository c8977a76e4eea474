/**
 * pgbench -M prepared -S through scopegate vs a direct connection (and PgBouncer when it
 * can do prepared statements in transaction mode, i.e. ≥ 1.21), 20 and 100 clients, proxy
 * pool 10. Targets run interleaved (each round visits every target in turn) so drift on
 * the machine hits all alike; the table reports the median tps over the rounds, the ratio
 * to direct and scopegate's CPU time per transaction.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/prepared.js [--duration S] [--rounds N] [--scale N]
 */
import { parseArgs } from 'node:util';
import { startPostgres, SUPERPASS, SUPERUSER } from '../test/harness/postgres.js';
import { parseOptions } from './options.js';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../test/harness/ports.js';
import { PGBOUNCER_BIN, pgbouncerInstalled, pgbouncerVersion } from './pgbouncer.js';
import { markdownTable, median, type Row } from './report.js';
import { initPgbench, killRunningPgbench, runPgbenchMeasured } from './runner.js';
import { directTarget, scopegateTarget, type Backend, type Target } from './targets.js';

function log(message: string): void {
  process.stderr.write(`[bench:prepared] ${message}\n`);
}

/** "PgBouncer 1.18.0" -> [1, 18]. */
function versionOf(text: string): [number, number] | null {
  const m = /(\d+)\.(\d+)/.exec(text);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

interface Sample { tps: number | null; latencyMs: number | null; txns: number | null; failed: number | null; aborted: number; cpuUs: number | null; error: string | null }

/**
 * PgBouncer ≥ 1.21 with max_prepared_statements = 200 (bench/pgbouncer.ts writes no such
 * setting, and 1.18, Debian's, has none).
 */
async function startPgbouncerPrepared(host: string, port: number, b: Backend, poolSize: number): Promise<{ port: number; pid: number; stop: () => Promise<void> }> {
  const listen = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-bench-pgbouncer-prep-'));
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'userlist.txt'), `"${b.user}" "${b.password}"\n`, { mode: 0o644 });
  writeFileSync(join(dir, 'pgbouncer.ini'), [
    '[databases]', `${b.dbname} = host=${host} port=${port} dbname=${b.dbname} user=${b.user} password=${b.password}`, '',
    '[pgbouncer]', 'listen_addr = 127.0.0.1', `listen_port = ${listen}`, 'unix_socket_dir =', 'auth_type = trust',
    `auth_file = ${join(dir, 'userlist.txt')}`, 'pool_mode = transaction', `default_pool_size = ${poolSize}`, 'max_client_conn = 1000',
    'max_prepared_statements = 200', 'ignore_startup_parameters = extra_float_digits', 'log_connections = 0', 'log_disconnections = 0', '',
  ].join('\n'), { mode: 0o644 });
  const proc = spawn(PGBOUNCER_BIN, [...(userInfo().uid === 0 ? ['-u', 'postgres'] : []), join(dir, 'pgbouncer.ini')], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    const c = new pg.Client({ host: '127.0.0.1', port: listen, user: b.user, database: b.dbname, connectionTimeoutMillis: 2_000 });
    c.on('error', () => undefined);
    try {
      await c.connect();
      await c.query('SELECT 1');
      await c.end();
      break;
    } catch {
      await c.end().catch(() => undefined);
      if (Date.now() > deadline || proc.exitCode !== null) { await stop(); throw new Error('pgbouncer did not start'); }
      await new Promise((r) => setTimeout(r, 200)); // polling for readiness, not synchronisation
    }
  }
  return { port: listen, pid: proc.pid!, stop };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '8' },
      rounds: { type: 'string', default: '2' },
      scale: { type: 'string', default: '10' },
      clients: { type: 'string', default: '20,100' },
      pool: { type: 'string', default: '10' },
      jobs: { type: 'string', default: '2' },
    },
  });
  const duration = Number(values.duration);
  const rounds = Number(values.rounds);
  const clientCounts = String(values.clients).split(',').map(Number);
  // The shared option parser gives the defaults scopegateTarget expects (pool, extra config).
  const opts = parseOptions(['--pool', String(values.pool), '--jobs', String(values.jobs), '--scale', String(values.scale), '--modes', 'prepared', '--targets', 'direct,scopegate']);
  const stops: Array<() => Promise<void>> = [];
  const notes: string[] = [];
  const onSignal = (): void => { killRunningPgbench(); void Promise.allSettled(stops.reverse().map((s) => s())).finally(() => process.exit(130)); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    log(`starting PostgreSQL (max_connections ${opts.maxConnections})`);
    const pgsrv = await startPostgres({ flags: ['-c', `max_connections=${opts.maxConnections}`] });
    stops.push(() => pgsrv.stop());
    const b: Backend = { pg: pgsrv, user: SUPERUSER, password: SUPERPASS, dbname: 'postgres' };
    log(`pgbench -i -s ${opts.scale}`);
    await initPgbench({ host: pgsrv.host, port: pgsrv.port, user: b.user, password: b.password, dbname: b.dbname }, opts.scale);

    const targets: Target[] = [directTarget(b)];
    const sgTarget = await scopegateTarget(b, opts, 'scopegate');
    stops.push(sgTarget.stop);
    targets.push(sgTarget);
    let bouncerVersion = 'not installed';
    if (pgbouncerInstalled()) {
      bouncerVersion = pgbouncerVersion();
      const v = versionOf(bouncerVersion);
      if (v !== null && (v[0] > 1 || (v[0] === 1 && v[1] >= 21))) {
        const bouncer = await startPgbouncerPrepared(pgsrv.host, pgsrv.port, b, opts.pool);
        stops.push(bouncer.stop);
        targets.push({ name: 'pgbouncer', port: bouncer.port, pid: bouncer.pid, drainProblems: () => [], stop: bouncer.stop });
        notes.push(`${bouncerVersion} runs with max_prepared_statements = 200.`);
      } else {
        notes.push(`${bouncerVersion} is not run: it cannot do protocol-level prepared statements in transaction mode (that needs PgBouncer ≥ 1.21 with max_prepared_statements); with pgbench -M prepared, statements prepared on one server connection are missing on the next.`);
      }
    } else {
      notes.push('PgBouncer is not installed; no PgBouncer rows.');
    }

    const samples = new Map<string, Sample[]>();
    for (const clients of clientCounts) {
      for (let round = 1; round <= rounds; round++) {
        // Alternate the order each round so neither target always runs first.
        const order = round % 2 === 1 ? targets : [...targets].reverse();
        for (const t of order) {
          const { res: r, cpuUsPerTxn } = await runPgbenchMeasured(t.pid, {
            host: '127.0.0.1', port: t.port, user: b.user, password: b.password, dbname: b.dbname,
            clients, jobs: opts.jobs, mode: 'prepared', duration, script: { kind: 'builtin', name: 'select-only' }, connect: false,
          });
          const ok = r.exitCode === 0 && r.errors.length === 0 && (r.failed ?? 0) === 0 && r.abortedClients === 0;
          const s: Sample = {
            tps: r.tps, latencyMs: r.latencyMs, txns: r.transactions, failed: r.failed, aborted: r.abortedClients,
            cpuUs: cpuUsPerTxn,
            error: ok ? null : `pgbench exit ${String(r.exitCode)}: ${r.errors.join(' / ').slice(0, 300)}`,
          };
          const key = `${clients}/${t.name}`;
          samples.set(key, [...(samples.get(key) ?? []), s]);
          log(`c=${clients} round ${round} ${t.name}: ${s.tps?.toFixed(0) ?? '?'} tps${s.cpuUs === null ? '' : `, ${s.cpuUs.toFixed(1)} µs/txn`}${s.error ? ` (${s.error})` : ''}`);
          for (const p of t.drainProblems()) notes.push(`c=${clients} ${p}`);
        }
      }
    }

    const rows: Row[] = [];
    for (const clients of clientCounts) {
      for (const t of targets) {
        const ss = samples.get(`${clients}/${t.name}`) ?? [];
        const errors = ss.map((s) => s.error).filter((e): e is string => e !== null);
        for (const e of errors) notes.push(`c=${clients} ${t.name}: ${e}`);
        const cpus = ss.map((s) => s.cpuUs).filter((x): x is number => x !== null);
        rows.push({
          mode: 'prepared', clients, target: t.name,
          tps: median(ss.map((s) => s.tps).filter((x): x is number => x !== null)),
          latencyMs: median(ss.map((s) => s.latencyMs).filter((x): x is number => x !== null)),
          transactions: ss.reduce((n, s) => n + (s.txns ?? 0), 0),
          failed: ss.reduce((n, s) => n + (s.failed ?? 0), 0),
          abortedClients: ss.reduce((n, s) => n + s.aborted, 0),
          proxyCpuUsPerTxn: t.pid === null ? null : median(cpus),
          note: errors.length === 0 ? null : 'errors',
        });
      }
    }
    const out = [
      `pgbench -M prepared -S (select-only), -j ${opts.jobs}, ${duration} s × ${rounds} interleaved rounds per target (median shown), scale ${opts.scale}, proxy pool ${opts.pool}, transaction mode, loopback; ${bouncerVersion}`,
      '',
      markdownTable(rows),
      '',
      ...notes.map((n) => `- ${n}`),
      '',
    ];
    process.stdout.write(out.join('\n'));
  } finally {
    for (const s of stops.reverse()) await s().catch((err: unknown) => log(`cleanup: ${String(err)}`));
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/prepared: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
