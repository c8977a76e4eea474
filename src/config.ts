/** The YAML config file: parsing, defaults named after PgBouncer's, one-line errors naming the key. */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './errors.js';
import { parseDuration } from './auth/config.js';
import { parsePolicySource, type PolicySourceConfig } from './policy/source-config.js';
import { parseClientTls, parseServerTls, type ClientTlsConfig, type ServerTlsConfig } from './server/tls-config.js';
import { parsePeering, type PeeringConfig } from './server/peers.js';
import { parseRoutedDatabase, type RoutingConfig } from './pool/route-config.js';

/** Seconds-based durations, PgBouncer style; stored in milliseconds. */
export type Millis = number;

export type PoolMode = 'transaction' | 'session';

export interface PoolSettings {
  mode: PoolMode;
  default_pool_size: number;
  min_pool_size: number;
  reserve_pool_size: number;
  reserve_pool_timeout: Millis;
  max_client_conn: number;
  /** Client connections one user may hold at once (the token's sub; the login name without a token); 0: no limit (PgBouncer's name). */
  max_user_client_connections: number;
  query_wait_timeout: Millis;
  server_connect_timeout: Millis;
  server_idle_timeout: Millis;
  server_lifetime: Millis;
  idle_transaction_timeout: Millis;
  max_prepared_statements: number;
  shutdown_timeout: Millis;
  server_reset_query: string;
  /** A client must finish its login (startup and authentication) within this (PgBouncer's name). */
  client_login_timeout: Millis;
  /** Largest message a client may send before it is authenticated (a token fits). */
  max_login_packet_size: number;
  /** Largest message an authenticated client may send (PgBouncer's name). */
  max_packet_size: number;
  /** Bytes all clients' unfinished messages may hold together (one process; at least max_packet_size). */
  max_partial_message_bytes: number;
  /** Largest Query or Parse message scopegate parses. */
  max_statement_size: number;
  /** Most statements in one Query. */
  max_statements_per_query: number;
  /** Worker threads that parse and decide big texts (0: everything on the event loop). */
  parser_threads: number;
  /** Texts of at least this many characters are decided by those threads, not on the event loop. */
  parser_thread_min_size: number;
  /** A thread's job that takes longer is refused (54001) and the thread replaced. */
  parser_thread_timeout: Millis;
}

export interface DatabaseConfig {
  name: string;
  host: string;
  port: number;
  user: string;
  password: string | null;
  dbname: string;
  pool_size: number;
  min_pool_size: number;
  reserve_pool_size: number;
  pool_mode: PoolMode;
  /**
   * Who server connections log in as. `authenticator`: the url's user, which switches to each
   * scope's role with SET ROLE. `role`: each scope's role itself (a pool per role, `roles`),
   * so Postgres refuses a switch to a role the scope does not have.
   */
  server_login: 'authenticator' | 'role';
  /** With server_login: role, how each scope role logs in: its own pool settings and password. */
  roles: ReadonlyMap<string, DatabaseConfig>;
  /** TLS to this server: the global server_tls, or the database's own. */
  server_tls: ServerTlsConfig;
  /** `route_by_claim`: a token claim picks one of several servers (src/pool/routes.ts); absent: none. */
  routing?: RoutingConfig | null;
}

export interface Config {
  file: string | null;
  listen: { host: string; port: number };
  databases: Map<string, DatabaseConfig>;
  pool: PoolSettings;
  /** Raw `auth` section; the auth module validates it. */
  auth: unknown;
  policy: string | null;
  /** The central policy source (src/policy/source.ts); null: none. Never set together with `policy`. */
  policy_source: PolicySourceConfig | null;
  log: { level: string; audit: string; audit_sample: number };
  /** TLS to clients (src/server/tls.ts). */
  client_tls: ClientTlsConfig;
  /** The admin console (virtual database `scopegate`, alias `pgbouncer`) and the HTTP endpoints; null: off. */
  admin: AdminConfig | null;
  /** `peer_id` and `peers`: cancel keys carry this instance's id, cancels for peers are forwarded (src/server/peers.ts). */
  peering: PeeringConfig;
  /** `workers`: processes sharing the listen port (src/server/workers.ts); 1: no cluster at all. */
  workers: number;
}

