/** `workers: N`: each worker's share of the pool sizes and client limit, so the sums over all workers stay within the config's. */
import type { Config, DatabaseConfig, PoolSettings } from '../config.js';
import type { RoutingConfig } from '../pool/route-config.js';

/**
 * Worker `index` (0-based) of `n`: floor(total / n), one more for the first (total mod n)
 * workers, so the shares add up to `total`. A worker gets at least `min` (1 for sizes a pool
 * cannot work without: pool_size, max_client_conn), which may push the sum over a total
 * smaller than n; configs with that are warned about by the primary.
 */
export function shareOf(total: number, index: number, n: number, min = 0): number {
  if (n <= 1) return total;
  const base = Math.floor(total / n) + (index < total % n ? 1 : 0);
  return Math.max(min, base);
}

function shareDb(db: DatabaseConfig, index: number, n: number): DatabaseConfig {
  const out: DatabaseConfig = {
    ...db,
    pool_size: shareOf(db.pool_size, index, n, 1),
    min_pool_size: shareOf(db.min_pool_size, index, n),
    reserve_pool_size: shareOf(db.reserve_pool_size, index, n),
    roles: new Map([...db.roles].map(([role, r]) => [role, shareDb(r, index, n)])),
  };
  if (db.routing) out.routing = shareRouting(db.routing, index, n);
  return out;
}

function shareRouting(r: RoutingConfig, index: number, n: number): RoutingConfig {
  // Each route (named or from the template) is a pool of its own: every one is split.
  return {
    ...r,
    routes: new Map([...r.routes].map(([name, db]) => [name, shareDb(db, index, n)])),
    template: r.template === null ? null : shareDb(r.template, index, n),
  };
}

/** The config worker `index` of `n` runs: every pool size and max_client_conn is its share. */
export function shareConfig(config: Config, index: number, n: number): Config {
  if (n <= 1) return config;
  const pool: PoolSettings = {
    ...config.pool,
    default_pool_size: shareOf(config.pool.default_pool_size, index, n, 1),
    min_pool_size: shareOf(config.pool.min_pool_size, index, n),
    reserve_pool_size: shareOf(config.pool.reserve_pool_size, index, n),
    max_client_conn: shareOf(config.pool.max_client_conn, index, n, 1),
  };
  return { ...config, pool, databases: new Map([...config.databases].map(([name, db]) => [name, shareDb(db, index, n)])) };
}

/** Pools whose size is smaller than the worker count: each worker still gets 1, so the sum exceeds it. */
export function oversubscribed(config: Config, n: number): string[] {
  const out: string[] = [];
  const check = (db: DatabaseConfig): void => {
    if (db.routing) {
      for (const r of db.routing.routes.values()) check(r);
      if (db.routing.template) check(db.routing.template);
      return;
    }
    if (db.pool_size < n) out.push(`${db.name} (pool_size ${db.pool_size})`);
    for (const r of db.roles.values()) check(r);
  };
  for (const db of config.databases.values()) check(db);
  return out;
}
