/**
 * Two scopegate builds side by side: the same enforcing, fully auditing configuration (HS256
 * token, policy, every statement audited to a file) in front of one PostgreSQL, pgbench -S
 * against each in turns (the order alternating by round), medians of tps and proxy CPU per
 * transaction. For "did this change make the hot path cheaper": build the old commit in a
 * worktree (`git worktree add --detach ../old REV && (cd ../old && npm ci && npx tsc)`).
 *
 *   node dist/bench/builds.js --a ../old --b . [--rounds 4] [--duration 5] [--clients 20]
 *     [--modes simple,extended,prepared] [--rate TPS] [--a-args FLAGS] [--b-args FLAGS]
 *
 * --a-args / --b-args: node flags for that build's process: `--a . --b .
 * --b-args=--max-semi-space-size=64` (with `=`, as the value starts with a dash) measures a
 * flag on one build against the same build without it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { startPostgres, SUPERPASS, SUPERUSER } from '../test/harness/postgres.js';
import { freePort } from '../test/harness/ports.js';
import { nodeFlags } from '../test/harness/scopegate.js';
import { AUTH, AUTHENTICATOR, SCOPE, SECRET_ENV, createEnforcementRoles, mintToken, writePolicy } from './enforced.js';
import type { QueryMode } from './options.js';
import { median } from './report.js';
import { initPgbench, runPgbenchMeasured } from './runner.js';

const DBNAME = 'postgres';

interface Build { name: string; port: number; pid: number; token: string; runs: Map<QueryMode, Array<{ tps: number; cpu: number }>> }

function log(m: string): void {
  process.stderr.write(`[builds] ${m}\n`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    a: { type: 'string' }, b: { type: 'string' }, rounds: { type: 'string', default: '4' }, duration: { type: 'string', default: '5' },
    clients: { type: 'string', default: '20' }, modes: { type: 'string', default: 'simple,extended,prepared' },
    // A fixed rate (pgbench -R) makes CPU per transaction comparable on a busy machine: both
    // builds do the same work, instead of the one descheduled more doing less of it.
    rate: { type: 'string' },
    'a-args': { type: 'string', default: '' }, 'b-args': { type: 'string', default: '' },
  } });
  const rate = values.rate === undefined ? undefined : Number(values.rate);
  if (values.a === undefined || values.b === undefined) throw new Error('usage: --a DIR --b DIR (checkouts with a built dist/)');
  const modes = values.modes!.split(',') as QueryMode[];
  const clients = Number(values.clients);
  const pg = await startPostgres({ flags: ['-c', 'max_connections=200'] });
  const procs: ChildProcess[] = [];
  const dirs: string[] = [];
  try {
    await initPgbench({ host: pg.host, port: pg.port, user: SUPERUSER, password: SUPERPASS, dbname: DBNAME }, 10);
    await createEnforcementRoles(pg);
    const builds: Build[] = [];
    for (const [name, root, args] of [['a', values.a, values['a-args']!], ['b', values.b, values['b-args']!]] as const) {
      const dir = mkdtempSync(join(tmpdir(), `bench-builds-${name}-`));
      dirs.push(dir);
      const port = await freePort();
      const configFile = join(dir, 'scopegate.yaml');
      writeFileSync(configFile, stringify({
        listen: { host: '127.0.0.1', port },
        databases: { [DBNAME]: { url: pg.url(DBNAME, AUTHENTICATOR.user, AUTHENTICATOR.password), pool_size: 10 } },
        pool: { mode: 'transaction', max_client_conn: 10_000 },
        auth: AUTH,
        policy: writePolicy(dir),
        log: { level: 'warn', audit: join(dir, 'audit.log'), audit_sample: 1 },
      }));
      const flags = nodeFlags(args);
      const p = spawn(process.execPath, [...flags, join(resolve(root), 'bin', 'scopegate.js'), '--config', configFile], { env: { ...process.env, ...SECRET_ENV }, stdio: 'ignore' });
      procs.push(p);
      builds.push({ name: `${name} (${root}${flags.length !== 0 ? ` ${args}` : ''})`, port, pid: p.pid!, token: mintToken(configFile, SCOPE, 'bench'), runs: new Map() });
    }
    const run = (b: Build, mode: QueryMode, seconds: number) => runPgbenchMeasured(b.pid, {
      host: '127.0.0.1', port: b.port, user: 'bench', password: b.token, dbname: DBNAME, clients, jobs: 2, mode, duration: seconds,
      script: { kind: 'builtin', name: 'select-only' }, connect: false, ...(rate !== undefined && seconds > 2 ? { rate } : {}),
    });
    for (const b of builds) {
      // Up once it answers; then a warm-up per mode (JIT, decision caches).
      for (let i = 0; i < 50 && !(await run(b, 'simple', 1)).res.transactions; i++) await new Promise((r) => setTimeout(r, 200));
      for (const m of modes) await run(b, m, 2);
    }
    for (let round = 0; round < Number(values.rounds); round++) {
      for (const mode of modes) {
        for (const b of round % 2 === 0 ? builds : [...builds].reverse()) {
          const { res, cpuUsPerTxn } = await run(b, mode, Number(values.duration));
          if (res.tps === null || cpuUsPerTxn === null) { log(`round ${round} ${mode} ${b.name}: no result (${res.errors.join(' / ')})`); continue; }
          let runs = b.runs.get(mode);
          if (runs === undefined) b.runs.set(mode, (runs = []));
          runs.push({ tps: res.tps, cpu: cpuUsPerTxn });
          log(`round ${round} ${mode} ${b.name}: ${res.tps.toFixed(0)} tps, ${cpuUsPerTxn.toFixed(1)} µs/txn, load ${(loadavg()[0] ?? 0).toFixed(1)}`);
        }
      }
    }
    process.stdout.write(`| mode | build | runs | median tps | median proxy CPU µs/txn |\n|---|---|---:|---:|---:|\n`);
    for (const mode of modes) {
      for (const b of builds) {
        const runs = b.runs.get(mode) ?? [];
        const tps = median(runs.map((r) => r.tps));
        const cpu = median(runs.map((r) => r.cpu));
        process.stdout.write(`| ${mode} | ${b.name} | ${runs.length} | ${tps === null ? '—' : tps.toFixed(0)} | ${cpu === null ? '—' : cpu.toFixed(1)} |\n`);
      }
    }
  } finally {
    for (const p of procs) p.kill('SIGTERM');
    await pg.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench builds: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
