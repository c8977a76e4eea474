// Concern: no frontend byte sequence, in any session state, crashes or wedges scopegate, disturbs another client, or sends a server connection back to the pool in an unknown state.
/**
 * Property-based protocol fuzzing (fast-check) over raw TCP against the real scopegate CLI in
 * front of a real PostgreSQL, with a pool of ONE server connection (every client's work
 * lands on the same server session, so anything left behind is seen by the next one) and
 * small size limits (max_login_packet_size 1024, max_packet_size 4096, max_statement_size
 * 2048: oversized cases stay cheap).
 *
 * Each case puts a bad client in a session state (startup, password or SASL authentication,
 * idle, inside BEGIN, inside COPY FROM STDIN by Query or by Execute, or after a failed Parse
 * before Sync), then sends 1-8 generated steps (test/fuzz/frontend-gen.ts): valid messages,
 * out-of-order ones, malformed bodies, unknown types, truncated messages, length fields that
 * are negative, < 4, past the limits or lying about the body, cut into random writes.
 * Then, for every case:
 *  1. the scopegate process is alive; a step that must be refused (bad length, oversized,
 *     unknown type on an aligned stream) gets an ErrorResponse and the close; otherwise a
 *     probe (CopyFail, Sync, ROLLBACK, SELECT 'probe-N') is answered or the session is
 *     closed, and after the client half-closes the server closes too; each wait has a
 *     deadline (SG_FUZZ_DEADLINE_MS, 5 s): missing it is a hang, i.e. a failure. Latencies
 *     are reported, not asserted;
 *  2. a bystander (pg, its own token, connected once, with SET work_mem = '3MB'), running
 *     its query while the bad client is at work, gets the right row count, its own role,
 *     its own scopegate.sub and its own setting;
 *  3. a fresh client then finds the server connection exactly as in the baseline taken
 *     before any case: role, claims, settings, no transaction open, no named prepared
 *     statement (scopegate's own sg_ cache is by design), no cursor, no advisory lock, no
 *     temp relation, no LISTEN;
 *  4. scopegate's log has no error-level line and no stack trace, and nothing on stderr.
 * After a failed case scopegate is restarted, so each shrinking step starts clean.
 *
 * Environment:
 *   SG_FUZZ_RUNS         number of cases (default 120; the full size is 100000)
 *   SG_FUZZ_SEED         seed (default 2, fixed so that npm test is reproducible; printed at the start and on failure)
 *   SG_FUZZ_PATH         counterexample path to replay a shrunk case (printed on failure, with the seed)
 *   SG_FUZZ_TIME_LIMIT_S stop generating new cases after this many seconds (reported, not failed)
 *   SG_FUZZ_DEADLINE_MS  per-wait liveness bound (default 5000)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type pg from 'pg';
import { cancelRequestPacket, dataRow, errorFields, fe, startupPacket, typed } from '../harness/rawclient.js';
import { caseArbitrary, describeCase, type Case, type GenContext, type Persona } from './frontend-gen.js';
import { badLogLines, FuzzConn, LIMITS, startFuzzEnv, type BeMsg, type FuzzEnv } from './fuzz-env.js';

const RUNS = Number(process.env.SG_FUZZ_RUNS ?? 120);
// A fixed default seed keeps `npm test` reproducible; a full run picks its own with SG_FUZZ_SEED.
const SEED = Number(process.env.SG_FUZZ_SEED ?? 2);
const PATH = process.env.SG_FUZZ_PATH;
const TIME_LIMIT_S = process.env.SG_FUZZ_TIME_LIMIT_S !== undefined ? Number(process.env.SG_FUZZ_TIME_LIMIT_S) : undefined;
const DEADLINE_MS = Number(process.env.SG_FUZZ_DEADLINE_MS ?? 5000);

const USER: Record<Persona, { user: string; scope: string }> = {
  admin: { user: 'fuzz', scope: 'admin' },
  reader: { user: 'fuzzr', scope: 'orders:read' },
};

/** What a fresh client checks on the one server connection (compared with the baseline). */
const CHECK_SQL = `SELECT current_user AS role,
  current_setting('scopegate.sub', true) AS sub,
  current_setting('search_path') AS search_path,
  current_setting('statement_timeout') AS statement_timeout,
  current_setting('work_mem') AS work_mem,
  current_setting('application_name') AS application_name,
  current_setting('standard_conforming_strings') AS standard_conforming_strings,
  current_setting('client_encoding') AS client_encoding,
  now() = statement_timestamp() AS own_transaction,
  txid_current_if_assigned() IS NULL AS no_xid,
  (SELECT count(*)::int FROM pg_prepared_statements WHERE name NOT LIKE 'sg\\_%') AS named_statements,
  (SELECT count(*)::int FROM pg_cursors) AS cursors,
  (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks,
  (SELECT count(*)::int FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temp_relations,
  (SELECT count(*)::int FROM pg_listening_channels()) AS listening`;

