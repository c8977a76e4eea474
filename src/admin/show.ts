/** The admin console's SHOW tables: columns named and ordered as PgBouncer's, rows from the running server. */
import { readFileSync } from 'node:fs';
import { POOL_DEFAULTS, type PoolSettings } from '../config.js';
import { DecisionKind } from '../policy/gate.js';
import type { DatabasePool } from '../pool/database-pool.js';
import { preparedCounts } from '../backend/server-statements.js';
import { Cleanup } from '../backend/backend.js';
import type { ColumnDef } from '../protocol/messages.js';
import { ClientSession } from '../session/client-session.js';
import { clientState, poolCounts, poolEntries, serverState, timestamp, totals, type AdminServer, type Averages } from './stats.js';

/**
 * Column lists follow PgBouncer 1.25's documentation (doc/usage.md, "Show commands", as of
 * pgbouncer/pgbouncer@020c442): the same names in the same order, so scripts and exporters
 * written for PgBouncer read them. SHOW CLIENTS adds the token's sub, scopes and expiry at the
 * end; SHOW POLICY, SHOW DECISIONS and SHOW THREADS are scopegate's own.
 */
export interface Table {
  columns: ColumnDef[];
  rows: Array<Array<string | null>>;
}

const t = (name: string): ColumnDef => ({ name, type: 'text' });
const n = (name: string): ColumnDef => ({ name, type: 'int8' });

export const POOLS_COLUMNS: ColumnDef[] = [
  t('database'), t('user'), n('cl_active'), n('cl_waiting'), n('cl_active_cancel_req'), n('cl_waiting_cancel_req'),
  n('sv_active'), n('sv_active_cancel'), n('sv_being_canceled'), n('sv_idle'), n('sv_used'), n('sv_tested'), n('sv_login'),
  n('maxwait'), n('maxwait_us'), t('pool_mode'), t('load_balance_hosts'),
];

const CONN_COLUMNS: ColumnDef[] = [
  t('type'), t('user'), t('database'), t('replication'), t('state'), t('addr'), n('port'), t('local_addr'), n('local_port'),
  t('connect_time'), t('request_time'), n('wait'), n('wait_us'), n('close_needed'), t('ptr'), t('link'), n('remote_pid'),
  t('tls'), t('application_name'), n('prepared_statements'), n('id'),
];

export const CLIENTS_COLUMNS: ColumnDef[] = [...CONN_COLUMNS, t('sub'), t('scopes'), t('expires_at')];
export const SERVERS_COLUMNS: ColumnDef[] = CONN_COLUMNS;

export const STATS_COLUMNS: ColumnDef[] = [
  t('database'), n('total_server_assignment_count'), n('total_xact_count'), n('total_query_count'), n('total_received'), n('total_sent'),
  n('total_xact_time'), n('total_query_time'), n('total_wait_time'), n('total_client_parse_count'), n('total_server_parse_count'), n('total_bind_count'),
  n('avg_server_assignment_count'), n('avg_xact_count'), n('avg_query_count'), n('avg_recv'), n('avg_sent'),
  n('avg_xact_time'), n('avg_query_time'), n('avg_wait_time'), n('avg_client_parse_count'), n('avg_server_parse_count'), n('avg_bind_count'),
];

export const DATABASES_COLUMNS: ColumnDef[] = [
  t('name'), t('host'), n('port'), t('database'), t('force_user'), n('pool_size'), n('min_pool_size'), n('reserve_pool_size'),
  n('server_lifetime'), t('pool_mode'), t('load_balance_hosts'), n('max_connections'), n('current_connections'),
  n('max_client_connections'), n('current_client_connections'), n('paused'), n('disabled'),
];

export const CONFIG_COLUMNS: ColumnDef[] = [t('key'), t('value'), t('default'), t('changeable')];
export const LISTS_COLUMNS: ColumnDef[] = [t('list'), n('items')];
export const VERSION_COLUMNS: ColumnDef[] = [t('version')];
export const POLICY_COLUMNS: ColumnDef[] = [t('version'), t('source'), t('scopes'), t('mode'), n('reload_failures'), t('stale'), n('revocations')];
export const DECISIONS_COLUMNS: ColumnDef[] = [t('scope'), n('allow'), n('deny'), n('would_deny')];
export const THREADS_COLUMNS: ColumnDef[] = [n('threads'), n('jobs'), n('failed'), n('restarts')];

const s = (v: number | string): string => String(v);

export function showPools(srv: AdminServer): Table {
  const now = Date.now();
  return {
    columns: POOLS_COLUMNS,
    rows: poolEntries(srv).map((e) => {
      const c = poolCounts(srv, e, now);
      // Cancels are sent on connections of their own and never counted against a pool here.
      return [e.database, e.user, s(c.clActive), s(c.clWaiting), '0', '0', s(c.svActive), '0', '0', s(c.svIdle), '0', s(c.svTested), s(c.svLogin),
        s(Math.floor(c.maxWaitMs / 1000)), s((c.maxWaitMs % 1000) * 1000), e.pool.db.pool_mode, null];
    }),
  };
}

