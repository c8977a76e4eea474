/** Starts a PgBouncer binary from a temporary ini for the benchmarks. */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../test/harness/ports.js';
import type { PgbouncerAuth } from './options.js';

/** Debian's PgBouncer (1.18 on bookworm). */
export const PGBOUNCER_BIN = '/usr/sbin/pgbouncer';
/** A second PgBouncer binary, benchmarked as target `pgbouncer2` (e.g. 1.25, which pools prepared statements). */
export const PGBOUNCER2_ENV = 'SCOPEGATE_BENCH_PGBOUNCER';

export function secondPgbouncerBin(): string | null {
  const bin = process.env[PGBOUNCER2_ENV];
  return bin === undefined || bin === '' ? null : bin;
}

export interface PgbouncerSettings {
  bin: string;
  /** `max_prepared_statements` (PgBouncer >= 1.21); null leaves it out of the ini. */
  maxPreparedStatements: number | null;
  /** The PostgreSQL server PgBouncer pools connections to. */
  backend: { host: string; port: number; user: string; password: string; dbname: string };
  poolSize: number;
  auth: PgbouncerAuth;
}

export interface RunningPgbouncer {
  port: number;
  pid: number;
  version: string;
  /** Everything PgBouncer wrote to stderr (its log). */
  log: string[];
  stop(): Promise<void>;
}

export function pgbouncerInstalled(bin = PGBOUNCER_BIN): boolean {
  return existsSync(bin);
}

export function pgbouncerVersion(bin = PGBOUNCER_BIN): string {
  const out = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return out.split('\n')[0]?.trim() ?? 'unknown';
}

function iniFile(s: PgbouncerSettings, port: number, authFile: string): string {
  const b = s.backend;
  return `[databases]
${b.dbname} = host=${b.host} port=${b.port} dbname=${b.dbname} user=${b.user} password=${b.password}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = ${s.auth}
auth_file = ${authFile}
pool_mode = transaction
default_pool_size = ${s.poolSize}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 3600
${s.maxPreparedStatements === null ? '' : `max_prepared_statements = ${s.maxPreparedStatements}\n`}`;
}

/** PgBouncer refuses to run as root, so it switches to the postgres user (`-u`). */
function runAsArgs(): string[] {
  return userInfo().uid === 0 ? ['-u', 'postgres'] : [];
}

function exitPromise(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve();
    else proc.once('exit', () => resolve());
  });
}

async function acceptsQueries(port: number, s: PgbouncerSettings): Promise<boolean> {
  const client = new pg.Client({
    host: '127.0.0.1', port, user: s.backend.user, password: s.backend.password, database: s.backend.dbname,
    connectionTimeoutMillis: 2_000,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function waitUntilReady(proc: ChildProcess, port: number, s: PgbouncerSettings, log: string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`pgbouncer exited with ${proc.exitCode}: ${log.join('')}`);
    if (await acceptsQueries(port, s)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`pgbouncer did not accept connections within ${timeoutMs} ms: ${log.join('')}`);
}

/** Starts PgBouncer in the foreground on a free loopback port and waits until it serves queries. */
export async function startPgbouncer(s: PgbouncerSettings): Promise<RunningPgbouncer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-bench-pgbouncer-'));
  chmodSync(dir, 0o755);
  const authFile = join(dir, 'userlist.txt');
  const ini = join(dir, 'pgbouncer.ini');
  writeFileSync(authFile, `"${s.backend.user}" "${s.backend.password}"\n`, { mode: 0o644 });
  writeFileSync(ini, iniFile(s, port, authFile), { mode: 0o644 });
  const proc = spawn(s.bin, [...runAsArgs(), ini], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  proc.stdout?.on('data', (d: Buffer) => log.push(d.toString()));
  proc.stderr?.on('data', (d: Buffer) => log.push(d.toString()));
  const exited = exitPromise(proc);
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (proc.pid === undefined) throw new Error('pgbouncer did not start');
    await waitUntilReady(proc, port, s, log, 15_000);
    return { port, pid: proc.pid, version: pgbouncerVersion(s.bin), log, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
