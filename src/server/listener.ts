/** The listening socket: accepts clients, owns the pools, reloads config, drains on shutdown. */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { CancelRegistry } from './cancel-registry.js';
import { ClientSession, type ServerContext } from '../session/client-session.js';
import type { Config, DatabaseConfig, PoolSettings } from '../config.js';
import { SqlError, SQLSTATE } from '../errors.js';
import type { StatementGate } from '../policy/gate.js';
import { DatabasePool } from '../pool/database-pool.js';
import { RouteTable } from '../pool/routes.js';
import * as msg from '../protocol/messages.js';
import { PartialBytes } from '../protocol/framer.js';
import { TlsFrontDoor } from './tls.js';
import { CancelPeers } from './peers.js';
import { AdminConsoles } from '../admin/console.js';
import type { AdminControl, AdminServer } from '../admin/stats.js';
import type { WorkerLink } from './worker-link.js';

/**
 * The listening socket and everything shared by client sessions: pools per database,
 * the cancel registry, the gate. Reload swaps settings in place; shutdown drains.
 */
export class Scopegate implements ServerContext, AdminServer {
  config: Config;
  readonly log: Logger;
  readonly pools = new Map<string, DatabasePool>();
  /** Databases with server_login: role: a pool per scope role, each logging in as that role. */
  readonly rolePools = new Map<string, Map<string, DatabasePool>>();
  /** Databases with route_by_claim: their routes, each with its own pool (src/pool/routes.ts). */
  readonly routes = new Map<string, RouteTable>();
  readonly cancels = new CancelRegistry();
  readonly partialBytes: PartialBytes;
  /** Client connections per user (the token's sub, else the login name), for max_user_client_connections. */
  private readonly perUser = new Map<string, number>();
  /** peer_id / peers: this instance's id in cancel keys, cancels forwarded to the peer that issued them. */
  readonly peers: CancelPeers;
  gate: StatementGate;
  clientCount = 0;
  shuttingDown = false;
  private readonly clients = new Set<ClientSession>();
  private server: Server | null = null;
  private idleWaiters: Array<() => void> = [];
  /** SSLRequest, TLS termination and certificate reloads, before a session exists. */
  readonly door: TlsFrontDoor;
  readonly startedAt = Date.now();
  /** The admin console (config `admin:`), or null. */
  readonly admin: AdminConsoles | null;
  /** RELOAD and SHUTDOWN from the console: run.ts sets it to its SIGHUP and SIGTERM paths. */
  control: AdminControl | null = null;
  /** workers: N: the link to the primary (src/server/worker-link.ts); null: one process. */
  workerLink: WorkerLink | null = null;

  constructor(config: Config, log: Logger, gate: StatementGate) {
    this.config = config;
    this.log = log;
    this.gate = gate;
    this.partialBytes = new PartialBytes(config.pool.max_partial_message_bytes);
    this.door = new TlsFrontDoor(config.client_tls, log);
    this.peers = new CancelPeers(config.peering, log);
    if (this.peers.enabled) this.cancels.routing = this.peers;
    for (const db of config.databases.values()) this.addPools(db, config.pool);
    const auth = config.auth as { method?: unknown } | null;
    this.admin = config.admin === null ? null : new AdminConsoles(this, config.admin, auth?.method === 'trust');
  }

  /** Every connected client, the console's included (SHOW CLIENTS, metrics). */
  sessions(): Iterable<ClientSession> {
    return this.clients;
  }

