/** What the admin console and the metrics read of the running server: pools, clients, servers, totals. */
import type { Logger } from 'pino';
import type { Backend } from '../backend/backend.js';
import type { Config } from '../config.js';
import type { StatementGate } from '../policy/gate.js';
import type { PolicyStore } from '../policy/store.js';
import type { PolicyFeed } from '../policy/source.js';
import type { DatabasePool } from '../pool/database-pool.js';
import type { CancelPeers } from '../server/peers.js';
import type { RouteTable } from '../pool/routes.js';
import { ClientSession } from '../session/client-session.js';
import { Phase } from '../session/phase.js';
import type { WorkerLink } from '../server/worker-link.js';

/** RELOAD and SHUTDOWN: the same code paths as SIGHUP and SIGTERM (src/server/run.ts). */
export interface AdminControl {
  /** Re-reads the config and the policy; resolves with the error when the config is invalid. */
  reload(why: string): string | null;
  shutdown(why: string): void;
  readonly policy: PolicyStore | null;
  /** Policy reloads that failed since start (the running policy was kept). */
  readonly policyReloadFailures: number;
  /** The central policy source, when policy_source is configured. */
  readonly policySource?: PolicyFeed | null;
}

/** The running server as the console and the metrics see it (implemented by Scopegate). */
export interface AdminServer {
  readonly config: Config;
  readonly log: Logger;
  readonly pools: ReadonlyMap<string, DatabasePool>;
  readonly rolePools: ReadonlyMap<string, ReadonlyMap<string, DatabasePool>>;
  /** route_by_claim entries: a pool per route (src/pool/routes.ts). */
  readonly routes?: ReadonlyMap<string, RouteTable>;
  readonly gate: StatementGate;
  /** Bytes of clients' unfinished messages (src/protocol/framer.ts). */
  readonly partialBytes: { readonly used: number };
  readonly startedAt: number;
  readonly shuttingDown: boolean;
  /** Set by run.ts; null when the server was built in-process without it. */
  control: AdminControl | null;
  sessions(): Iterable<ClientSession>;
  /** peer_id / peers: cancel forwarding counters (src/server/peers.ts); absent in-process. */
  readonly peers?: CancelPeers;
  /** workers: N: this worker's link to the primary (src/server/worker-link.ts); null or absent: one process. */
  readonly workerLink?: WorkerLink | null;
}

/** One pool: a database entry, or one scope role's pool of a server_login: role entry. */
export interface PoolEntry {
  database: string;
  /** The role server connections log in as. */
  user: string;
  pool: DatabasePool;
  /** With route_by_claim: the route (`database` is then `entry/route`); null otherwise. */
  route?: string | null;
}

/** Metric labels of a pool: the entry's name, and with route_by_claim its route. */
export function poolLabels(e: PoolEntry): Record<string, string> {
  const route = e.route ?? null;
  if (route === null) return { database: e.database, user: e.user };
  return { database: e.database.slice(0, e.database.length - route.length - 1), user: e.user, route };
}

export function poolEntries(s: AdminServer): PoolEntry[] {
  const out: PoolEntry[] = [];
  for (const [name, pool] of s.pools) out.push({ database: name, user: pool.db.user, pool });
  for (const [name, byRole] of s.rolePools) for (const [role, pool] of byRole) out.push({ database: name, user: role, pool });
  for (const table of s.routes?.values() ?? []) for (const r of table.all()) out.push({ database: r.label, user: r.db.user, pool: r.pool, route: r.name });
  return out;
}

/** The pools of one database name (PAUSE db, KILL db); empty when there is no such entry. */
export function poolsOf(s: AdminServer, database: string | null): DatabasePool[] {
  // A routed entry's name covers all its routes (`PAUSE app`); `app/acme` names one.
  return poolEntries(s).filter((e) => database === null || e.database === database || (e.route != null && e.database === `${database}/${e.route}`)).map((e) => e.pool);
}

export type ClientState = 'login' | 'idle' | 'waiting' | 'active';

/** PgBouncer's client states: active (linked to a server, or the console), waiting, idle. */
export function clientState(c: ClientSession): ClientState {
  if (c.console !== null) return 'active';
  const p = c.phaseNow;
  if (p === Phase.Startup || p === Phase.Authenticating) return 'login';
  if (p === Phase.Acquiring) return 'waiting';
  return c.backend !== null ? 'active' : 'idle';
}

export type ServerState = 'active' | 'idle' | 'tested' | 'login';

