/**
 * Shared pieces of the fault-injection suite (test/faults/*.test.ts); defines no tests.
 *
 * - a real PostgreSQL 18 that can be stopped (fast shutdown) and started again on the same
 *   port and data directory;
 * - the real scopegate CLI in front of it with a small policy (scope `faults:write`, role
 *   `fault_writer`: SELECT/INSERT on `fault_rows`, the pgbench tables when asked for) and
 *   HS256 tokens signed in-process;
 * - an insert load: clients insert rows with unique ids in transactions, record the ids whose
 *   COMMIT was confirmed, classify every failure by what reached them (an ErrorResponse with a
 *   SQLSTATE, a closed connection, or nothing: a hang), and reconnect after a failure;
 * - the check that no confirmed row was lost, read directly from Postgres.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import pg from 'pg';
import { embeddedServer, SUPERPASS, SUPERUSER } from '../harness/postgres.js';
import { startScopegate, type RunningScopegate } from '../harness/scopegate.js';
import { initPgbench, runPgbench, type PgbenchResult } from '../../bench/runner.js';

export const DB = 'app';
export const LOGIN_ROLE = 'authenticator';
export const LOGIN_PASS = 'authenticator-pw';
export const SECRET = 'faults-dev-secret-0123456789abcdef0123';
export const ISSUER = 'https://issuer.faults.test';
export const AUDIENCE = 'scopegate';
export const SCOPE = 'faults:write';
/**
 * No answer within this long counts as a hang (pg's client-side query_timeout). It is a
 * liveness bound far above any wait the scenarios allow (query_wait_timeout is shorter).
 */
export const HANG_MS = 30_000;
export const HS_AUTH = { method: 'oauth', issuer: ISSUER, audience: AUDIENCE, secret: 'env:SG_SECRET', algorithms: ['HS256'], failure_delay: { after: 100_000 } };