const BYSTANDER_SQL = `SELECT (SELECT count(*)::int FROM orders) AS n, current_user AS role,
  current_setting('work_mem') AS work_mem, current_setting('scopegate.sub', true) AS sub`;

interface Figures {
  cases: number;
  byState: Map<string, number>;
  closeMs: number[];
  caseMs: number[];
  /** Where a case's time goes: prelude, steps to close, waiting for the bystander, the fresh client's check. */
  phaseMs: { prelude: number[]; session: number[]; bystander: number[]; check: number[] };
  restarts: number;
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => { t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms); }),
  ]);
}

describe('protocol fuzzing', () => {
  let env: FuzzEnv;
  let gen: GenContext;
  let bystander: pg.Client | null = null;
  let baseline: Record<string, unknown>;
  let expectedOrders: number;
  /** A case failed: the next one starts on a fresh scopegate. */
  let dirty = false;
  let probeSeq = 0;
  const figures: Figures = { cases: 0, byState: new Map(), closeMs: [], caseMs: [], phaseMs: { prelude: [], session: [], bystander: [], check: [] }, restarts: 0 };

  async function connectBystander(): Promise<void> {
    await bystander?.end().catch(() => undefined);
    bystander = await env.client('orders:read', 'bystander', DEADLINE_MS);
    await bystander.query("SET work_mem = '3MB'");
  }

  async function check(): Promise<Record<string, unknown>> {
    const c = await env.client('admin', 'checker', DEADLINE_MS);
    try {
      return (await c.query(CHECK_SQL)).rows[0] as Record<string, unknown>;
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  before(async () => {
    env = await startFuzzEnv();
    const [admin, reader, other] = await Promise.all([
      env.token(USER.admin.scope, USER.admin.user),
      env.token(USER.reader.scope, USER.reader.user),
      env.token('', 'mallory'),
      env.token('admin', 'saslfuzz'),
      env.token('admin', 'checker'),
      env.token('orders:read', 'bystander'),
    ]);
    gen = { limits: LIMITS, tokens: { admin, reader }, otherUserToken: other };
    expectedOrders = (await env.pg.sql('SELECT count(*)::int AS n FROM orders', 'app')).rows[0].n as number;
    await connectBystander();
    baseline = await check();
  });

  after(async () => {
    await bystander?.end().catch(() => undefined);
    await env?.stop();
  });

  it('the baseline a fresh client sees is a clean session of its own', () => {
    assert.equal(baseline.role, 'app_admin');
    assert.equal(baseline.sub, 'checker');
    assert.equal(baseline.own_transaction, true);
    assert.equal(baseline.no_xid, true);
    for (const k of ['named_statements', 'cursors', 'advisory_locks', 'temp_relations', 'listening']) assert.equal(baseline[k], 0, k);
  });

  /** Logs in as `persona` on `conn`; returns an error text or null. */
  async function login(conn: FuzzConn, persona: Persona, deadline: number): Promise<string | null> {
    await conn.write(startupPacket({ user: USER[persona].user, database: 'app' }));
    if (!(await conn.until(() => conn.messages().some((m) => m.type === 'R'), deadline))) return 'no authentication request';
    await conn.write(typed('p', Buffer.from(gen.tokens[persona] + '\0')));
    if (!(await conn.until(() => conn.messages().some((m) => m.type === 'Z' || m.type === 'E'), deadline))) return 'login not answered';
    const e = conn.messages().find((m) => m.type === 'E');
    return e === undefined ? null : `login refused: ${JSON.stringify(errorFields(e.body))}`;
  }

  /** Brings the bad client to `c.state` with valid messages; returns an error text or null. */
  async function prelude(conn: FuzzConn, c: Case, deadline: number): Promise<string | null> {
    const sawAfterMark = (pred: (m: BeMsg) => boolean): Promise<boolean> => conn.until(() => conn.since().some(pred), deadline);
    switch (c.state) {
      case 'startup':
        return null;
      case 'auth-password':
      case 'auth-sasl': {
        await conn.write(startupPacket({ user: c.state === 'auth-sasl' ? 'saslfuzz' : USER[c.persona].user, database: 'app' }));
        return (await sawAfterMark((m) => m.type === 'R')) ? null : 'no authentication request';
      }
      default:
        break;
    }
    const persona: Persona = c.state === 'copy' || c.state === 'copy-extended' ? 'admin' : c.persona;
    const err = await login(conn, persona, deadline);
    if (err !== null) return err;
    conn.mark();
    if (c.state === 'tx') {
      await conn.write(fe.query('BEGIN'));
      if (!(await sawAfterMark((m) => m.type === 'Z'))) return 'BEGIN not answered';
    } else if (c.state === 'copy') {
      await conn.write(fe.query('COPY fuzz_sink FROM STDIN'));
      if (!(await sawAfterMark((m) => m.type === 'G' || m.type === 'Z'))) return 'COPY not answered';
      if (!conn.since().some((m) => m.type === 'G')) return `no CopyInResponse: ${conn.since().map((m) => m.type).join('')}`;
    } else if (c.state === 'copy-extended') {
      await conn.write(Buffer.concat([fe.parse('COPY fuzz_sink FROM STDIN'), fe.bind(), fe.execute()]));
      if (!(await sawAfterMark((m) => m.type === 'G' || m.type === 'E'))) return 'extended COPY not answered';
      if (!conn.since().some((m) => m.type === 'G')) return `no CopyInResponse: ${conn.since().map((m) => m.type).join('')}`;
    } else if (c.state === 'ext-error') {
      await conn.write(fe.parse(c.failingParse));
      if (!(await sawAfterMark((m) => m.type === 'E'))) return `no error for Parse(${JSON.stringify(c.failingParse)}) before Sync`;
    }
    conn.mark();
    return null;
  }

  async function bystanderRound(): Promise<string | null> {
    const b = bystander;
    if (b === null) return 'no bystander';
    try {
      const r = (await withDeadline(b.query(BYSTANDER_SQL), DEADLINE_MS * 2, 'bystander query')).rows[0] as Record<string, unknown>;
      const want = { n: expectedOrders, role: 'app_reader', work_mem: '3MB', sub: 'bystander' };
      return JSON.stringify(r) === JSON.stringify(want) ? null : `bystander saw ${JSON.stringify(r)}, expected ${JSON.stringify(want)}`;
    } catch (err) {
      return `bystander failed: ${(err as Error).message}`;
    }
  }

  /** Runs one case; returns the violations (empty when every invariant held). */
  async function runCase(c: Case): Promise<string[]> {
    if (dirty) {
      await env.restart();
      figures.restarts++;
      await connectBystander();
      dirty = false;
    }
    const t0 = Date.now();
    const deadline = (): number => Date.now() + DEADLINE_MS;
    const v: string[] = [];
    const logMark = env.sg.logs.length;
    const stderrMark = env.sg.stderr.length;
    const conn = await FuzzConn.open(env.sg.port);
    let byRound: Promise<string | null> = Promise.resolve(null);
    try {
      const pre = await prelude(conn, c, deadline());
      figures.phaseMs.prelude.push(Date.now() - t0);
      if (pre !== null) {
        v.push(`prelude (${c.state}): ${pre}`);
        return v;
      }
      // The bystander works while the bad client does (it queues for the one connection).
      byRound = bystanderRound();
      const all = Buffer.concat(c.steps.map((s) => s.bytes));
      let off = 0;
      for (const n of c.chunks) {
        if (off >= all.length) break;
        await conn.write(all.subarray(off, off + n));
        off += n;
      }
      if (off < all.length) await conn.write(all.subarray(off));

      const loggedIn = c.state !== 'startup' && c.state !== 'auth-password' && c.state !== 'auth-sasl';
      // The first step that must be refused, if the stream is still aligned when it comes.
      let mustRefuse = false;
      for (const s of c.steps) {
        if (s.fatal) { mustRefuse = true; break; }
        if (!s.intact || s.ends) break;
      }
      const probeable = loggedIn && c.steps.every((s) => s.intact && !s.ends && !s.fatal);
      const tClose0 = Date.now();
      if (mustRefuse && c.state !== 'startup') {
        if (!(await conn.until(() => conn.isClosed, deadline()))) v.push(`a step that must be refused did not close the connection within ${DEADLINE_MS} ms; got ${conn.since().map((m) => m.type).join('')}`);
        const fatal = conn.since().find((m) => m.type === 'E' && errorFields(m.body).S === 'FATAL');
        if (fatal === undefined) v.push(`no FATAL ErrorResponse for a step that must be refused; got ${conn.since().map((m) => m.type).join('')}`);
      } else if (probeable) {
        const tag = `probe-${++probeSeq}`;
        await conn.write(Buffer.concat([typed('f', Buffer.from('fuzz probe\0')), fe.sync(), fe.query('ROLLBACK'), fe.query(`SELECT '${tag}'`)]));
        const answered = (): boolean => {
          const ms = conn.since();
          const i = ms.findIndex((m) => m.type === 'D' && dataRow(m.body)[0] === tag);
          return i >= 0 && ms.slice(i).some((m) => m.type === 'Z');
        };
        if (!(await conn.until(() => answered() || conn.isClosed, deadline()))) {
          v.push(`probe not answered within ${DEADLINE_MS} ms and the connection is still open; got ${conn.since().map((m) => m.type).join('')}`);
        }
      }
      conn.end();
      if (!(await conn.until(() => conn.isClosed, deadline()))) v.push(`connection not closed within ${DEADLINE_MS} ms after the client half-closed`);
      figures.closeMs.push(Date.now() - tClose0);
    } finally {
      conn.destroy();
    }
    const t1 = Date.now();
    figures.phaseMs.session.push(t1 - t0);
    const by = await byRound;
    if (by !== null) v.push(by);
    const t2 = Date.now();
    figures.phaseMs.bystander.push(t2 - t1);
    if (env.sg.proc.exitCode !== null || env.sg.proc.signalCode !== null) {
      v.push(`scopegate exited (${env.sg.proc.exitCode ?? env.sg.proc.signalCode}): ${env.sg.stderr.join('').slice(-2000)}`);
    } else {
      try {
        const now = await check();
        if (JSON.stringify(now) !== JSON.stringify(baseline)) v.push(`server connection not clean: ${JSON.stringify(now)} (baseline ${JSON.stringify(baseline)})`);
      } catch (err) {
        v.push(`fresh client failed: ${(err as Error).message}`);
      }
    }
    figures.phaseMs.check.push(Date.now() - t2);
    const bad = badLogLines(env.sg.logs.slice(logMark));
    if (bad.length > 0) v.push(`scopegate logged: ${JSON.stringify(bad.slice(0, 3))}`);
    if (env.sg.stderr.length > stderrMark) v.push(`scopegate stderr: ${env.sg.stderr.slice(stderrMark).join('').slice(0, 2000)}`);
    figures.caseMs.push(Date.now() - t0);
    if (v.length > 0) v.push(`scopegate log during the case (last 6): ${JSON.stringify(env.sg.logs.slice(logMark).slice(-6))}`);
    return v;
  }

  it(`${RUNS} generated cases in every session state keep scopegate alive, bystanders right and the pool clean`, { timeout: TIME_LIMIT_S !== undefined ? (TIME_LIMIT_S + 1800) * 1000 : Math.max(240_000, RUNS * 3_000) }, async (t) => {
    t.diagnostic(`seed=${SEED} runs=${RUNS}${PATH !== undefined ? ` path=${PATH}` : ''} deadline=${DEADLINE_MS}ms`);
    let lastViolations: string[] = [];
    const started = Date.now();
    const details = await fc.check(
      fc.asyncProperty(caseArbitrary(gen), async (c) => {
        const v = await runCase(c);
        figures.cases++;
        figures.byState.set(c.state, (figures.byState.get(c.state) ?? 0) + 1);
        if (v.length > 0) {
          dirty = true;
          lastViolations = v;
          throw new Error(v.join('\n'));
        }
      }),
      {
        numRuns: RUNS,
        seed: SEED,
        ...(PATH !== undefined ? { path: PATH } : {}),
        ...(TIME_LIMIT_S !== undefined ? { interruptAfterTimeLimit: TIME_LIMIT_S * 1000, markInterruptAsFailure: false } : {}),
      },
    );
    const secs = (Date.now() - started) / 1000;
    const rate = figures.cases / secs;
    t.diagnostic(`cases=${figures.cases} (generated runs ${details.numRuns}, shrinks ${details.numShrinks}) in ${secs.toFixed(1)} s = ${rate.toFixed(1)} cases/s; 100000 cases ≈ ${(100_000 / rate / 60).toFixed(0)} min (2 shared cores)`);
    t.diagnostic(`per case ms: p50=${percentile(figures.caseMs, 50)} p99=${percentile(figures.caseMs, 99)} max=${Math.max(0, ...figures.caseMs)}; close after last step ms: p50=${percentile(figures.closeMs, 50)} p99=${percentile(figures.closeMs, 99)} max=${Math.max(0, ...figures.closeMs)}`);
    t.diagnostic(`phase p50 ms: prelude=${percentile(figures.phaseMs.prelude, 50)} prelude+session=${percentile(figures.phaseMs.session, 50)} bystander wait=${percentile(figures.phaseMs.bystander, 50)} fresh-client check=${percentile(figures.phaseMs.check, 50)}`);
    t.diagnostic(`by state: ${[...figures.byState].map(([k, n]) => `${k}=${n}`).join(' ')}; scopegate restarts after failures: ${figures.restarts}`);
    if (details.failed) {
      const ce = details.counterexample?.[0];
      assert.fail([
        `protocol fuzz failed after ${details.numRuns} runs and ${details.numShrinks} shrinks`,
        `replay: SG_FUZZ_SEED=${details.seed} SG_FUZZ_PATH=${details.counterexamplePath}`,
        'shrunk counterexample:',
        ce === undefined ? '(none)' : describeCase(ce),
        'violations:',
        ...lastViolations.map((l) => `  ${l}`),
        String((details.errorInstance as Error | undefined)?.message ?? ''),
      ].join('\n'));
    }
  });

  it('a CancelRequest with an unknown key, sent between cases, cancels nothing (bystander still answered)', async () => {
    const conn = await FuzzConn.open(env.sg.port);
    await conn.write(cancelRequestPacket(123456, 654321));
    assert.ok(await conn.until(() => conn.isClosed, Date.now() + DEADLINE_MS), 'a CancelRequest connection is closed by the server');
    assert.equal(await bystanderRound(), null);
  });
});