  private addPools(db: DatabaseConfig, settings: PoolSettings): void {
    if (db.routing) {
      this.routes.set(db.name, new RouteTable(db, settings, this.log));
      return;
    }
    if (db.server_login === 'authenticator') {
      this.pools.set(db.name, new DatabasePool(db, settings, this.log));
      return;
    }
    const byRole = new Map<string, DatabasePool>();
    for (const [role, rdb] of db.roles) byRole.set(role, new DatabasePool(rdb, settings, this.log));
    this.rolePools.set(db.name, byRole);
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      const server = createServer({ noDelay: true }, (s) => this.accept(s));
      this.server = server;
      server.on('error', reject);
      server.listen(this.config.listen.port, this.config.listen.host, () => {
        const addr = server.address();
        const port = typeof addr === 'object' && addr ? addr.port : this.config.listen.port;
        this.log.info({ host: this.config.listen.host, port, ...(this.workerLink ? { worker: this.workerLink.index } : {}) }, 'listening');
        resolve(port);
      });
    });
  }

  private accept(socket: Socket): void {
    if (this.clientCount >= this.config.pool.max_client_conn) {
      // Postgres answers before authentication too: the client learns why at once.
      socket.on('error', () => undefined);
      socket.end(msg.errorResponse(new SqlError(SQLSTATE.TOO_MANY_CONNECTIONS, `too many connections: max_client_conn (${this.config.pool.max_client_conn}) reached`, { severity: 'FATAL' })));
      return;
    }
    this.clientCount++;
    // Counted from accept: a flood of handshakes that never finish is bounded by max_client_conn too.
    this.door.admit(socket, this.config.pool.client_login_timeout, (s, transport) => {
      const c = new ClientSession(s, this, transport);
      // Its first packet may have ended it already (onClientClosed found nothing to remove).
      if (c.ended) this.clientCount--;
      else this.clients.add(c);
    }, () => { this.clientCount--; });
  }

  claimUserSlot(user: string): SqlError | null {
    const n = this.perUser.get(user) ?? 0;
    const max = this.config.pool.max_user_client_connections;
    if (max > 0 && n >= max) {
      return new SqlError(SQLSTATE.TOO_MANY_CONNECTIONS, `too many connections for user "${user}": max_user_client_connections (${max}) reached`, { severity: 'FATAL' });
    }
    this.perUser.set(user, n + 1);
    return null;
  }

  releaseUserSlot(user: string): void {
    const n = (this.perUser.get(user) ?? 1) - 1;
    if (n <= 0) this.perUser.delete(user);
    else this.perUser.set(user, n);
  }

  /** The revocation list changed: every session it names is ended now (ClientSession.endIfRevoked). */
  endRevoked(): number {
    let ended = 0;
    for (const c of [...this.clients]) if (c.endIfRevoked()) ended++;
    return ended;
  }

  onClientClosed(c: ClientSession): void {
    if (this.clients.delete(c)) this.clientCount--;
    if (this.clients.size === 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  /** Applies a new config: pool sizes and timeouts change, connections stay. */
  reload(next: Config): void {
    this.partialBytes.limit = next.pool.max_partial_message_bytes;
    for (const db of next.databases.values()) {
      const routed = this.routes.get(db.name);
      if (routed !== undefined || db.routing) {
        if (routed !== undefined && db.routing) routed.reload(db, next.pool);
        else this.log.warn({ db: db.name }, 'databases.*.route_by_claim added or removed: restart scopegate to apply it');
        continue;
      }
      const p = this.pools.get(db.name);
      const byRole = this.rolePools.get(db.name);
      if (p && db.server_login === 'authenticator') p.reconfigure(db, next.pool);
      else if (byRole && db.server_login === 'role') {
        for (const [role, rdb] of db.roles) {
          const rp = byRole.get(role);
          if (rp) rp.reconfigure(rdb, next.pool);
          else byRole.set(role, new DatabasePool(rdb, next.pool, this.log));
        }
      } else if (p || byRole) {
        // Who logs in changed: a restart applies it, so no client's transaction is cut.
        this.log.warn({ db: db.name }, 'databases.*.server_login changed: restart scopegate to apply it');
      } else this.addPools(db, next.pool);
    }
    this.door.reload(next.client_tls);
    this.peers.reload(next.peering);
    this.config = next;
    this.log.info({ databases: [...next.databases.keys()] }, 'configuration reloaded');
  }

  /** A fatal error in this process (workers: N, before it exits): every client is told, 57P02, as Postgres does after a crash. */
  crash(): void {
    const bye = new SqlError(SQLSTATE.CRASH_SHUTDOWN, 'terminating connection because of crash of a scopegate worker', { severity: 'FATAL', hint: 'Reconnect: another worker takes the connection.' });
    for (const c of [...this.clients]) c.closeWith(bye);
  }

  /**
   * Stops accepting, closes clients that hold no backend, lets running transactions finish
   * (their clients are closed as they end), and after shutdown_timeout closes the rest.
   */
  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    this.log.info({ clients: this.clients.size }, 'shutting down');
    this.server?.close();
    const bye = new SqlError(SQLSTATE.ADMIN_SHUTDOWN, 'terminating connection: scopegate is shutting down', { severity: 'FATAL' });
    for (const c of [...this.clients]) if (c.idle) c.closeWith(bye);
    if (this.clients.size > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.config.pool.shutdown_timeout);
        this.idleWaiters.push(() => { clearTimeout(t); resolve(); });
      });
      for (const c of [...this.clients]) c.closeWith(bye);
    }
    this.admin?.averages.stop();
    await Promise.all([...this.routes.values()].map((t) => t.close()));
    await Promise.all([...this.pools.values(), ...[...this.rolePools.values()].flatMap((m) => [...m.values()])].map((p) => p.close()));
  }
}
