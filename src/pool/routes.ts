/** Tenants routed by a token claim: (database entry, claims) -> a route with its own pool and column catalog. */
import type { Logger } from 'pino';
import type { DatabaseConfig, PoolSettings } from '../config.js';
import { SqlError, SQLSTATE } from '../errors.js';
import { DatabaseCatalog, catalogFromData } from '../policy/catalog.js';
import type { ColumnCatalog } from '../policy/types.js';
import { DatabasePool } from './database-pool.js';
import { ROUTE_VALUE_PATTERN, templateDbname, type RoutingConfig } from './route-config.js';

/** A client on a route: the route closes it when the route is removed and the client is between transactions. */
export interface RoutedClient {
  /** No transaction in flight: no server connection held, or (session mode) one that is quiet. */
  readonly betweenTransactions: boolean;
  closeWith(err: SqlError): void;
}

/** Catalog versions are unique per process: a route removed and added again never meets the old decisions. */
let catalogSerial = 0;

/**
 * One route's column catalog (star expansion, attribute notation), read from its own server:
 * tenants' schemas may differ. The gate reads `current` per statement (GateClient.catalog).
 */
export class RouteCatalog {
  private snapshot: ColumnCatalog | null = null;
  private readonly reader: DatabaseCatalog;
  private loading: Promise<boolean> | null = null;

  constructor(db: DatabaseConfig, log: Logger) {
    this.reader = new DatabaseCatalog(db, log);
  }

  /** The last read, or null before the first succeeded. */
  get current(): ColumnCatalog | null {
    return this.snapshot;
  }

  /** Reads it again (after DDL, a policy reload); concurrent calls share one read. */
  refresh(): Promise<boolean> {
    this.loading ??= this.reader.reload().then((c) => {
      this.loading = null;
      if (c === null || c.data === undefined) return false;
      this.snapshot = catalogFromData({ ...c.data, version: `${c.version}#${++catalogSerial}` });
      return true;
    });
    return this.loading;
  }

  /** A statement found no catalog: read it (the statement is refused meanwhile, 57P03). */
  ensure(): void {
    if (this.snapshot === null) void this.refresh();
  }
}

/** One tenant: its own server config, pool and catalog. Tenants never share a server connection. */
export class Route {
  readonly pool: DatabasePool;
  readonly catalog: RouteCatalog;
  readonly clients = new Set<RoutedClient>();
  /** Removed by a reload: no new logins; clients leave as their transactions end, then the pool closes. */
  draining = false;
  lastUsed = Date.now();
  private closing: Promise<void> | null = null;

  constructor(readonly entry: string, readonly name: string, public db: DatabaseConfig, settings: PoolSettings, log: Logger) {
    this.pool = new DatabasePool(db, settings, log);
    this.catalog = new RouteCatalog(db, log);
  }

  /** `entry/route`, as SHOW POOLS names it. */
  get label(): string {
    return `${this.entry}/${this.name}`;
  }

  attach(c: RoutedClient): void {
    this.clients.add(c);
    this.lastUsed = Date.now();
  }

  detach(c: RoutedClient): void {
    this.clients.delete(c);
    this.lastUsed = Date.now();
    if (this.draining && this.clients.size === 0) void this.close();
  }

  /** No client and no server connection in use: may be evicted. */
  get unused(): boolean {
    return this.clients.size === 0 && this.pool.stats().borrowed === 0 && this.pool.waiting().count === 0;
  }

  removedError(): SqlError {
    return new SqlError(SQLSTATE.ADMIN_SHUTDOWN, `terminating connection: route "${this.name}" of database "${this.entry}" was removed from the configuration`, { severity: 'FATAL' });
  }

  /** Stops taking logins; idle clients go now, the others when their transaction ends (session.ts). */
  drain(): void {
    this.draining = true;
    for (const c of [...this.clients]) if (c.betweenTransactions) c.closeWith(this.removedError());
    if (this.clients.size === 0) void this.close();
  }

  close(): Promise<void> {
    this.closing ??= this.pool.close();
    return this.closing;
  }
}

/**
 * The routes of one `route_by_claim` entry. Named routes exist from the start; template
 * routes are made at the first login that names them, at most max_routes of them, the least
 * recently used idle one evicted to make room.
 */
export class RouteTable {
  private readonly routes = new Map<string, Route>();
  /** Removed routes still draining (SHOW POOLS keeps listing them until they close). */
  private readonly draining = new Set<Route>();

  constructor(public entry: DatabaseConfig, private settings: PoolSettings, private readonly log: Logger) {
    for (const [name, db] of this.routing.routes) this.routes.set(name, new Route(entry.name, name, db, settings, log));
  }