/** `admin:`: who may use the console, and where /metrics, /healthz, /readyz are served. */
export interface AdminConfig {
  /** Token scope for every console command (PgBouncer's admin_users). */
  scope: string;
  /** Token scope for the read-only SHOW commands (PgBouncer's stats_users); null: none. */
  stats_scope: string | null;
  /** host:port of the HTTP listener; null: off. */
  listen_http: { host: string; port: number } | null;
  /** Under auth.method trust (no tokens): what a loopback client gets on the console. */
  trust_access: 'none' | 'stats' | 'admin';
}

export const POOL_DEFAULTS: PoolSettings = {
  mode: 'transaction',
  default_pool_size: 20,
  min_pool_size: 0,
  reserve_pool_size: 0,
  reserve_pool_timeout: 5_000,
  max_client_conn: 10_000,
  max_user_client_connections: 0,
  query_wait_timeout: 120_000,
  server_connect_timeout: 15_000,
  server_idle_timeout: 600_000,
  server_lifetime: 3_600_000,
  idle_transaction_timeout: 0,
  max_prepared_statements: 200,
  shutdown_timeout: 30_000,
  server_reset_query: 'DISCARD ALL',
  client_login_timeout: 60_000,
  max_login_packet_size: 65_536,
  max_packet_size: 64 * 1024 * 1024,
  max_partial_message_bytes: 512 * 1024 * 1024,
  max_statement_size: 1024 * 1024,
  max_statements_per_query: 1000,
  parser_threads: 2,
  parser_thread_min_size: 1024,
  parser_thread_timeout: 30_000,
};

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(o: Obj, allowed: readonly string[], at: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw new ConfigError(at ? `${at}.${k}` : k, `unknown key (expected one of: ${allowed.join(', ')})`);
  }
}

/** Durations (`120s`, `15m`, `1h`, `500ms`, or a bare number of seconds, PgBouncer's unit). */
export { parseDuration };