/** The client's TLS version ('TLSv1.3'), empty in plain text. */
function tlsColumn(c: ClientSession): string {
  return c.tls?.version ?? '';
}

/**
 * SHOW CLIENTS. `full` (the admin scope) shows every client's sub, scopes and expiry; a
 * stats-scope token sees those only for its own connections (same sub), NULL for the others.
 * Tokens themselves are never kept, so never shown.
 */
export function showClients(srv: AdminServer, viewer: { readonly identity: { readonly sub: string } | null }, full: boolean): Table {
  const now = Date.now();
  const rows: Array<Array<string | null>> = [];
  for (const c of srv.sessions()) {
    const state = clientState(c);
    const waitMs = state === 'waiting' && c.requestedAt > 0 ? now - c.requestedAt : 0;
    const id = c.identity;
    const mine = id !== null && viewer.identity !== null && id.sub === viewer.identity.sub;
    const shown = full || mine;
    const b = c.backend;
    rows.push([
      // The login name is often the subject too: hidden from a stats token like the sub.
      'C', shown || id === null ? c.user : null, c.database, 'none', state, c.address, s(c.socket.remotePort ?? 0), c.socket.localAddress ?? '', s(c.socket.localPort ?? 0),
      timestamp(c.connectedAt), timestamp(c.requestedAt), s(Math.floor(waitMs / 1000)), s((waitMs % 1000) * 1000), '0',
      `c${c.id}`, b === null ? null : `s${b.id}`, '0', tlsColumn(c), c.startupValues.get('application_name') ?? '', s(c.statements.byName.size), s(c.id),
      shown && id !== null ? id.sub : null,
      shown && id !== null ? [...new Set(id.scopes)].join(' ') : null,
      shown && id !== null && id.expiresAt !== null ? new Date(id.expiresAt).toISOString() : null,
    ]);
  }
  return { columns: CLIENTS_COLUMNS, rows };
}

export function showServers(srv: AdminServer): Table {
  const rows: Array<Array<string | null>> = [];
  for (const e of poolEntries(srv)) {
    for (const b of e.pool.servers) {
      const owner = b.owner instanceof ClientSession ? b.owner : null;
      rows.push([
        'S', e.user, e.database, 'none', serverState(e.pool, b), e.pool.db.host, s(e.pool.db.port), b.socket.localAddress ?? '', s(b.socket.localPort ?? 0),
        timestamp(b.createdAt), timestamp(b.lastUsed), '0', '0', b.cleanup === Cleanup.Close ? '1' : '0', `s${b.id}`, owner === null ? null : `c${owner.id}`, s(b.pid),
        '', owner?.startupValues.get('application_name') ?? '', s(b.prepared.size), s(b.id),
      ]);
    }
  }
  return { columns: SERVERS_COLUMNS, rows };
}

export function showStats(srv: AdminServer, avg: Averages): Table {
  const byDb = new Map<string, ReturnType<typeof poolEntries>>();
  for (const e of poolEntries(srv)) byDb.set(e.database, [...(byDb.get(e.database) ?? []), e]);
  const rows: Array<Array<string | null>> = [];
  for (const [db, entries] of byDb) {
    const tot = totals(entries.map((e) => e.pool));
    const a = avg.of(db);
    // Bytes and per-query time are not measured (0); parse counts are process-wide (SHOW STATS has no row for them).
    rows.push([db, s(tot.assignments), s(tot.xacts), s(tot.queries), '0', '0', s(tot.xactMicros), '0', s(tot.waitMicros), '0', '0', '0',
      s(a.assignments), s(a.xacts), s(a.queries), '0', '0', s(a.xactMicros), '0', s(a.waitMicros), '0', '0', '0']);
  }
  return { columns: STATS_COLUMNS, rows };
}

export function showDatabases(srv: AdminServer): Table {
  // Counted by the pool a client uses: a route's row counts that route's clients, a role's that role's.
  const clients = new Map<DatabasePool, number>();
  for (const c of srv.sessions()) {
    const p = c.console === null ? c.poolNow : null;
    if (p !== null) clients.set(p, (clients.get(p) ?? 0) + 1);
  }
  return {
    columns: DATABASES_COLUMNS,
    rows: poolEntries(srv).map((e) => {
      const db = e.pool.db;
      return [e.database, db.host, s(db.port), db.dbname, db.user, s(db.pool_size), s(db.min_pool_size), s(db.reserve_pool_size),
        s(Math.round(e.pool.settings.server_lifetime / 1000)), db.pool_mode, null, '0', s(e.pool.servers.size), '0', s(clients.get(e.pool) ?? 0),
        e.pool.paused ? '1' : '0', '0'];
    }),
  };
}

/** Key names whose values are secrets: shown as `********` (the value, or an env:/file: reference). */
const SECRET_KEY = /(secret|password|passwd|token|credential|private|api_?key)/i;

export function maskIfSecret(key: string, value: string): string {
  return SECRET_KEY.test(key) && value !== '' ? '********' : value;
}

