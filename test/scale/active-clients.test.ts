// Concern: scale: many active clients (pgbench, each logged in with an OAuth token) over a small pool in transaction mode all get every transaction through the policy, none failed, within the pool's size.
/**
 * pgbench opens CLIENTS connections to scopegate, each logging in with a token (HS256, scope
 * orders:read) as its password, and runs TX transactions per client of a custom script: a
 * transaction block of two policy-checked SELECTs on the fixture's tables, in simple and in
 * extended protocol. Asserted: pgbench exits 0, processed exactly CLIENTS x TX transactions,
 * none failed; every statement ran as the scope's role (otherwise the login role, which may
 * read nothing, fails it); the server connections never exceeded the pool. Reported: tps,
 * latency, scopegate's CPU time per transaction and its peak RSS (after a short warm-up run).
 * The audit log is off, so the test process does not parse a line per statement.
 *
 * Environment:
 *   SG_SCALE_ACTIVE       clients (default 200; full size 1000)
 *   SG_SCALE_ACTIVE_POOL  pool_size (default 10, or 20 from 1000 clients)
 *   SG_SCALE_ACTIVE_TX    transactions per client (default 20)
 *   SG_SCALE_SG_ENV       extra environment for scopegate, `K=V K=V` (see scale-env.ts)
 * pgbench must be installed (postgresql-client); both it and scopegate need CLIENTS + a few
 * hundred file descriptors (checked up front: `ulimit -n`).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DB, startFixture, type Fixture } from '../scope.fixture.test.js';
import { scopegateEnv } from './scale-env.js';

const PGBENCH = '/usr/bin/pgbench';
const CLIENTS = Number(process.env.SG_SCALE_ACTIVE ?? 200);
const POOL = Number(process.env.SG_SCALE_ACTIVE_POOL ?? (CLIENTS >= 1000 ? 20 : 10));
const TX = Number(process.env.SG_SCALE_ACTIVE_TX ?? 20);
const SUB = 'bench';

/** One transaction: two statements the policy checks (orders:read grants both tables). */
const SCRIPT = `\\set id random(1, 10)
BEGIN;
SELECT total FROM orders WHERE id = :id;
SELECT count(*) FROM order_items WHERE order_id = :id;
END;
`;

interface Run { code: number | null; out: string }

function pgbench(args: string[], password: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(PGBENCH, args, { env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '30' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    p.on('error', reject);
    // Bounded: the run ends by itself well before this (a fixed count of transactions).
    const t = setTimeout(() => p.kill('SIGKILL'), 240_000);
    p.on('exit', (code) => { clearTimeout(t); resolve({ code, out }); });
  });
}

/** utime + stime of a process, in ms (/proc/<pid>/stat, clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

function statusKiB(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, `${field} missing`);
  return Number(m[1]);
}

function openFilesLimit(pid: number | 'self'): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  assert.ok(m);
  return m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1]);
}

function figure(out: string, re: RegExp, what: string): string {
  const m = re.exec(out);
  assert.ok(m, `no ${what} in pgbench output:\n${out}`);
  return m[1]!;
}

describe(`${CLIENTS} active clients over a pool of ${POOL}`, { timeout: 600_000 }, () => {
  let fx: Fixture;
  let token: string;
  let script: string;
  before(async () => {
    assert.ok(existsSync(PGBENCH), `${PGBENCH} is missing: install postgresql-client to run this suite`);
    fx = await startFixture({
      poolSize: POOL,
      // Clients wait for a server connection as long as the run may take, and log in slowly
      // under a thousand-connection burst without being cut.
      config: { pool: { max_client_conn: CLIENTS + 100, query_wait_timeout: '180s', client_login_timeout: '120s' }, log: { level: 'info', audit: 'off' } },
      sgEnv: scopegateEnv(),
    });
    token = await fx.token('orders:read', SUB);
    script = join(fx.dir, 'two-selects.sql');
    writeFileSync(script, SCRIPT);
    // A short warm-up (compiled code, the policy's decision caches, a full pool), so the
    // figures of the first mode are comparable with the second's.
    const warm = await pgbench(['-n', '-c', String(POOL), '-j', '2', '-t', '50', '-f', script, '-h', '127.0.0.1', '-p', String(fx.sg.port), '-U', SUB, DB], token);
    assert.equal(warm.code, 0, `warm-up pgbench failed:\n${warm.out}`);
  });
  after(async () => { await fx?.stop(); });

  for (const mode of ['simple', 'extended'] as const) {
    it(`pgbench -M ${mode} -c ${CLIENTS} -j 2 -t ${TX}: all ${CLIENTS * TX} transactions, none failed, within the pool`, async (t) => {
      const pid = fx.sg.proc.pid!;
      const need = CLIENTS + 100;
      for (const [who, p] of [['this test process (and pgbench)', 'self'], ['scopegate', pid]] as const) {
        const lim = openFilesLimit(p);
        assert.ok(lim >= need, `${who} may open ${lim} files, ${CLIENTS} clients need about ${need}: raise \`ulimit -n\``);
      }
      // Sample the server connections from the pool while pgbench runs (a poll, not a sleep
      // for synchronisation: it only records the largest count seen).
      let maxServers = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const r = await fx.su("SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = 'authenticator'");
          maxServers = Math.max(maxServers, (r.rows[0] as { n: number }).n);
          await new Promise((res) => setTimeout(res, 100));
        }
      })();
      const cpu0 = cpuMs(pid);
      const r = await pgbench(['-n', '-M', mode, '-c', String(CLIENTS), '-j', '2', '-t', String(TX), '-f', script, '-h', '127.0.0.1', '-p', String(fx.sg.port), '-U', SUB, DB], token);
      const cpu = cpuMs(pid) - cpu0;
      sampling = false;
      await sampler;

      assert.equal(r.code, 0, `pgbench failed:\n${r.out}`);
      assert.match(r.out, new RegExp(`number of clients: ${CLIENTS}\\n`), r.out);
      assert.equal(figure(r.out, /number of transactions actually processed: (\d+\/\d+)/, 'processed count'), `${CLIENTS * TX}/${CLIENTS * TX}`);
      assert.equal(figure(r.out, /number of failed transactions: (\d+) \(/, 'failed count'), '0');
      assert.ok(maxServers <= POOL, `server connections seen: ${maxServers} > pool_size ${POOL}`);

      const tps = figure(r.out, /tps = ([\d.]+) \(without initial connection time\)/, 'tps');
      const lat = figure(r.out, /latency average = ([\d.]+) ms/, 'latency');
      const conn = figure(r.out, /initial connection time = ([\d.]+) ms/, 'connection time');
      const lines = [
        `-M ${mode}, ${CLIENTS} clients over pool ${POOL}, ${CLIENTS * TX} transactions of 2 checked SELECTs in BEGIN/END: tps ${tps}, latency average ${lat} ms, initial connection time ${conn} ms`,
        `scopegate CPU ${cpu} ms (${((cpu * 1000) / (CLIENTS * TX)).toFixed(0)} µs per transaction); VmRSS ${(statusKiB(pid, 'VmRSS') / 1024).toFixed(1)} MiB, peak ${(statusKiB(pid, 'VmHWM') / 1024).toFixed(1)} MiB; server connections seen at most ${maxServers}`,
      ];
      if (process.env.SG_SCALE_SG_ENV) lines.push(`scopegate environment: ${process.env.SG_SCALE_SG_ENV}`);
      for (const l of lines) t.diagnostic(`[scale] ${l}`);
    });
  }
});
