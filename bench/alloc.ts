/**
 * Heap allocated per transaction on the hot path: pgbench -S through the enforcing scopegate
 * (token auth, policy, every statement audited to a file), with V8's --trace-gc on. Each
 * scavenge line says how much of the young generation it freed; the sum over a run, divided
 * by the run's transactions, is the bytes allocated per transaction (objects that survive are
 * a rounding error on a steady forwarding path). Unlike CPU time this hardly moves with the
 * load on the machine, so it shows a change to the hot path on a shared 2-core box.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/alloc.js [--duration 6] [--clients 20]
 *     [--modes simple,extended,prepared] [--pool 10] [--rounds 2]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { startPostgres, SUPERPASS, SUPERUSER } from '../test/harness/postgres.js';
import { freePort } from '../test/harness/ports.js';
import { CLI } from '../test/harness/scopegate.js';
import { AUTH, AUTHENTICATOR, SCOPE, SECRET_ENV, createEnforcementRoles, mintToken, writePolicy } from './enforced.js';
import type { QueryMode } from './options.js';
import { initPgbench, runPgbenchMeasured } from './runner.js';

const DBNAME = 'postgres';

/** `[gc] Scavenge 12.3 (15.1) -> 4.5 (16.1) MB`: the MB before and after one scavenge. */
const SCAVENGE = /Scavenge\s+([\d.]+)\s+\([\d.]+\)\s+->\s+([\d.]+)/;

function log(m: string): void {
  process.stderr.write(`[alloc] ${m}\n`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    duration: { type: 'string', default: '6' }, clients: { type: 'string', default: '20' },
    modes: { type: 'string', default: 'simple,extended,prepared' }, pool: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
  } });
  const duration = Number(values.duration);
  const clients = Number(values.clients);
  const rounds = Number(values.rounds);
  const modes = values.modes!.split(',') as QueryMode[];
  const dir = mkdtempSync(join(tmpdir(), 'bench-alloc-'));
  const pg = await startPostgres({ flags: ['-c', 'max_connections=200'] });
  let proc: ChildProcess | null = null;
  try {
    await initPgbench({ host: pg.host, port: pg.port, user: SUPERUSER, password: SUPERPASS, dbname: DBNAME }, 10);
    await createEnforcementRoles(pg);
    const port = await freePort();
    const configFile = join(dir, 'scopegate.yaml');
    writeFileSync(configFile, stringify({
      listen: { host: '127.0.0.1', port },
      databases: { [DBNAME]: { url: pg.url(DBNAME, AUTHENTICATOR.user, AUTHENTICATOR.password), pool_size: Number(values.pool) } },
      pool: { mode: 'transaction', max_client_conn: 10_000 },
      auth: AUTH,
      policy: writePolicy(dir),
      log: { level: 'warn', audit: join(dir, 'audit.log'), audit_sample: 1 },
    }));
    let out = '';
    proc = spawn(process.execPath, ['--trace-gc', CLI, '--config', configFile], { env: { ...process.env, ...SECRET_ENV }, stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    proc.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    const token = mintToken(configFile, SCOPE, 'bench');
    const run = (mode: QueryMode, seconds: number) => runPgbenchMeasured(proc!.pid ?? null, {
      host: '127.0.0.1', port, user: 'bench', password: token, dbname: DBNAME, clients, jobs: 2, mode, duration: seconds,
      script: { kind: 'builtin', name: 'select-only' }, connect: false,
    });
    // Up once it answers; the first run also warms the JIT and the decision caches.
    for (let i = 0; i < 50; i++) {
      if ((await run('simple', 1)).res.transactions) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const mode of modes) await run(mode, 2);
    const rows: string[] = [];
    for (let round = 1; round <= rounds; round++) {
      for (const mode of modes) {
        const from = out.length;
        const { res, cpuUsPerTxn } = await run(mode, duration);
        const txns = res.transactions ?? 0;
        let freedMb = 0;
        let scavenges = 0;
        for (const line of out.slice(from).split('\n')) {
          const m = SCAVENGE.exec(line);
          if (m === null) continue;
          scavenges++;
          freedMb += Number(m[1]) - Number(m[2]);
        }
        const kb = txns > 0 ? (freedMb * 1024) / txns : NaN;
        const row = `| ${round} | ${mode} | ${clients} | ${txns} | ${scavenges} | ${kb.toFixed(2)} | ${cpuUsPerTxn === null ? '—' : cpuUsPerTxn.toFixed(1)} |`;
        log(row);
        rows.push(row);
      }
    }
    process.stdout.write(`load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n\n`);
    process.stdout.write('| round | mode | clients | transactions | scavenges | KB allocated per txn | proxy CPU µs/txn |\n|---:|---|---:|---:|---:|---:|---:|\n');
    process.stdout.write(`${rows.join('\n')}\n`);
  } finally {
    proc?.kill('SIGTERM');
    await pg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench alloc: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
