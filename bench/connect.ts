/**
 * New-connection rate: `pgbench -C -S -n -T 5 -c 4` (a fresh connection per transaction)
 * against PostgreSQL directly, PgBouncer (transaction pooling, md5 client auth) and
 * scopegate (transaction pooling, OAuth token as the password: HS256 dev secret), side by
 * side in one run. Prints tps (= connections/s with -C) and the ratio scopegate/pgbouncer.
 *
 *   node dist/bench/connect.js [--duration 5] [--clients 4] [--auth md5|scram-sha-256]
 *
 * Self-contained on purpose (only the test harness is shared), so it does not depend on the
 * pgbench benchmark's helpers.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';
import pg from 'pg';
import { startPostgres, SUPERPASS, SUPERUSER, type TestPostgres } from '../test/harness/postgres.js';
import { startScopegate, type RunningScopegate } from '../test/harness/scopegate.js';
import { freePort } from '../test/harness/ports.js';

const PGBENCH = '/usr/bin/pgbench';
const PGBOUNCER = '/usr/sbin/pgbouncer';
const DB = 'postgres';
const ISSUER = 'https://bench.scopegate.test';
const AUDIENCE = 'scopegate';

interface Result {
  target: string;
  tps: number | null;
  transactions: number | null;
  connMs: number | null;
  exitCode: number | null;
  errors: string[];
  /** PostgreSQL sessions opened during the run (pg_stat_database.sessions delta). */
  serverSessions?: number;
}

function log(m: string): void {
  process.stderr.write(`[connect-bench] ${m}\n`);
}

function runPgbench(args: string[], password: string, timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PGBENCH, args, { env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '10' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: string[] = [];
    child.stdout.on('data', (d: Buffer) => chunks.push(d.toString()));
    child.stderr.on('data', (d: Buffer) => chunks.push(d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out: chunks.join('') }); });
  });
}

function num(out: string, re: RegExp): number | null {
  const m = re.exec(out);
  return m?.[1] === undefined ? null : Number(m[1]);
}

async function measure(target: string, port: number, user: string, password: string, duration: number, clients: number): Promise<Result> {
  const args = ['-n', '-C', '-S', '-T', String(duration), '-c', String(clients), '-j', String(clients), '-h', '127.0.0.1', '-p', String(port), '-U', user, DB];
  const { code, out } = await runPgbench(args, password, (duration + 60) * 1000);
  return {
    target,
    tps: num(out, /^tps = ([\d.]+)/m),
    transactions: num(out, /^number of transactions actually processed: (\d+)/m),
    connMs: num(out, /^average connection time = ([\d.]+) ms/m),
    exitCode: code,
    errors: out.split('\n').filter((l) => /error|aborted|fatal|could not/i.test(l)).slice(0, 3),
  };
}

interface Bouncer { port: number; version: string; stop(): Promise<void> }

