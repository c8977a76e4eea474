// Concern: scale: thousands of idle authenticated clients held open at once are all logged in, all still served afterwards, and hold no server connection; their memory cost is measured.
/**
 * N raw wire-protocol clients (test/harness/rawclient.ts, lighter than pg clients) each log
 * in through scopegate with a token of their own (HS256, sub `idle-<i>`, minted in this
 * process with the project's mintDevToken) and then stay idle. The suite asserts
 * correctness only: every login got AuthenticationOk, BackendKeyData and ReadyForQuery;
 * no idle client was closed and scopegate's side holds exactly their connections
 * (/proc/net/tcp); the server connections stayed within the pool; afterwards
 * every client (or SG_SCALE_IDLE_CHECK of them, spread over all) runs SELECT 1 and gets 1;
 * a fresh client logs in and is served. Memory is reported, never asserted: scopegate's
 * VmRSS (/proc/<pid>/status) and V8 heap (via test/scale/memory-probe.ts, after a full GC),
 * per client = (RSS_N - RSS_baseline) / N. The baseline is read with a few clients held,
 * after a warm-up burst of logins that left again: the first burst grows the allocator's
 * arenas and the young generation once, which is not what each further client costs (the
 * figure from before the warm-up is reported too, and the young generation separately).
 *
 * Environment:
 *   SG_SCALE_IDLE        idle clients (default 1000; full size 10000)
 *   SG_SCALE_IDLE_CHECK  how many of them run SELECT 1 afterwards (default: all)
 *   SG_SCALE_IDLE_WARM   logins of the warm-up burst before the baseline (default 1000, at most N)
 *   SG_SCALE_SG_ENV      extra environment for scopegate, `K=V K=V` (to compare allocator or V8
 *                        settings, e.g. `MALLOC_ARENA_MAX=2` or `NODE_OPTIONS=--max-semi-space-size=4`)
 * Both processes need N + a few hundred file descriptors (checked up front: `ulimit -n`).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mintDevToken, parseAuthConfig, type AuthConfig } from '../../src/auth/index.js';
import { errorFields, fe, firstError, RawClient, rows, startupPacket, typed, waitFor } from '../harness/rawclient.js';
import { AUTH, DB, SECRET, startFixture, type Fixture } from '../scope.fixture.test.js';
import { probeEnv, type MemoryReading } from './memory-probe.js';
import { scopegateEnv } from './scale-env.js';

const N = Number(process.env.SG_SCALE_IDLE ?? 1000);
const CHECK = Math.min(N, Number(process.env.SG_SCALE_IDLE_CHECK ?? N));
const BASELINE = 20;
const WARM = Math.min(N, Number(process.env.SG_SCALE_IDLE_WARM ?? 1000));
const POOL = 4;
/** Logins in flight at once (each is two round trips and one signature check). */
const LOGIN_CONCURRENCY = 64;
const SCOPE = 'orders:read';
const KiB = 1024;