  private get routing(): RoutingConfig {
    return this.entry.routing!;
  }

  /** Every open route, draining ones included (SHOW POOLS, metrics, shutdown). */
  all(): Route[] {
    for (const r of this.draining) if (r.clients.size === 0 && r.unused) this.draining.delete(r);
    return [...this.routes.values(), ...this.draining];
  }

  /**
   * The route the token's claims pick, or a FATAL 28000: a token that names no route is not
   * authorized for this database, as a login no pg_hba.conf line allows. Nothing is connected
   * to before the value has passed the pattern and named a route.
   */
  resolve(claims: Readonly<Record<string, unknown>> | undefined): Route {
    const { claim } = this.routing;
    const db = this.entry.name;
    const value = claims?.[claim];
    if (value === undefined || value === null) {
      throw refuse(`the access token has no "${claim}" claim, which database "${db}" routes by`);
    }
    if (typeof value !== 'string' || !ROUTE_VALUE_PATTERN.test(value)) {
      // The value is not echoed: it may be anything a token issuer let through.
      throw refuse(`the "${claim}" claim of the access token is not a route name of database "${db}" (it must match ${ROUTE_VALUE_PATTERN.source})`);
    }
    const known = this.routes.get(value);
    if (known !== undefined) {
      known.lastUsed = Date.now();
      return known;
    }
    const template = this.routing.template;
    if (template === null) throw refuse(`the "${claim}" claim of the access token ("${value}") names no route of database "${db}"`);
    const dbname = templateDbname(template, value);
    if (dbname === null) throw refuse(`the "${claim}" claim of the access token ("${value}") makes a database name longer than 63 bytes for database "${db}"`);
    if (this.routes.size >= this.routing.max_routes && !this.evictOne()) {
      throw new SqlError(SQLSTATE.TOO_MANY_CONNECTIONS, `database "${db}" has max_routes (${this.routing.max_routes}) routes in use; none is idle to make room for "${value}"`, {
        severity: 'FATAL', hint: `Raise databases.${db}.max_routes, or retry once a tenant's clients have left.`,
      });
    }
    const route = new Route(db, value, { ...template, name: `${db}/${value}`, dbname }, this.settings, this.log);
    this.routes.set(value, route);
    this.log.info({ db, route: value, dbname }, 'route opened');
    return route;
  }

  /** Closes the least recently used route nobody uses; false when every route is in use. */
  private evictOne(): boolean {
    let victim: Route | null = null;
    for (const r of this.routes.values()) if (r.unused && (victim === null || r.lastUsed < victim.lastUsed)) victim = r;
    if (victim === null) return false;
    this.routes.delete(victim.name);
    this.log.info({ db: this.entry.name, route: victim.name }, 'idle route evicted (max_routes)');
    void victim.close();
    return true;
  }

  /** SIGHUP: routes that stay are resized, new ones open, removed ones drain. */
  reload(next: DatabaseConfig, settings: PoolSettings): void {
    const before = this.routing;
    this.entry = next;
    this.settings = settings;
    const now = next.routing!;
    for (const [name, route] of [...this.routes]) {
      const named = now.routes.get(name);
      // A template route stays while the entry is still a template with the same url shape.
      const keep = named ?? (now.template !== null && before.template !== null && sameServer(now.template, before.template)
        ? { ...now.template, name: route.db.name, dbname: templateDbname(now.template, name) ?? '' } : undefined);
      if (keep === undefined || keep.dbname === '' || !sameServer(keep, route.db)) {
        this.routes.delete(name);
        this.draining.add(route);
        this.log.info({ db: next.name, route: name, clients: route.clients.size }, 'route removed; draining');
        route.drain();
      } else {
        route.db = keep;
        route.pool.reconfigure(keep, settings);
      }
    }
    for (const [name, db] of now.routes) if (!this.routes.has(name)) this.routes.set(name, new Route(next.name, name, db, settings, this.log));
  }

  refreshCatalogs(): void {
    for (const r of this.routes.values()) if (r.catalog.current !== null) void r.catalog.refresh();
  }

  async close(): Promise<void> {
    await Promise.all(this.all().map((r) => r.close()));
  }
}

/** Same server, database and login: the pool's connections stay valid. */
function sameServer(a: DatabaseConfig, b: DatabaseConfig): boolean {
  return a.host === b.host && a.port === b.port && a.dbname === b.dbname && a.user === b.user && a.password === b.password;
}

function refuse(message: string): SqlError {
  return new SqlError(SQLSTATE.INVALID_AUTHORIZATION, message, { severity: 'FATAL' });
}