function int(v: unknown, key: string, min = 0, max = 1_000_000): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(key, `expected an integer between ${min} and ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function str(v: unknown, key: string): string {
  if (typeof v !== 'string' || v === '') throw new ConfigError(key, `expected a non-empty string, got ${JSON.stringify(v)}`);
  return v;
}

function mode(v: unknown, key: string): PoolMode {
  if (v === 'transaction' || v === 'session') return v;
  throw new ConfigError(key, `expected transaction or session, got ${JSON.stringify(v)}`);
}

/** Resolves `env:NAME` and `file:PATH` indirections for secrets. */
export function resolveSecret(v: string, key: string, baseDir: string): string {
  if (v.startsWith('env:')) {
    const val = process.env[v.slice(4)];
    if (val === undefined) throw new ConfigError(key, `environment variable ${v.slice(4)} is not set`);
    return val;
  }
  if (v.startsWith('file:')) {
    try {
      return readFileSync(resolve(baseDir, v.slice(5)), 'utf8').trim();
    } catch (err) {
      throw new ConfigError(key, `cannot read ${v.slice(5)}: ${(err as Error).message}`);
    }
  }
  return v;
}

function parseDatabase(name: string, raw: unknown, pool: PoolSettings, baseDir: string, serverTls: ServerTlsConfig): DatabaseConfig {
  const at = `databases.${name}`;
  if (!isObj(raw)) throw new ConfigError(at, 'expected a mapping with at least `url`');
  if (raw.route_by_claim !== undefined) return parseRoutedDatabase(name, raw, (n, r) => parseDatabase(n, r, pool, baseDir, serverTls));
  checkKeys(raw, ['url', 'pool_size', 'min_pool_size', 'reserve_pool_size', 'pool_mode', 'password', 'server_login', 'roles', 'server_tls'], at);
  if (raw.url === undefined) throw new ConfigError(`${at}.url`, 'missing (postgres://user:password@host:port/dbname)');
  const urlText = str(raw.url, `${at}.url`);
  let url: URL;
  try {
    url = new URL(urlText);
  } catch {
    throw new ConfigError(`${at}.url`, 'not a valid postgres:// URL');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') throw new ConfigError(`${at}.url`, 'must start with postgres://');
  const password = raw.password !== undefined
    ? resolveSecret(str(raw.password, `${at}.password`), `${at}.password`, baseDir)
    : url.password ? decodeURIComponent(url.password) : null;
  const db: DatabaseConfig = {
    name,
    host: url.hostname || '127.0.0.1',
    port: url.port ? Number(url.port) : 5432,
    user: decodeURIComponent(url.username) || 'postgres',
    password,
    dbname: decodeURIComponent(url.pathname.replace(/^\//, '')) || name,
    pool_size: raw.pool_size === undefined ? pool.default_pool_size : int(raw.pool_size, `${at}.pool_size`, 1),
    min_pool_size: raw.min_pool_size === undefined ? pool.min_pool_size : int(raw.min_pool_size, `${at}.min_pool_size`),
    reserve_pool_size: raw.reserve_pool_size === undefined ? pool.reserve_pool_size : int(raw.reserve_pool_size, `${at}.reserve_pool_size`),
    pool_mode: raw.pool_mode === undefined ? pool.mode : mode(raw.pool_mode, `${at}.pool_mode`),
    server_login: 'authenticator',
    roles: new Map(),
    server_tls: parseServerTls(raw.server_tls, `${at}.server_tls`, baseDir, serverTls),
  };
  if (raw.server_login === undefined || raw.server_login === 'authenticator') {
    if (raw.roles !== undefined) throw new ConfigError(`${at}.roles`, 'only used with server_login: role');
    return db;
  }
  if (raw.server_login !== 'role') throw new ConfigError(`${at}.server_login`, `expected authenticator or role, got ${JSON.stringify(raw.server_login)}`);
  if (!isObj(raw.roles) || Object.keys(raw.roles).length === 0) {
    throw new ConfigError(`${at}.roles`, 'server_login: role needs the login of each scope role: { app_reader: { password: env:READER_PW, pool_size: 5 }, ... }');
  }
  const roles = new Map<string, DatabaseConfig>();
  for (const [role, r] of Object.entries(raw.roles)) {
    const rat = `${at}.roles.${role}`;
    const spec = r === null ? {} : r;
    if (!isObj(spec)) throw new ConfigError(rat, 'expected { password, pool_size, min_pool_size, reserve_pool_size }');
    checkKeys(spec, ['password', 'pool_size', 'min_pool_size', 'reserve_pool_size'], rat);
    roles.set(role, {
      ...db,
      user: role,
      password: spec.password === undefined ? null : resolveSecret(str(spec.password, `${rat}.password`), `${rat}.password`, baseDir),
      pool_size: spec.pool_size === undefined ? db.pool_size : int(spec.pool_size, `${rat}.pool_size`, 1),
      min_pool_size: spec.min_pool_size === undefined ? db.min_pool_size : int(spec.min_pool_size, `${rat}.min_pool_size`),
      reserve_pool_size: spec.reserve_pool_size === undefined ? db.reserve_pool_size : int(spec.reserve_pool_size, `${rat}.reserve_pool_size`),
      roles: new Map(),
    });
  }
  return { ...db, server_login: 'role', roles };
}

function parsePool(raw: unknown): PoolSettings {
  const p: PoolSettings = { ...POOL_DEFAULTS };
  if (raw === undefined || raw === null) return p;
  if (!isObj(raw)) throw new ConfigError('pool', 'expected a mapping');
  checkKeys(raw, Object.keys(POOL_DEFAULTS), 'pool');
  for (const [k, v] of Object.entries(raw)) {
    const key = `pool.${k}`;
    switch (k) {
      case 'mode': p.mode = mode(v, key); break;
      case 'default_pool_size': p.default_pool_size = int(v, key, 1); break;
      case 'min_pool_size': p.min_pool_size = int(v, key); break;
      case 'reserve_pool_size': p.reserve_pool_size = int(v, key); break;
      case 'max_client_conn': p.max_client_conn = int(v, key, 1, 10_000_000); break;
      case 'max_user_client_connections': p.max_user_client_connections = int(v, key, 0, 10_000_000); break;
      case 'max_prepared_statements': p.max_prepared_statements = int(v, key); break;
      case 'max_login_packet_size': p.max_login_packet_size = int(v, key, 1024, 1 << 30); break;
      case 'max_packet_size': p.max_packet_size = int(v, key, 1024, 1 << 30); break;
      case 'max_partial_message_bytes': p.max_partial_message_bytes = int(v, key, 1024, 2 ** 40); break;
      case 'max_statement_size': p.max_statement_size = int(v, key, 1024, 1 << 30); break;
      case 'max_statements_per_query': p.max_statements_per_query = int(v, key, 1); break;
      case 'parser_threads': p.parser_threads = int(v, key, 0, 64); break;
      case 'parser_thread_min_size': p.parser_thread_min_size = int(v, key, 1); break;
      case 'parser_thread_timeout':
        p.parser_thread_timeout = parseDuration(v, key);
        if (p.parser_thread_timeout < 1) throw new ConfigError(key, 'must be more than 0 (a thread that never times out could hang for good)');
        break;
      case 'server_reset_query': p.server_reset_query = typeof v === 'string' ? v : str(v, key); break;
      case 'reserve_pool_timeout':
      case 'query_wait_timeout':
      case 'server_connect_timeout':
      case 'server_idle_timeout':
      case 'server_lifetime':
      case 'idle_transaction_timeout':
      case 'shutdown_timeout':
      case 'client_login_timeout':
        p[k] = parseDuration(v, key);
        break;
    }
  }
  // One message of the largest size a client may send must fit on its own.
  if (p.max_partial_message_bytes < p.max_packet_size) throw new ConfigError('pool.max_partial_message_bytes', `must be at least max_packet_size (${p.max_packet_size})`);
  return p;
}

function parseAdmin(raw: unknown): AdminConfig | null {
  if (raw === undefined || raw === null) return null;
  if (!isObj(raw)) throw new ConfigError('admin', 'expected { scope, stats_scope, listen_http }');
  checkKeys(raw, ['scope', 'stats_scope', 'listen_http', 'trust_access'], 'admin');
  if (raw.scope === undefined) throw new ConfigError('admin.scope', 'missing: the token scope that may use every console command (e.g. "scopegate:admin")');
  const scope = str(raw.scope, 'admin.scope');
  const stats = raw.stats_scope === undefined || raw.stats_scope === null ? null : str(raw.stats_scope, 'admin.stats_scope');
  if (stats === scope) throw new ConfigError('admin.stats_scope', 'must differ from admin.scope');
  let listenHttp: AdminConfig['listen_http'] = null;
  if (raw.listen_http !== undefined && raw.listen_http !== null) {
    const text = str(raw.listen_http, 'admin.listen_http');
    const m = /^(.+):(\d+)$/.exec(text);
    if (m === null) throw new ConfigError('admin.listen_http', `expected host:port (e.g. 127.0.0.1:9187), got ${JSON.stringify(text)}`);
    const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
    listenHttp = { host, port: int(Number(m[2]), 'admin.listen_http', 0, 65535) };
  }
  const trust = raw.trust_access ?? 'none';
  if (trust !== 'none' && trust !== 'stats' && trust !== 'admin') throw new ConfigError('admin.trust_access', `expected none, stats or admin, got ${JSON.stringify(trust)}`);
  return { scope, stats_scope: stats, listen_http: listenHttp, trust_access: trust };
}

/** `workers: N` or `auto` (one per core, os.availableParallelism()). */
function parseWorkers(v: unknown): number {
  if (v === undefined || v === null) return 1;
  if (v === 'auto') return availableParallelism();
  return int(v, 'workers', 1, 256);
}

/** Validates a parsed YAML document. `file` anchors relative paths. */
export function parseConfig(doc: unknown, file: string | null): Config {
  const baseDir = file ? dirname(resolve(file)) : process.cwd();
  if (!isObj(doc)) throw new ConfigError('(root)', 'config must be a YAML mapping');
  if (doc.metrics !== undefined) {
    throw new ConfigError('metrics', 'replaced by admin.listen_http (e.g. admin: { scope: "scopegate:admin", listen_http: 127.0.0.1:9187 }): /metrics, /healthz and /readyz are served there');
  }
  checkKeys(doc, ['listen', 'databases', 'pool', 'auth', 'policy', 'policy_source', 'log', 'admin', 'client_tls', 'server_tls', 'peer_id', 'peers', 'workers'], '');
  const listen = { host: '127.0.0.1', port: 6432 };
  if (doc.listen !== undefined) {
    if (!isObj(doc.listen)) throw new ConfigError('listen', 'expected { host, port }');
    checkKeys(doc.listen, ['host', 'port'], 'listen');
    if (doc.listen.host !== undefined) listen.host = str(doc.listen.host, 'listen.host');
    if (doc.listen.port !== undefined) listen.port = int(doc.listen.port, 'listen.port', 0, 65535);
  }
  const pool = parsePool(doc.pool);
  if (!isObj(doc.databases) || Object.keys(doc.databases).length === 0) {
    throw new ConfigError('databases', 'expected a mapping of at least one database name to { url }');
  }
  const databases = new Map<string, DatabaseConfig>();
  const serverTls = parseServerTls(doc.server_tls, 'server_tls', baseDir);
  for (const [name, raw] of Object.entries(doc.databases)) databases.set(name, parseDatabase(name, raw, pool, baseDir, serverTls));
  const log = { level: 'info', audit: 'stdout', audit_sample: 1 };
  if (doc.log !== undefined) {
    if (!isObj(doc.log)) throw new ConfigError('log', 'expected a mapping');
    checkKeys(doc.log, ['level', 'audit', 'audit_sample'], 'log');
    if (doc.log.level !== undefined) {
      const lv = str(doc.log.level, 'log.level');
      if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(lv)) throw new ConfigError('log.level', `unknown level ${lv}`);
      log.level = lv;
    }
    if (doc.log.audit !== undefined) {
      const a = str(doc.log.audit, 'log.audit');
      log.audit = a === 'stdout' || a === 'off' ? a : resolve(baseDir, a);
    }
    if (doc.log.audit_sample !== undefined) {
      const s = doc.log.audit_sample;
      if (typeof s !== 'number' || s < 0 || s > 1) throw new ConfigError('log.audit_sample', 'expected a number between 0 and 1');
      log.audit_sample = s;
    }
  }
  const admin = parseAdmin(doc.admin);
  const policy = doc.policy === undefined || doc.policy === null ? null : resolve(baseDir, str(doc.policy, 'policy'));
  const policy_source = doc.policy_source === undefined || doc.policy_source === null ? null : parsePolicySource(doc.policy_source, (v, key) => resolveSecret(v, key, baseDir));
  if (policy !== null && policy_source !== null) throw new ConfigError('policy_source', 'set either policy (a file) or policy_source (a database), not both');
  const auth = doc.auth ?? { method: 'trust' };
  const client_tls = parseClientTls(doc.client_tls, baseDir);
  const peering = parsePeering(doc.peer_id, doc.peers, baseDir, serverTls);
  const workers = parseWorkers(doc.workers);
  return { file, listen, databases, pool, auth, policy, policy_source, log, admin, client_tls, peering, workers };
}

/** Loads and validates a config file; relative paths resolve against `anchor` (default: the file). */
export function loadConfig(file: string, anchor: string = file): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('(file)', `cannot read ${file}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError('(yaml)', (err as Error).message.split('\n')[0] ?? 'invalid YAML');
  }
  const cfg = parseConfig(doc, anchor);
  cfg.file = file;
  return cfg;
}