/** A field of /proc/<pid>/status in bytes (VmRSS, VmHWM, ...). */
function procStatusBytes(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, `${field} missing from /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/**
 * Client connections scopegate holds: established TCP sockets on its port (its side of them).
 * /proc/net/tcp is produced a page per read() while the table changes, so an entry can be
 * listed twice when sockets elsewhere open or close meanwhile: entries are counted once each
 * (by local address, remote address and inode).
 */
function established(port: number): number {
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const seen = new Set<string>();
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1]?.endsWith(hexPort) === true && f[3] === '01') seen.add(`${f[1]} ${f[2]} ${f[9]}`);
  }
  return seen.size;
}

/** The soft limit on open files of a process (/proc/<pid>/limits). */
function openFilesLimit(pid: number | 'self'): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  assert.ok(m, 'Max open files missing');
  return m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1]);
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Runs `fn` over 0..count-1 with at most `width` calls in flight. */
async function inParallel(count: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) await fn(i);
  };
  await Promise.all(Array.from({ length: Math.min(width, count) }, worker));
}

interface Reading {
  /** VmRSS. */
  rss: number;
  /** Live V8 heap after a full GC. */
  heapUsed: number;
  /** V8 heap pages committed (all spaces), and of them the young generation's. */
  committed: number;
  newSpace: number;
  /** Buffers and other memory outside the V8 heap that V8 knows of. */
  external: number;
}

/** `after - before`, per client, in KiB. */
function perClient(after: number, before: number, n: number): string {
  return `${((after - before) / n / KiB).toFixed(1)} KiB`;
}

interface Held {
  raw: RawClient;
  closedEarly: boolean;
}

describe('idle authenticated clients at scale', { timeout: 900_000 }, () => {
  let fx: Fixture;
  let auth: AuthConfig;
  before(async () => {
    fx = await startFixture({
      poolSize: POOL,
      // Room for the N, the baseline and the fresh client; no login deadline gets near.
      config: { pool: { max_client_conn: N + BASELINE + LOGIN_CONCURRENCY + 100 } },
      sgEnv: scopegateEnv(probeEnv()),
    });
    process.env.SG_SECRET = SECRET;
    auth = parseAuthConfig(AUTH, '.');
  });
  after(async () => { await fx?.stop(); });

  const pid = (): number => fx.sg.proc.pid!;

  /** Full GC in scopegate, then its VmRSS and V8 heap. */
  async function measure(): Promise<Reading> {
    const seq = fx.sg.logs.filter((l) => l.msg === 'memory probe').length + 1;
    fx.sg.proc.kill('SIGUSR2');
    const r = (await fx.sg.waitForLog((l) => l.msg === 'memory probe' && l.seq === seq)) as unknown as MemoryReading;
    const committed = Object.values(r.spaces).reduce((x, y) => x + y, 0);
    return { rss: procStatusBytes(pid(), 'VmRSS'), heapUsed: r.heapUsed, committed, newSpace: r.spaces.new_space ?? 0, external: r.external + r.arrayBuffers };
  }

  /** Logs one client in with its own token over a raw socket; returns it idle (after ReadyForQuery). */
  async function login(sub: string): Promise<Held> {
    const token = await mintDevToken(auth, { sub, scope: SCOPE });
    const raw = await RawClient.connect(fx.sg.port);
    const held: Held = { raw, closedEarly: false };
    void raw.closed.then(() => { held.closedEarly = true; });
    raw.write(startupPacket({ user: sub, database: DB }));
    const ask = await raw.read();
    assert.equal(ask.type, 'R', `${sub}: expected an authentication request, got '${ask.type}' ${ask.type === 'E' ? JSON.stringify(errorFields(ask.body)) : ''}`);
    assert.equal(ask.body.readInt32BE(0), 3, `${sub}: AuthenticationCleartextPassword`);
    raw.write(typed('p', Buffer.from(`${token}\0`, 'utf8')));
    const msgs = await raw.readUntilReady(60_000);
    assert.equal(firstError(msgs), undefined, `${sub}: ${JSON.stringify(firstError(msgs))}`);
    const ok = msgs.find((m) => m.type === 'R');
    assert.ok(ok !== undefined && ok.body.readInt32BE(0) === 0, `${sub}: AuthenticationOk`);
    assert.ok(msgs.some((m) => m.type === 'K'), `${sub}: BackendKeyData`);
    assert.equal(msgs[msgs.length - 1]!.body.toString('latin1'), 'I', `${sub}: ReadyForQuery idle`);
    return held;
  }

  async function selectOne(c: RawClient, who: string): Promise<void> {
    const got = await c.query('SELECT 1 AS one');
    assert.equal(firstError(got), undefined, `${who}: ${JSON.stringify(firstError(got))}`);
    assert.deepEqual(rows(got), [['1']], who);
  }

  it(`${N} idle clients, each with its own token, stay logged in and are all served afterwards`, async (t) => {
    // File descriptors: this process holds N sockets, scopegate N plus its pool.
    const need = N + BASELINE + 200;
    for (const [who, p] of [['this test process', 'self'], ['scopegate', pid()]] as const) {
      const lim = openFilesLimit(p);
      t.diagnostic(`open files limit of ${who}: ${lim}`);
      assert.ok(lim >= need, `${who} may open ${lim} files, ${N} idle clients need about ${need}: raise \`ulimit -n\` before running`);
    }

    // Baseline: a few clients logged in and served, so the pool is connected and the
    // caches filled before the first reading.
    const baseline: Held[] = [];
    for (let i = 0; i < BASELINE; i++) baseline.push(await login(`warm-${i}`));
    for (const [i, h] of baseline.entries()) await selectOne(h.raw, `warm-${i}`);
    const cold = await measure();
    // Then a burst of WARM logins that leave again: the first burst costs memory once (the
    // young generation grows to its cap, compilers and allocators take their arenas), and
    // that is not what each further client costs.
    await inParallel(WARM, LOGIN_CONCURRENCY, async (i) => {
      const h = await login(`burst-${i}`);
      await selectOne(h.raw, `burst-${i}`);
      h.raw.write(fe.terminate());
      await h.raw.closed;
    });
    await waitFor(() => established(fx.sg.port) === BASELINE, 'scopegate to close the warm-up burst', 30_000);
    const base = await measure();

    const held: Held[] = new Array<Held>(N);
    const t0 = Date.now();
    await inParallel(N, LOGIN_CONCURRENCY, async (i) => { held[i] = await login(`idle-${i}`); });
    const loginMs = Date.now() - t0;
    const idle = await measure();

    // Correctness: every login completed, no idle client was dropped, and idle clients hold
    // no server connection (transaction pooling): the pool stayed within its size.
    assert.equal(held.filter((h) => h !== undefined).length, N);
    assert.deepEqual(held.flatMap((h, i) => (h.closedEarly ? [i] : [])), [], 'idle clients closed by scopegate');
    assert.equal(established(fx.sg.port), BASELINE + N, 'client connections open on scopegate\'s side');
    const servers = (await fx.su("SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = 'authenticator'")).rows[0] as { n: number };
    assert.ok(servers.n <= POOL, `server connections: ${servers.n} > pool_size ${POOL}`);

    // Every client (or an even spread of CHECK of them) is still served.
    const stride = N / CHECK;
    const t1 = Date.now();
    await inParallel(CHECK, LOGIN_CONCURRENCY, async (k) => {
      const i = Math.floor(k * stride);
      await selectOne(held[i]!.raw, `idle-${i}`);
    });
    const checkMs = Date.now() - t1;
    const served = await measure();

    // A fresh client still logs in and is served while the N are held.
    const fresh = await login('fresh');
    await selectOne(fresh.raw, 'fresh');
    assert.deepEqual(held.flatMap((h, i) => (h.closedEarly ? [i] : [])), [], 'clients closed by scopegate while the others ran');

    const noYoung = (r: Reading): number => r.rss - r.newSpace;
    const report = [
      `idle clients: ${N} (with ${BASELINE} held for the baseline, after a warm-up burst of ${WARM} logins that left); logins ${loginMs} ms (${Math.round(N / (loginMs / 1000))}/s); SELECT 1 on ${CHECK} of them ${checkMs} ms`,
      `scopegate VmRSS: ${mib(cold.rss)} before the warm-up, baseline ${mib(base.rss)}, with ${N} idle ${mib(idle.rss)}, after they each ran SELECT 1 ${mib(served.rss)}; peak (VmHWM) ${mib(procStatusBytes(pid(), 'VmHWM'))}`,
      `RSS per idle client: ${perClient(idle.rss, base.rss, N)}; after one statement each: ${perClient(served.rss, base.rss, N)}; without the young generation's growth (capacity, empty after a full GC): ${perClient(noYoung(idle), noYoung(base), N)}; from before the warm-up: ${perClient(idle.rss, cold.rss, N)}`,
      `  V8 heap used: ${perClient(idle.heapUsed, base.heapUsed, N)} per client (baseline ${mib(base.heapUsed)}, idle ${mib(idle.heapUsed)}, served ${mib(served.heapUsed)})`,
      `  V8 pages committed: ${perClient(idle.committed - idle.newSpace, base.committed - base.newSpace, N)} per client without the young generation (${mib(base.committed - base.newSpace)} -> ${mib(idle.committed - idle.newSpace)}); young generation ${mib(cold.newSpace)} before the warm-up, ${mib(base.newSpace)} at the baseline, ${mib(idle.newSpace)} idle`,
      `  outside V8 (sockets, malloc): ${perClient(idle.rss - idle.committed, base.rss - base.committed, N)} per client; external+arrayBuffers ${perClient(idle.external, base.external, N)}`,
    ];
    if (process.env.SG_SCALE_SG_ENV) report.push(`scopegate environment: ${process.env.SG_SCALE_SG_ENV}`);
    for (const line of report) t.diagnostic(`[scale] ${line}`);

    for (const h of [...baseline, ...held, fresh]) {
      h.raw.write(fe.terminate());
      h.raw.close();
    }
  });
});
