/** The benchmark's targets: direct, PgBouncer binaries, scopegate instances (plain, variants, enforced + audited). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestPostgres } from '../test/harness/postgres.js';
import { startScopegate, type LogLine, type RunningScopegate } from '../test/harness/scopegate.js';
import { AUTH, AUTHENTICATOR, countAudit, createEnforcementRoles, mintToken, SCOPE, SECRET_ENV, writePolicy, type AuditCount } from './enforced.js';
import { ENFORCED_AUDIT, type BenchOptions, type JsonObject, type TargetName } from './options.js';
import { pgbouncerInstalled, startPgbouncer, type RunningPgbouncer } from './pgbouncer.js';

/** Something pgbench connects to. */
export interface Target {
  name: TargetName;
  port: number;
  /** The proxy process whose CPU time is measured; null for direct. */
  pid: number | null;
  /** pgbench's login, when not the backend's superuser (e.g. a token as the password). */
  credentials?: { user: string; password: string };
  /** Stops the target and counts its audit file (targets that audit). */
  finishAudit?(): Promise<AuditCount>;
  /** Problems the target reported since the last call (scopegate warnings, exits). */
  drainProblems(): string[];
  stop(): Promise<void>;
}

export interface Backend {
  pg: TestPostgres;
  user: string;
  password: string;
  dbname: string;
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Recursively merges `overlay` into `base`; arrays and scalars replace. */
export function deepMerge(base: JsonObject, overlay: JsonObject): JsonObject {
  const out: JsonObject = { ...base };
  for (const [k, v] of Object.entries(overlay)) {
    const prev = out[k];
    out[k] = isObject(prev) && isObject(v) ? deepMerge(prev, v) : v;
  }
  return out;
}

export function scopegateConfig(b: Backend, opts: BenchOptions, variant: JsonObject): JsonObject {
  const base: JsonObject = {
    databases: { [b.dbname]: { url: b.pg.url(b.dbname, b.user, b.password), pool_size: opts.pool } },
    pool: { mode: 'transaction', max_client_conn: 10_000, shutdown_timeout: '5s' },
    log: { level: 'info', audit: 'off' },
  };
  return deepMerge(deepMerge(base, opts.extraConfig), variant);
}

export function directTarget(b: Backend): Target {
  return { name: 'direct', port: b.pg.port, pid: null, drainProblems: () => [], stop: async () => undefined };
}

export interface PgbouncerBinary {
  name: 'pgbouncer' | 'pgbouncer2';
  bin: string;
  maxPreparedStatements: number | null;
}

export async function pgbouncerTarget(b: Backend, opts: BenchOptions, binary: PgbouncerBinary): Promise<{ target: Target; bouncer: RunningPgbouncer } | null> {
  if (!pgbouncerInstalled(binary.bin)) return null;
  const bouncer = await startPgbouncer({
    bin: binary.bin,
    maxPreparedStatements: binary.maxPreparedStatements,
    backend: { host: b.pg.host, port: b.pg.port, user: b.user, password: b.password, dbname: b.dbname },
    poolSize: opts.pool,
    auth: opts.pgbouncerAuth,
  });
  let seen = 0;
  const drainProblems = (): string[] => {
    const lines = bouncer.log.slice(seen).join('').split('\n').filter((l) => /\b(WARNING|ERROR|FATAL)\b/.test(l));
    seen = bouncer.log.length;
    return lines.map((l) => `${binary.name}: ${l.trim()}`);
  };
  return { target: { name: binary.name, port: bouncer.port, pid: bouncer.pid, drainProblems, stop: bouncer.stop }, bouncer };
}

/** pino levels: 40 warn, 50 error, 60 fatal. */
function describeLog(l: LogLine): string {
  const { msg, level, time: _time, pid: _pid, hostname: _host, ...rest } = l;
  const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
  return `level ${String(level)} "${String(msg)}"${extra}`;
}

function scopegateProblems(sg: RunningScopegate, name: TargetName, from: { logs: number; stderr: number }): string[] {
  const problems = sg.logs.slice(from.logs).filter((l) => (l.level ?? 0) >= 40).map((l) => `${name}: ${describeLog(l)}`);
  const stderr = sg.stderr.slice(from.stderr).join('').trim();
  if (stderr !== '') problems.push(`${name} stderr: ${stderr.slice(0, 500)}`);
  if (sg.proc.exitCode !== null || sg.proc.signalCode !== null) {
    problems.push(`${name}: process exited (code ${String(sg.proc.exitCode)}, signal ${String(sg.proc.signalCode)})`);
  }
  from.logs = sg.logs.length;
  from.stderr = sg.stderr.length;
  return problems;
}

async function stopScopegate(sg: RunningScopegate): Promise<void> {
  const timer = setTimeout(() => { void sg.stop('SIGKILL'); }, 10_000);
  await sg.stop('SIGTERM');
  clearTimeout(timer);
}

async function scopegateInstance(b: Backend, opts: BenchOptions, name: TargetName, variant: JsonObject, env: Record<string, string> = {}): Promise<{ target: Target; sg: RunningScopegate }> {
  const sg = await startScopegate(scopegateConfig(b, opts, variant), env);
  if (sg.proc.pid === undefined) throw new Error(`${name} has no pid`);
  // workers: N: every worker up before the first run (the harness returns at the first 'listening').
  const workers = (variant as { workers?: unknown }).workers ?? opts.extraConfig.workers;
  if (typeof workers === 'number' && workers > 1 || workers === 'auto') await sg.waitForLog((l) => l.msg === 'all workers listening');
  // Startup warnings (e.g. "auth.method is trust") are not problems of a run.
  const from = { logs: sg.logs.length, stderr: sg.stderr.length };
  const target: Target = {
    name,
    port: sg.port,
    pid: sg.proc.pid,
    drainProblems: () => scopegateProblems(sg, name, from),
    stop: () => stopScopegate(sg),
  };
  return { target, sg };
}

export async function scopegateTarget(b: Backend, opts: BenchOptions, name: TargetName): Promise<Target> {
  const variant = name === 'scopegate' ? {} : opts.variants.get(name.slice('scopegate:'.length)) ?? {};
  return (await scopegateInstance(b, opts, name, variant)).target;
}

/**
 * scopegate enforcing a policy (select on the pgbench tables under a scope's role, token auth)
 * with every statement audited to a file: pgbench logs in with a token minted by the CLI.
 */
export async function enforcedAuditTarget(b: Backend, opts: BenchOptions): Promise<Target> {
  await createEnforcementRoles(b.pg);
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-bench-enforced-'));
  const auditFile = join(dir, 'audit.log');
  const variant: JsonObject = {
    databases: { [b.dbname]: { url: b.pg.url(b.dbname, AUTHENTICATOR.user, AUTHENTICATOR.password) } },
    auth: AUTH,
    policy: writePolicy(dir),
    log: { audit: auditFile, audit_sample: 1 },
  };
  const { target, sg } = await scopegateInstance(b, opts, ENFORCED_AUDIT, variant, SECRET_ENV);
  const password = mintToken(sg.configFile, SCOPE, 'bench');
  let stopped: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopped ??= stopScopegate(sg).finally(() => rmSync(dir, { recursive: true, force: true }));
    return stopped;
  };
  return {
    ...target,
    credentials: { user: 'bench', password },
    // Stopped first, so the last buffered lines are in the file.
    finishAudit: async () => {
      await stopScopegate(sg);
      return countAudit(auditFile);
    },
    stop,
  };
}
