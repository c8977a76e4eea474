/** Mechanism selection (pg_hba-like rules) and the transport check. */
import type { AuthConfig, Mechanism } from './config.js';
import { cidrContains, isLoopback } from './net.js';

export interface ConnInfo {
  database: string;
  user: string;
  /** Peer address as the socket reports it (IPv4-mapped IPv6 is understood). */
  address: string;
}

/**
 * First matching rule wins (database, user and address must all match; an omitted field or
 * `*` / `all` matches anything). No rule matches → the first entry of `mechanisms`.
 */
export function chooseMechanism(cfg: Pick<AuthConfig, 'rules' | 'mechanisms'>, conn: ConnInfo): Mechanism {
  for (const r of cfg.rules) {
    if (r.databases !== null && !r.databases.includes(conn.database)) continue;
    if (r.users !== null && !r.users.includes(conn.user)) continue;
    if (r.addresses !== null && !r.addresses.some((c) => cidrContains(c, conn.address))) continue;
    return r.mechanism;
  }
  return cfg.mechanisms[0] ?? 'password';
}

/**
 * A bearer token may cross plain TCP only from loopback (or a Unix socket), unless
 * auth.allow_insecure is set. TLS connections are always allowed.
 */
export function isTransportAllowed(cfg: Pick<AuthConfig, 'allowInsecure'>, conn: { address: string; tls: boolean }): boolean {
  return conn.tls || cfg.allowInsecure || isLoopback(conn.address);
}

export { isLoopback };