function flatten(prefix: string, v: unknown, out: Array<[string, string]>): void {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, inner] of Object.entries(v as Record<string, unknown>)) flatten(prefix === '' ? k : `${prefix}.${k}`, inner, out);
    return;
  }
  const text = v === null || v === undefined ? '' : Array.isArray(v) ? v.map(String).join(',') : String(v);
  out.push([prefix, maskIfSecret(prefix, text)]);
}

/** Settings a RELOAD applies (pool sizes and timeouts); the rest needs a restart. */
const RELOADABLE = new Set(['pool.default_pool_size', 'pool.min_pool_size', 'pool.reserve_pool_size', 'pool.query_wait_timeout', 'pool.server_idle_timeout',
  'pool.server_lifetime', 'pool.reserve_pool_timeout', 'pool.idle_transaction_timeout', 'pool.max_client_conn', 'pool.shutdown_timeout', 'pool.server_connect_timeout', 'pool.client_login_timeout', 'pool.max_partial_message_bytes', 'pool.max_user_client_connections']);

export function showConfig(srv: AdminServer): Table {
  const cfg = srv.config;
  const out: Array<[string, string]> = [];
  flatten('listen', cfg.listen, out);
  flatten('pool', cfg.pool, out);
  flatten('auth', cfg.auth, out);
  flatten('policy', cfg.policy, out);
  flatten('log', cfg.log, out);
  if (cfg.admin !== null) {
    const a = cfg.admin;
    flatten('admin', { scope: a.scope, stats_scope: a.stats_scope, listen_http: a.listen_http === null ? null : `${a.listen_http.host}:${a.listen_http.port}`, trust_access: a.trust_access }, out);
  }
  const defaults = POOL_DEFAULTS as unknown as Record<keyof PoolSettings, unknown>;
  return {
    columns: CONFIG_COLUMNS,
    rows: out.map(([k, v]) => {
      const d = k.startsWith('pool.') ? defaults[k.slice(5) as keyof PoolSettings] : undefined;
      return [k, v, d === undefined ? null : String(d), RELOADABLE.has(k) ? 'yes' : 'no'];
    }),
  };
}

export function showLists(srv: AdminServer): Table {
  const entries = poolEntries(srv);
  let used = 0;
  let login = 0;
  for (const c of srv.sessions()) {
    used++;
    if (clientState(c) === 'login') login++;
  }
  const users = new Set(entries.map((e) => e.user));
  const servers = entries.reduce((sum, e) => sum + e.pool.servers.size, 0);
  const items: Array<[string, number]> = [
    ['databases', srv.config.databases.size], ['users', users.size], ['pools', entries.length], ['free_clients', 0], ['used_clients', used],
    ['login_clients', login], ['free_servers', 0], ['used_servers', servers], ['dns_names', 0], ['dns_zones', 0], ['dns_queries', 0], ['dns_pending', 0],
  ];
  return { columns: LISTS_COLUMNS, rows: items.map(([k, v]) => [k, s(v)]) };
}

let version: string | null = null;
/** The package's version (package.json next to dist/). */
export function scopegateVersion(): string {
  if (version === null) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string };
      version = pkg.version ?? 'unknown';
    } catch {
      version = 'unknown';
    }
  }
  return version;
}

export function showVersion(): Table {
  return { columns: VERSION_COLUMNS, rows: [[`scopegate ${scopegateVersion()}`]] };
}

export function showPolicy(srv: AdminServer): Table {
  const p = srv.control?.policy ?? null;
  const feed = srv.control?.policySource;
  return {
    columns: POLICY_COLUMNS,
    rows: [[p === null ? null : p.version, p === null ? null : p.file ?? feed?.cfg.url ?? null, p === null ? null : p.policy.scopes.map((sc) => sc.name).join(' '), p === null ? 'off' : p.policy.mode,
      s(srv.control?.policyReloadFailures ?? 0),
      // policy_source only: whether the source is unreachable (the policy may be behind), and its revocations.
      feed == null ? null : feed.stale ? 'yes' : 'no', feed == null ? null : s(feed.revocations.size)]],
  };
}

export function showDecisions(srv: AdminServer): Table {
  const rows: Array<Array<string | null>> = [];
  for (const [scope, r] of srv.gate.counts().decisions) rows.push([scope === '' ? null : scope, s(r[DecisionKind.Allow]!), s(r[DecisionKind.Deny]!), s(r[DecisionKind.WouldDeny]!)]);
  return { columns: DECISIONS_COLUMNS, rows };
}

export function showThreads(srv: AdminServer): Table {
  const th = srv.gate.counts().threads;
  return { columns: THREADS_COLUMNS, rows: [[s(srv.config.pool.parser_threads), s(th?.jobs ?? 0), s(th?.failed ?? 0), s(th?.restarts ?? 0)]] };
}

/** Parses made on clients' behalf, process-wide (metrics). */
export function preparedTotals(): { parses: number; reprepared: number } {
  return preparedCounts;
}
