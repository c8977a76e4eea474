import { cpuMicros } from './cpu.js';
import { spawn, type ChildProcess } from 'node:child_process';
import type { QueryMode, Script } from './options.js';

export const PGBENCH_BIN = '/usr/bin/pgbench';

export interface PgbenchRun {
  host: string;
  port: number;
  user: string;
  password: string;
  dbname: string;
  clients: number;
  jobs: number;
  mode: QueryMode;
  duration: number;
  script: Script;
  connect: boolean;
  /** pgbench -R: a fixed rate of transactions per second (all targets do the same work); omitted: as fast as possible. */
  rate?: number;
}

export interface PgbenchResult {
  exitCode: number | null;
  tps: number | null;
  latencyMs: number | null;
  transactions: number | null;
  failed: number | null;
  /** Clients pgbench gave up on (`client N aborted ...`). */
  abortedClients: number;
  /** The first error lines pgbench printed, for the report. */
  errors: string[];
  output: string;
}

/** Children in flight, so an interrupt can stop them. */
const running = new Set<ChildProcess>();

export function killRunningPgbench(): void {
  for (const child of running) child.kill('SIGKILL');
}

function scriptArgs(script: Script): string[] {
  return script.kind === 'builtin' ? ['-b', script.name] : ['-f', script.path];
}

export function pgbenchArgs(r: PgbenchRun): string[] {
  return [
    ...scriptArgs(r.script),
    '-n', // no vacuum: it would run through the proxies; the database is vacuumed after -i
    '-M', r.mode,
    '-c', String(r.clients),
    '-j', String(Math.min(r.jobs, r.clients)),
    '-T', String(r.duration),
    ...(r.connect ? ['-C'] : []),
    ...(r.rate !== undefined ? ['-R', String(r.rate)] : []),
    '-h', r.host, '-p', String(r.port), '-U', r.user, r.dbname,
  ];
}

function numberAfter(output: string, re: RegExp): number | null {
  const m = re.exec(output);
  return m?.[1] === undefined ? null : Number(m[1]);
}

export function parsePgbenchOutput(output: string, exitCode: number | null): PgbenchResult {
  const lines = output.split('\n');
  const errorLines = lines.filter((l) => /error|aborted|fatal|could not/i.test(l) && !/^number of/.test(l));
  return {
    exitCode,
    tps: numberAfter(output, /^tps = ([\d.]+)/m),
    latencyMs: numberAfter(output, /^latency average = ([\d.]+) ms/m),
    transactions: numberAfter(output, /^number of transactions actually processed: (\d+)/m),
    failed: numberAfter(output, /^number of failed transactions: (\d+)/m),
    abortedClients: lines.filter((l) => /client \d+ (script \d+ )?aborted/.test(l)).length,
    errors: [...new Set(errorLines.map((l) => l.trim()))].slice(0, 5),
    output,
  };
}

/** Runs pgbench once; it is killed if it outlives its duration by `graceSeconds`. */
export function runPgbench(r: PgbenchRun, graceSeconds = 90): Promise<PgbenchResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(PGBENCH_BIN, pgbenchArgs(r), {
      env: { ...process.env, PGPASSWORD: r.password, PGCONNECT_TIMEOUT: '10' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running.add(child);
    const chunks: string[] = [];
    child.stdout?.on('data', (d: Buffer) => chunks.push(d.toString()));
    child.stderr?.on('data', (d: Buffer) => chunks.push(d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), (r.duration + graceSeconds) * 1000);
    child.on('error', (err) => {
      clearTimeout(timer);
      running.delete(child);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      running.delete(child);
      resolve(parsePgbenchOutput(chunks.join(''), code));
    });
  });
}

/** `pgbench -i`: creates and fills the pgbench tables (then vacuums them). */
export function initPgbench(c: { host: string; port: number; user: string; password: string; dbname: string }, scale: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(PGBENCH_BIN, ['-i', '-q', '-s', String(scale), '-h', c.host, '-p', String(c.port), '-U', c.user, c.dbname], {
      env: { ...process.env, PGPASSWORD: c.password },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    running.add(child);
    const err: string[] = [];
    child.stderr?.on('data', (d: Buffer) => err.push(d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      running.delete(child);
      if (code === 0) resolve();
      else reject(new Error(`pgbench -i exited with ${code}: ${err.join('').slice(-2000)}`));
    });
  });
}

/** Runs pgbench and reads the proxy's CPU time around it: µs per transaction, or null. */
export async function runPgbenchMeasured(pid: number | null, r: PgbenchRun): Promise<{ res: PgbenchResult; cpuUsPerTxn: number | null }> {
  const before = pid === null ? 0 : cpuMicros(pid);
  const res = await runPgbench(r);
  const cpu = pid === null ? null : cpuMicros(pid) - before;
  return { res, cpuUsPerTxn: cpu === null || !res.transactions ? null : cpu / res.transactions };
}