/** active: linked to a client; idle: ready for one; tested: being reset or drained by the janitor. */
export function serverState(pool: DatabasePool, b: Backend): ServerState {
  if (b.owner !== null) return 'active';
  return pool.isIdle(b) ? 'idle' : 'tested';
}

/** Counts per pool, computed from the pool and its clients when asked (never per message). */
export interface PoolCounts {
  clActive: number;
  clWaiting: number;
  svActive: number;
  svIdle: number;
  svTested: number;
  svLogin: number;
  /** ms since the oldest waiting client began to wait (0: nobody waits). */
  maxWaitMs: number;
}

export function poolCounts(s: AdminServer, entry: PoolEntry, now = Date.now()): PoolCounts {
  const pool = entry.pool;
  let clActive = 0;
  for (const c of s.sessions()) {
    if (c.poolNow !== pool) continue;
    const st = clientState(c);
    if (st === 'active' || st === 'idle') clActive++;
  }
  const w = pool.waiting();
  let svActive = 0;
  let svIdle = 0;
  let svTested = 0;
  for (const b of pool.servers) {
    const st = serverState(pool, b);
    if (st === 'active') svActive++;
    else if (st === 'idle') svIdle++;
    else svTested++;
  }
  return { clActive, clWaiting: w.count, svActive, svIdle, svTested, svLogin: pool.logins, maxWaitMs: w.oldest === 0 ? 0 : now - w.oldest };
}

/** Ready: every pool has reached its server at least once and none is failing to log in now. */
export function readiness(s: AdminServer): { ready: boolean; pools: Array<{ database: string; user: string; reached: boolean; failing: boolean }> } {
  const entries = poolEntries(s);
  const pools = entries.map((e) => ({ database: e.database, user: e.user, reached: e.pool.reachedServer, failing: e.pool.failingNow }));
  // A tenant's route connects at its first login: one nobody used yet holds readiness back only if failing.
  return { ready: !s.shuttingDown && pools.every((p, i) => (p.reached || entries[i]!.route != null) && !p.failing), pools };
}

/** PgBouncer's time format in SHOW CLIENTS / SERVERS: `2024-01-31 12:00:00 UTC`. */
export function timestamp(ms: number): string | null {
  if (ms <= 0) return null;
  return `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/**
 * SHOW STATS' averages are per stats_period, as PgBouncer's: the difference of the totals
 * over the last whole period, per second.
 */
export const STATS_PERIOD_MS = 60_000;

export interface Totals {
  xacts: number;
  queries: number;
  assignments: number;
  xactMicros: number;
  waitMicros: number;
}

export function totals(pools: readonly DatabasePool[]): Totals {
  const t: Totals = { xacts: 0, queries: 0, assignments: 0, xactMicros: 0, waitMicros: 0 };
  for (const p of pools) {
    const c = p.counters;
    t.xacts += c.xacts;
    t.queries += c.queries;
    t.assignments += c.assignments;
    t.xactMicros += Math.round(c.xactTime.sum * 1e6);
    t.waitMicros += Math.round(c.wait.sum * 1e6);
  }
  return t;
}

/** Keeps the totals at the end of each stats period, per database name. */
export class Averages {
  private prev = new Map<string, Totals>();
  private last = new Map<string, Totals>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly totalsOf: () => Map<string, Totals>) {
    this.last = totalsOf();
    this.timer = setInterval(() => {
      this.prev = this.last;
      this.last = this.totalsOf();
    }, STATS_PERIOD_MS);
    this.timer.unref();
  }

  /** Per second over the last whole period (zeros until one has passed). */
  of(database: string): Totals {
    const a = this.prev.get(database);
    const b = this.last.get(database);
    const zero: Totals = { xacts: 0, queries: 0, assignments: 0, xactMicros: 0, waitMicros: 0 };
    if (a === undefined || b === undefined || a === b) return zero;
    const secs = STATS_PERIOD_MS / 1000;
    const dx = b.xacts - a.xacts;
    const dq = b.queries - a.queries;
    return {
      xacts: Math.round(dx / secs),
      queries: Math.round(dq / secs),
      assignments: Math.round((b.assignments - a.assignments) / secs),
      // Per transaction and per assignment, as PgBouncer's avg_xact_time / avg_wait_time.
      xactMicros: dx > 0 ? Math.round((b.xactMicros - a.xactMicros) / dx) : 0,
      waitMicros: b.assignments - a.assignments > 0 ? Math.round((b.waitMicros - a.waitMicros) / (b.assignments - a.assignments)) : 0,
    };
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