async function startPgbouncer(pgPort: number, auth: string, poolSize: number): Promise<Bouncer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-connect-bench-'));
  chmodSync(dir, 0o755);
  const authFile = join(dir, 'userlist.txt');
  const ini = join(dir, 'pgbouncer.ini');
  writeFileSync(authFile, `"${SUPERUSER}" "${SUPERPASS}"\n`, { mode: 0o644 });
  writeFileSync(ini, `[databases]
${DB} = host=127.0.0.1 port=${pgPort} dbname=${DB} user=${SUPERUSER} password=${SUPERPASS}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = ${auth}
auth_file = ${authFile}
pool_mode = transaction
default_pool_size = ${poolSize}
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
stats_period = 3600
`, { mode: 0o644 });
  // PgBouncer refuses to run as root: -u switches to the postgres user.
  const asUser = userInfo().uid === 0 ? ['-u', 'postgres'] : [];
  const proc: ChildProcess = spawn(PGBOUNCER, [...asUser, ini], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  proc.stdout?.on('data', (d: Buffer) => out.push(d.toString()));
  proc.stderr?.on('data', (d: Buffer) => out.push(d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
  };
  // Bounded poll until it serves a query.
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) { await stop(); throw new Error(`pgbouncer exited: ${out.join('')}`); }
    const c = new pg.Client({ host: '127.0.0.1', port, user: SUPERUSER, password: SUPERPASS, database: DB, connectionTimeoutMillis: 2_000 });
    c.on('error', () => undefined);
    try {
      await c.connect();
      await c.query('SELECT 1');
      await c.end();
      break;
    } catch {
      await c.end().catch(() => undefined);
      if (Date.now() > deadline) { await stop(); throw new Error(`pgbouncer not ready: ${out.join('')}`); }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const version = execFileSync(PGBOUNCER, ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
  return { port, version, stop };
}

function fmt(n: number | null, digits = 1): string {
  return n === null ? 'n/a' : n.toFixed(digits);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '5' },
      clients: { type: 'string', default: '4' },
      auth: { type: 'string', default: 'md5' },
      pool: { type: 'string', default: '4' },
    },
  });
  const duration = Number(values.duration);
  const clients = Number(values.clients);
  const poolSize = Number(values.pool);
  for (const bin of [PGBENCH, PGBOUNCER]) if (!existsSync(bin)) throw new Error(`${bin} is missing`);

  const stops: Array<() => Promise<void>> = [];
  let pgs: TestPostgres | null = null;
  try {
    log('starting PostgreSQL');
    pgs = await startPostgres();
    stops.push(() => pgs!.stop());
    const init = await runPgbench(['-i', '-q', '-s', '1', '-h', '127.0.0.1', '-p', String(pgs.port), '-U', SUPERUSER, DB], SUPERPASS, 300_000);
    if (init.code !== 0) throw new Error(`pgbench -i failed: ${init.out}`);

    log(`starting PgBouncer (auth_type ${values.auth})`);
    const bouncer = await startPgbouncer(pgs.port, values.auth, poolSize);
    stops.push(() => bouncer.stop());

    log('starting scopegate (HS256 token auth)');
    const secret = randomBytes(32).toString('base64url');
    const sg: RunningScopegate = await startScopegate({
      databases: { [DB]: { url: pgs.url(DB), pool_size: poolSize } },
      pool: { mode: 'transaction', shutdown_timeout: '5s' },
      log: { level: 'info', audit: 'off' },
      auth: { method: 'oauth', issuer: ISSUER, audience: AUDIENCE, secret: 'env:SG_BENCH_SECRET' },
    }, { SG_BENCH_SECRET: secret });
    stops.push(async () => { await sg.stop(); });
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ scope: 'orders:read', sub: 'bench', iss: ISSUER, aud: AUDIENCE, iat: now, exp: now + 3600 })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .sign(new TextEncoder().encode(secret));

    const sessions = async (): Promise<number> => {
      // pg_stat_database is updated at session end; the stats snapshot is cleared per query.
      const r = await pgs!.sql(`SELECT pg_stat_clear_snapshot(), sessions::int AS n FROM pg_stat_database WHERE datname = '${DB}'`);
      return (r.rows[0] as { n: number }).n;
    };
    const results: Result[] = [];
    const run = async (name: string, port: number, user: string, password: string): Promise<void> => {
      const before = await sessions();
      const r = await measure(name, port, user, password, duration, clients);
      r.serverSessions = (await sessions()) - before - 1;
      results.push(r);
      log(`${name}: ${fmt(r.tps)} tps, ${r.serverSessions} server sessions ended`);
    };
    await run('direct (scram-sha-256)', pgs.port, SUPERUSER, SUPERPASS);
    await run(`pgbouncer (${values.auth})`, bouncer.port, SUPERUSER, SUPERPASS);
    await run('scopegate (token, HS256)', sg.port, 'bench', token);
    const warnings = sg.logs.filter((l) => (l.level ?? 0) >= 40);

    const server = (await pgs.sql('SHOW server_version')).rows[0] as { server_version: string };
    const lines: string[] = [];
    lines.push(`pgbench -C -S -n -T ${duration} -c ${clients} -j ${clients}; pool size ${poolSize}; PostgreSQL ${server.server_version}; ${bouncer.version}; ${availableParallelism()} CPUs; ${new Date().toISOString()}`);
    lines.push('');
    lines.push('| target | tps (connections/s) | transactions | avg connection time (ms) | server sessions ended during run | exit |');
    lines.push('|---|---:|---:|---:|---:|---:|');
    for (const r of results) lines.push(`| ${r.target} | ${fmt(r.tps)} | ${r.transactions ?? 'n/a'} | ${fmt(r.connMs, 3)} | ${r.serverSessions ?? 'n/a'} | ${String(r.exitCode)} |`);
    const sgTps = results[2]!.tps;
    const pbTps = results[1]!.tps;
    lines.push('');
    lines.push(`scopegate/pgbouncer = ${sgTps !== null && pbTps ? (sgTps / pbTps).toFixed(2) : 'n/a'}`);
    for (const r of results) for (const e of r.errors) lines.push(`${r.target}: ${e}`);
    if (warnings.length > 0) lines.push(`scopegate warnings: ${warnings.length} (first: ${JSON.stringify(warnings[0])})`);
    process.stdout.write(lines.join('\n') + '\n');
    if (results.some((r) => r.exitCode !== 0 || r.tps === null)) process.exitCode = 1;
  } finally {
    for (const s of stops.reverse()) await s().catch((e: unknown) => log(`cleanup: ${String(e)}`));
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`connect bench failed: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