/** A number from the environment (full-size runs), or the default. */
export function envNumber(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${JSON.stringify(v)}`);
  return n;
}

// ---- a PostgreSQL that can be restarted ---------------------------------------------

export interface RestartablePostgres {
  port: number;
  host: string;
  url(db?: string, user?: string, password?: string): string;
  sql(text: string, db?: string): Promise<pg.QueryResult>;
  /** Fast shutdown (SIGINT): running transactions are rolled back, every session gets 57P01. */
  stopFast(): Promise<void>;
  /** Starts the server again on the same port and data directory. */
  start(): Promise<void>;
  readonly running: boolean;
  /** The server's recent stderr (log lines). */
  log(): string;
  /** Stops it (if running) and removes the data directory. */
  destroy(): Promise<void>;
}

export async function startRestartablePostgres(flags: string[] = []): Promise<RestartablePostgres> {
  const logs: string[] = [];
  const e = await embeddedServer({ flags, persistent: true, prefix: 'scopegate-faults-pg-', onLog: (m) => { logs.push(m); if (logs.length > 2000) logs.splice(0, 1000); } });
  const { server, port, parent, url } = e;
  await server.initialise();
  let running = false;
  const start = async (): Promise<void> => {
    try {
      await server.start();
    } catch (err) {
      throw new Error(`postgres did not start: ${logs.slice(-20).join('')} ${String(err)}`);
    }
    running = true;
  };
  await start();
  return {
    port,
    host: '127.0.0.1',
    url,
    async sql(text, db = 'postgres') {
      const c = new pg.Client({ connectionString: url(db), connectionTimeoutMillis: 10_000 });
      c.on('error', () => undefined);
      await c.connect();
      try { return await c.query(text); } finally { await c.end().catch(() => undefined); }
    },
    async stopFast() {
      await server.stop();
      running = false;
    },
    start,
    get running() { return running; },
    log: () => logs.join(''),
    async destroy() {
      if (running) await server.stop();
      running = false;
      rmSync(parent, { recursive: true, force: true });
    },
  };
}

// ---- the fixture ---------------------------------------------------------------------

export interface FaultFixtureOptions {
  poolSize?: number;
  /** Merged into the config's `pool` section. */
  pool?: Record<string, unknown>;
  /** Merged into the config's entry for database `app`. */
  database?: Record<string, unknown>;
  /** Replaces the HS256 auth section (e.g. a JWKS issuer). */
  auth?: Record<string, unknown>;
  /** Initialise pgbench tables (scale 1) and grant them to the scope. */
  pgbench?: boolean;
  /** Superuser SQL run on `app` before scopegate starts. */
  setupSql?: string;
}

export interface FaultFixture {
  pg: RestartablePostgres;
  sg: RunningScopegate;
  /** An HS256 token for `sub` with scope faults:write, valid for an hour. */
  token(sub: string): Promise<string>;
  /** A connected pg.Client through scopegate (its 'error' events are swallowed; failures surface on queries). */
  connect(sub: string, extra?: pg.ClientConfig): Promise<pg.Client>;
  /** Superuser SQL on `app`, directly. */
  su(text: string): Promise<pg.QueryResult>;
  /** Server connections scopegate's pool holds now (pid, state, wait_event). */
  serverConnections(): Promise<Array<{ pid: number; state: string | null; wait_event: string | null; xact: boolean }>>;
  /** scopegate's resident set size in kB (VmRSS of /proc/<pid>/status). */
  rssKb(): number;
  pgbench(opts: { clients: number; seconds: number; mode?: 'simple' | 'extended'; sub?: string }): Promise<PgbenchResult>;
  stop(): Promise<void>;
}

const ROLES_SQL = `
CREATE ROLE ${LOGIN_ROLE} LOGIN NOINHERIT PASSWORD '${LOGIN_PASS}';
CREATE ROLE fault_writer NOLOGIN;
GRANT fault_writer TO ${LOGIN_ROLE};
`;

const SCHEMA_SQL = `
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO fault_writer;
CREATE TABLE fault_rows (id bigint PRIMARY KEY, client int NOT NULL, payload text);
GRANT SELECT, INSERT ON fault_rows TO fault_writer;
ALTER ROLE ${LOGIN_ROLE} SET search_path = public;
`;

const PGBENCH_TABLES = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history'];

function policyYaml(pgbench: boolean): string {
  return `default_schema: public
catalog: read
mode: enforce
scopes:
  "${SCOPE}":
    role: fault_writer
    allow:
      - { actions: [select, insert], tables: [fault_rows] }
      - { actions: [execute], functions: [pg_catalog.pg_sleep] }
${pgbench ? `      - { actions: [select, insert, update], tables: [${PGBENCH_TABLES.join(', ')}] }\n` : ''}`;
}

const HS_KEY = new TextEncoder().encode(SECRET);

export async function hsToken(sub: string, scope = SCOPE): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ scope }).setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(ISSUER).setAudience(AUDIENCE).setSubject(sub).setIssuedAt(now).setExpirationTime(now + 3600).sign(HS_KEY);
}

export async function startFaultFixture(opts: FaultFixtureOptions = {}): Promise<FaultFixture> {
  const pgsrv = await startRestartablePostgres();
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-faults-'));
  let sg: RunningScopegate;
  try {
    await pgsrv.sql(ROLES_SQL);
    await pgsrv.sql(`CREATE DATABASE ${DB}`);
    await pgsrv.sql(SCHEMA_SQL, DB);
    if (opts.pgbench === true) {
      await initPgbench({ host: '127.0.0.1', port: pgsrv.port, user: SUPERUSER, password: SUPERPASS, dbname: DB }, 1);
      await pgsrv.sql(`GRANT SELECT, INSERT, UPDATE ON ${PGBENCH_TABLES.join(', ')} TO fault_writer`, DB);
    }
    if (opts.setupSql !== undefined) await pgsrv.sql(opts.setupSql, DB);
    const policy = join(dir, 'policy.yaml');
    writeFileSync(policy, policyYaml(opts.pgbench === true));
    sg = await startScopegate({
      databases: { [DB]: { url: pgsrv.url(DB, LOGIN_ROLE, LOGIN_PASS), pool_size: opts.poolSize ?? 4, ...(opts.database ?? {}) } },
      pool: { mode: 'transaction', ...(opts.pool ?? {}) },
      auth: opts.auth ?? HS_AUTH,
      log: { level: 'info', audit: 'off' },
      policy,
    }, { SG_SECRET: SECRET });
  } catch (err) {
    await pgsrv.destroy();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const running = sg;
  const clients = new Set<pg.Client>();
  const connect = async (sub: string, extra: pg.ClientConfig = {}): Promise<pg.Client> => {
    const c = new pg.Client({
      host: '127.0.0.1', port: running.port, user: sub, database: DB, password: await hsToken(sub), connectionTimeoutMillis: 20_000, query_timeout: HANG_MS, ...extra,
    });
    c.on('error', () => undefined);
    clients.add(c);
    c.on('end', () => clients.delete(c));
    await c.connect();
    return c;
  };
  return {
    pg: pgsrv,
    sg: running,
    token: (sub) => hsToken(sub),
    connect,
    su: (text) => pgsrv.sql(text, DB),
    async serverConnections() {
      const r = await pgsrv.sql(`SELECT pid, state, wait_event, xact_start IS NOT NULL AS xact FROM pg_stat_activity
        WHERE usename = '${LOGIN_ROLE}' AND application_name = 'scopegate' AND backend_type = 'client backend' ORDER BY pid`);
      return r.rows as Array<{ pid: number; state: string | null; wait_event: string | null; xact: boolean }>;
    },
    rssKb: () => rssKb(running.proc.pid!),
    async pgbench(o) {
      const sub = o.sub ?? 'bench';
      return runPgbench({
        host: '127.0.0.1', port: running.port, user: sub, password: await hsToken(sub), dbname: DB,
        clients: o.clients, jobs: 1, mode: o.mode ?? 'simple', duration: o.seconds,
        script: { kind: 'builtin', name: 'tpcb-like' }, connect: false,
      }, 60);
    },
    async stop() {
      await Promise.all([...clients].map((c) => c.end().catch(() => undefined)));
      await running.stop().catch(() => null);
      await pgsrv.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

// ---- the insert load -----------------------------------------------------------------

/** What reached a client when its transaction failed. */
export type Outcome = `sqlstate:${string}` | 'closed' | 'hang' | 'wrong-result' | `other:${string}`;

/** Classifies a client-side error: an ErrorResponse (SQLSTATE), a closed connection, or else. */
export function classify(err: unknown): Outcome {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (/^[0-9A-Z]{5}$/.test(code)) return `sqlstate:${code}`;
  if (/Query read timeout|timeout expired|timed out/i.test(message)) return 'hang';
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ECONNREFUSED'
    || /Connection terminated|Client has encountered a connection error|Connection ended|not queryable|closed/i.test(message)) return 'closed';
  return `other:${code || message.slice(0, 80)}`;
}

export interface LoadReport {
  /** Transactions begun. */
  attempted: number;
  /** Transactions whose COMMIT was confirmed. */
  committed: number;
  /** Transactions that ended in an error. */
  failed: number;
  /** Failures whose COMMIT had been sent (the outcome is unknown to the client). */
  failedAtCommit: number;
  /** Outcome -> count, over failed transactions and failed connection attempts. */
  outcomes: Map<string, number>;
  /** Connection attempts that failed. */
  connectFailures: number;
  /** Ids of confirmed commits. */
  confirmed: number[];
  /** Ids of failed transactions whose COMMIT was never sent: must be absent. */
  neverCommitted: number[];
  /** Ids of failed transactions whose COMMIT was sent: may or may not be present. */
  uncertain: number[];
  /** Slowest successful transaction, ms (a figure, not asserted). */
  maxTxMs: number;
  /** The latest failures, for messages. */
  samples: string[];
}

export interface LoadOptions {
  clients: number;
  /** Keep going while this returns true. */
  running: () => boolean;
  connect: (i: number) => Promise<pg.Client>;
  /** First id of client i is idBase + i * 1e7. */
  idBase?: number;
  /** Called after each transaction (for per-transaction hooks such as kills). */
  onTransaction?: (i: number, ok: boolean) => void;
}

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

/**
 * Starts `clients` workers, each doing transactions of two inserts with unique ids until
 * `running()` is false. Odd transactions use the simple protocol (literals), even ones the
 * extended protocol (parameters). Each one checks what it read back, so a silent wrong answer
 * counts as a failure of its own. `report` fills in as the load runs; `done` resolves with it
 * once every worker has stopped.
 */
export function insertLoad(o: LoadOptions): { report: LoadReport; done: Promise<LoadReport> } {
  const r: LoadReport = {
    attempted: 0, committed: 0, failed: 0, failedAtCommit: 0, outcomes: new Map(), connectFailures: 0,
    confirmed: [], neverCommitted: [], uncertain: [], maxTxMs: 0, samples: [],
  };
  const note = (what: string): void => { r.samples.push(what); if (r.samples.length > 20) r.samples.shift(); };
  const worker = async (i: number): Promise<void> => {
    let next = (o.idBase ?? 1) + i * 10_000_000;
    let c: pg.Client | null = null;
    let failuresInRow = 0;
    while (o.running()) {
      if (failuresInRow > 0) await pace(Math.min(20 * failuresInRow, 200)); // load pacing during an outage, not synchronisation
      if (c === null) {
        try {
          c = await o.connect(i);
        } catch (err) {
          r.connectFailures++;
          bump(r.outcomes, `connect ${classify(err)}`);
          note(`client ${i} connect: ${(err as Error).message}`);
          failuresInRow++;
          continue;
        }
      }
      const ids = [next, next + 1];
      next += 2;
      r.attempted++;
      let commitSent = false;
      const t0 = Date.now();
      try {
        const simple = r.attempted % 2 === 1;
        await c.query('BEGIN');
        const ins = simple
          ? await c.query(`INSERT INTO fault_rows (id, client) VALUES (${ids[0]}, ${i}), (${ids[1]}, ${i}) RETURNING id`)
          : await c.query({ text: 'INSERT INTO fault_rows (id, client) VALUES ($1, $3), ($2, $3) RETURNING id', values: [ids[0], ids[1], i] });
        const back = (ins.rows as Array<{ id: string }>).map((x) => Number(x.id)).sort((a, b) => a - b);
        if (back.length !== 2 || back[0] !== ids[0] || back[1] !== ids[1]) throw Object.assign(new Error(`INSERT RETURNING gave ${JSON.stringify(back)} for ${JSON.stringify(ids)}`), { wrong: true });
        const seen = await c.query({ text: 'SELECT count(*)::int AS n FROM fault_rows WHERE id = ANY($1::bigint[])', values: [ids] });
        if ((seen.rows[0] as { n: number }).n !== 2) throw Object.assign(new Error(`own rows not visible: ${JSON.stringify(seen.rows)}`), { wrong: true });
        commitSent = true;
        const done = await c.query('COMMIT');
        if (done.command !== 'COMMIT') throw Object.assign(new Error(`COMMIT answered ${done.command}`), { wrong: true });
        r.committed++;
        r.confirmed.push(...ids);
        r.maxTxMs = Math.max(r.maxTxMs, Date.now() - t0);
        failuresInRow = 0;
        o.onTransaction?.(i, true);
      } catch (err) {
        r.failed++;
        const outcome = (err as { wrong?: boolean }).wrong === true ? 'wrong-result' : classify(err);
        bump(r.outcomes, outcome);
        note(`client ${i}: ${outcome} ${(err as Error).message}`);
        if (commitSent) { r.failedAtCommit++; r.uncertain.push(...ids); } else r.neverCommitted.push(...ids);
        // The session's state is not known after a failure: start afresh.
        const old = c;
        c = null;
        old.end().catch(() => undefined);
        failuresInRow++;
        o.onTransaction?.(i, false);
      }
    }
    if (c !== null) await c.end().catch(() => undefined);
  };
  const done = Promise.all(Array.from({ length: o.clients }, (_, i) => worker(i))).then(() => r);
  return { report: r, done };
}

export interface RowAudit {
  /** Confirmed ids missing from the table: committed rows lost. */
  lost: number[];
  /** Ids present whose transaction failed before COMMIT: must be none. */
  phantom: number[];
  /** Failed-at-COMMIT ids found in the table (committed though the client was not told). */
  uncertainPresent: number;
  uncertainAbsent: number;
  /** Ids in the table nobody attempted. */
  strangers: number;
  rows: number;
}

/** Reads fault_rows directly from Postgres and compares it with what the clients know. */
export async function auditRows(su: (sql: string) => Promise<pg.QueryResult>, reports: LoadReport[]): Promise<RowAudit> {
  const present = new Set((await su('SELECT id FROM fault_rows')).rows.map((x: { id: string }) => Number(x.id)));
  const lost: number[] = [];
  const phantom: number[] = [];
  let uncertainPresent = 0;
  let uncertainAbsent = 0;
  const known = new Set<number>();
  for (const rep of reports) {
    for (const id of rep.confirmed) { known.add(id); if (!present.has(id)) lost.push(id); }
    for (const id of rep.neverCommitted) { known.add(id); if (present.has(id)) phantom.push(id); }
    for (const id of rep.uncertain) { known.add(id); if (present.has(id)) uncertainPresent++; else uncertainAbsent++; }
  }
  let strangers = 0;
  for (const id of present) if (!known.has(id)) strangers++;
  return { lost, phantom, uncertainPresent, uncertainAbsent, strangers, rows: present.size };
}

/** One line of figures for a load report. */
export function describeLoad(name: string, r: LoadReport, a?: RowAudit): string {
  const outcomes = [...r.outcomes].map(([k, v]) => `${k}=${v}`).join(' ') || 'none';
  const audit = a === undefined ? '' : `; table: ${a.rows} rows, lost ${a.lost.length}, phantom ${a.phantom.length}, failed-at-COMMIT ids present ${a.uncertainPresent} / absent ${a.uncertainAbsent}`;
  return `${name}: attempted ${r.attempted}, committed ${r.committed}, failed ${r.failed} (at COMMIT ${r.failedAtCommit}), connect failures ${r.connectFailures}; errors: ${outcomes}; slowest ok tx ${r.maxTxMs} ms${audit}`;
}

/** Outcomes that are not an error reaching the client (a hang, a wrong answer, something unclassified). */
export function badOutcomes(r: LoadReport): string[] {
  return [...r.outcomes.keys()].filter((k) => !/^(connect )?(sqlstate:[0-9A-Z]{5}|closed)$/.test(k));
}

export function pace(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Counts a failed pgbench run's messages by their text (pgbench prints no SQLSTATE). */
export function pgbenchErrors(res: PgbenchResult): string[] {
  return res.output.split('\n').filter((l) => /error|aborted|FATAL|could not/i.test(l) && !/^number of/.test(l)).map((l) => l.trim());
}

/** A raw wire-protocol client logged in through scopegate with a token as its password. */
export { rawLogin } from '../harness/rawclient.js';
