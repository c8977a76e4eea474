/** `route_by_claim` in a database entry: its routes or url template, validated like the rest of the config. */
import { ConfigError } from '../errors.js';
import type { DatabaseConfig } from '../config.js';

/**
 * What a claim value must look like to pick a route: lower-case letters, digits and `_`, at
 * most 63 bytes (Postgres's identifier limit). Nothing else can reach a URL template, so a
 * value can never add a host, a user, a path segment or a connection parameter.
 */
export const ROUTE_VALUE_PATTERN = /^[a-z0-9_]{1,63}$/;

/** Postgres truncates longer database names silently, so two tenants could meet in one. */
export const MAX_DBNAME_BYTES = 63;

export const DEFAULT_MAX_ROUTES = 100;

export interface RoutingConfig {
  /** The token claim whose value picks the route. */
  claim: string;
  /** Named routes (`routes:`), each a database config named `entry/route`; empty with a template. */
  routes: ReadonlyMap<string, DatabaseConfig>;
  /** `url:` with `{claim}` in its database name: the config with TEMPLATE_MARK in dbname; null with routes. */
  template: DatabaseConfig | null;
  /** Most template routes open at once (idle ones are evicted, least recently used first). */
  max_routes: number;
}

/** What stands for `{claim}` while the template is parsed as a URL (it survives URL parsing unchanged). */
export const TEMPLATE_MARK = 'scopegateroutemark0';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Keys of a routed entry; the others are per route (or the template's). */
const ENTRY_KEYS = ['route_by_claim', 'routes', 'url', 'max_routes', 'pool_size', 'min_pool_size', 'reserve_pool_size', 'pool_mode', 'password', 'server_tls'];
const ROUTE_KEYS = ['url', 'pool_size', 'min_pool_size', 'reserve_pool_size', 'password', 'server_tls'];
/** What a route inherits from its entry when it does not set it. */
const INHERITED = ['pool_size', 'min_pool_size', 'reserve_pool_size', 'password', 'server_tls', 'pool_mode'];

/**
 * Parses a routed entry. `parseOne(name, raw)` is config.ts's parser of a plain entry; each
 * route goes through it (as `entry/route`), so urls, secrets and sizes mean what they mean
 * everywhere. The entry's own config is its first route's (or the template's) with `routing`.
 */
export function parseRoutedDatabase(name: string, raw: Obj, parseOne: (name: string, raw: Obj) => DatabaseConfig): DatabaseConfig {
  const at = `databases.${name}`;
  for (const k of Object.keys(raw)) {
    if (!ENTRY_KEYS.includes(k)) throw new ConfigError(`${at}.${k}`, `unknown key for a routed database (expected one of: ${ENTRY_KEYS.join(', ')})`);
  }
  const claim = raw.route_by_claim;
  if (typeof claim !== 'string' || !/^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$/.test(claim)) {
    throw new ConfigError(`${at}.route_by_claim`, `expected a claim name (e.g. tenant), got ${JSON.stringify(claim)}`);
  }
  const hasRoutes = raw.routes !== undefined;
  const hasUrl = raw.url !== undefined;
  if (hasRoutes === hasUrl) throw new ConfigError(at, 'route_by_claim needs exactly one of `routes: { name: { url } }` or a `url` template containing {' + claim + '}');
  let maxRoutes = DEFAULT_MAX_ROUTES;
  if (raw.max_routes !== undefined) {
    const m = raw.max_routes;
    if (typeof m !== 'number' || !Number.isInteger(m) || m < 1 || m > 100_000) throw new ConfigError(`${at}.max_routes`, `expected an integer between 1 and 100000, got ${JSON.stringify(m)}`);
    if (hasRoutes) throw new ConfigError(`${at}.max_routes`, 'only used with a url template (named routes are all open)');
    maxRoutes = m;
  }
  const inherited: Obj = {};
  for (const k of INHERITED) if (raw[k] !== undefined) inherited[k] = raw[k];
  if (hasRoutes) {
    if (!isObj(raw.routes) || Object.keys(raw.routes).length === 0) throw new ConfigError(`${at}.routes`, 'expected a mapping of route names to { url, pool_size, ... }');
    const routes = new Map<string, DatabaseConfig>();
    for (const [route, spec] of Object.entries(raw.routes)) {
      const rat = `${at}.routes.${route}`;
      if (!ROUTE_VALUE_PATTERN.test(route)) throw new ConfigError(rat, `route names are claim values and must match ${ROUTE_VALUE_PATTERN.source}`);
      if (!isObj(spec)) throw new ConfigError(rat, 'expected { url, pool_size, min_pool_size, reserve_pool_size, password, server_tls }');
      for (const k of Object.keys(spec)) if (!ROUTE_KEYS.includes(k)) throw new ConfigError(`${rat}.${k}`, `unknown key (expected one of: ${ROUTE_KEYS.join(', ')})`);
      if (spec.url === undefined) throw new ConfigError(`${rat}.url`, 'missing (postgres://user:password@host:port/dbname)');
      routes.set(route, rename(parseOne(`${name}/${route}`, { ...inherited, ...spec }), `${rat}`, `${name}/${route}`));
    }
    const first = routes.values().next().value!;
    return { ...first, name, routing: { claim, routes, template: null, max_routes: maxRoutes } };
  }
  const text = raw.url;
  if (typeof text !== 'string') throw new ConfigError(`${at}.url`, `expected a url template, got ${JSON.stringify(text)}`);
  const hole = `{${claim}}`;
  if (!text.includes(hole)) throw new ConfigError(`${at}.url`, `a routed url must contain ${hole} in its database name`);
  if (text.includes(TEMPLATE_MARK)) throw new ConfigError(`${at}.url`, 'contains a reserved word');
  const marked = text.split(hole).join(TEMPLATE_MARK);
  if (/[{}]/.test(marked)) throw new ConfigError(`${at}.url`, `only ${hole} may appear in braces`);
  const template = rename(parseOne(name, { ...inherited, url: marked }), `${at}.url`, name);
  // The value goes into the database name and nowhere else: not the host, user, password or parameters.
  const holes = marked.split(TEMPLATE_MARK).length - 1;
  if (template.dbname.split(TEMPLATE_MARK).length - 1 !== holes) throw new ConfigError(`${at}.url`, `${hole} may only appear in the database name (the path), not in the host, user, password or parameters`);
  const fixed = Buffer.byteLength(template.dbname.split(TEMPLATE_MARK).join(''));
  // `.../{tenant}` alone would let a claim value name any database on the server (`postgres`,
  // another application's): the fixed part keeps every tenant inside one family of names.
  if (fixed === 0) throw new ConfigError(`${at}.url`, `the database name needs a fixed part besides ${hole} (e.g. shop_${hole}), else a ${claim} claim can name any database on the server`);
  if (fixed + holes > MAX_DBNAME_BYTES) throw new ConfigError(`${at}.url`, `the database name is longer than ${MAX_DBNAME_BYTES} bytes for any ${claim}`);
  return { ...template, routing: { claim, routes: new Map(), template, max_routes: maxRoutes } };
}

function rename(db: DatabaseConfig, at: string, name: string): DatabaseConfig {
  if (db.server_login !== 'authenticator') throw new ConfigError(at, 'server_login: role is not supported with route_by_claim');
  return { ...db, name };
}

/** The database name of a template route, or null when the value may not pick one (pattern, length). */
export function templateDbname(template: DatabaseConfig, value: string): string | null {
  if (!ROUTE_VALUE_PATTERN.test(value)) return null;
  const dbname = template.dbname.split(TEMPLATE_MARK).join(value);
  return Buffer.byteLength(dbname) <= MAX_DBNAME_BYTES ? dbname : null;
}
