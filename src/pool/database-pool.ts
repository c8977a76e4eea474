/** One pool of server connections per database: idle stack, waiting clients, reset, reserve pool. */
import genericPool, { type Pool } from 'generic-pool';
import type { Logger } from 'pino';
import { Backend, Cleanup } from '../backend/backend.js';
import type { DatabaseConfig, PoolSettings } from '../config.js';
import { SqlError, SQLSTATE } from '../errors.js';
import { parameterStatus as parameterStatusMessage } from '../protocol/messages.js';

interface Waiter {
  settled: boolean;
  resolve: (b: Backend) => void;
  reject: (e: SqlError) => void;
  /** When the client started waiting, for query_wait_timeout. */
  since: number;
}

/** Upper bounds (seconds) of the wait-time and transaction-duration histograms. */
export const TIME_BUCKETS: readonly number[] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60];

/** A histogram as plain numbers: observing allocates nothing; metrics read it at scrape time. */
export class Buckets {
  readonly counts = new Float64Array(TIME_BUCKETS.length + 1);
  sum = 0;
  count = 0;
  observe(seconds: number): void {
    let i = 0;
    while (i < TIME_BUCKETS.length && seconds > TIME_BUCKETS[i]!) i++;
    this.counts[i]!++;
    this.sum += seconds;
    this.count++;
  }
}

/** Totals since start (SHOW STATS, metrics); the session increments them, nothing allocates. */
export class PoolCounters {
  xacts = 0;
  queries = 0;
  /** Server connections handed to a client (PgBouncer's server_assignment_count). */
  assignments = 0;
  serversClosed = 0;
  /** Times a client's input was set aside because it was not reading what it was sent. */
  clientOutputStalls = 0;
  /** Seconds, as the histograms keep them. */
  readonly wait = new Buckets();
  readonly xactTime = new Buckets();
  /** Logins that failed since start (readiness looks at the last one). */
  loginFailures = 0;
}

export interface PoolStats {
  database: string;
  size: number;
  available: number;
  borrowed: number;
  pending: number;
  max: number;
}

/**
 * The server connections of one database entry. generic-pool does the bookkeeping
 * (min/max, idle eviction, LIFO reuse); this class adds what a pooler needs around it:
 * reset before reuse, server_lifetime, fail-fast when the server is down, and cancel fencing.
 */
export class DatabasePool {
  private pool: Pool<Backend>;
  private readonly waiters = new Set<Waiter>();
  /**
   * Clients waiting while every connection is busy, first come first served. A released
   * backend goes straight to the head, in the same tick, as in PgBouncer.
   */
  private readonly queue: Waiter[] = [];
  /** Which generic-pool a backend came from: after a reload the old one drains. */
  private readonly origin = new WeakMap<Backend, Pool<Backend>>();
  /**
   * Clean backends handed back while nobody waited, most recent last. They stay checked out
   * of generic-pool so the next transaction can take one synchronously: no promise, no
   * timer per transaction. The janitor tick returns long-idle ones for eviction.
   */
  private readonly idle: Backend[] = [];
  private readonly tick: NodeJS.Timeout;
  private loginFailures = 0;
  private lastLoginError: SqlError | null = null;
  /** Totals for SHOW STATS and metrics. */
  readonly counters = new PoolCounters();
  /** Every open server connection of this pool (SHOW SERVERS, metrics). */
  readonly servers = new Set<Backend>();
  /** Server logins in progress (sv_login). */
  logins = 0;
  /** A server login has succeeded at least once; false again while logins fail (readiness). */
  reachedServer = false;
  failingNow = false;
  /** PAUSE / KILL: checkouts wait here until RESUME (null: not paused). */
  private pausedQueue: Waiter[] | null = null;
  /** ParameterStatus values of the first server login, reported to clients at startup. */
  serverParams: Map<string, string> | null = null;
  /** ParameterStatus messages of the server's values, built once, sent to every new client. */
  private readonly statusMessages = new Map<string, Buffer>();

  parameterStatus(name: string, value: string): Buffer {
    const key = `${name}\0${value}`;
    let m = this.statusMessages.get(key);
    if (m === undefined) {
      m = parameterStatusMessage(name, value);
      if (this.statusMessages.size < 256) this.statusMessages.set(key, m);
    }
    return m;
  }

  constructor(
    public db: DatabaseConfig,
    public settings: PoolSettings,
    private readonly log: Logger,
  ) {
    this.pool = this.makePool();
    this.tick = setInterval(() => {
      this.returnIdle(false);
      this.pump();
      this.expireWaiters();
    }, 1_000);
    this.tick.unref();
  }

  /** A clean idle backend, or null: the synchronous path of a checkout. */
  takeIdle(): Backend | null {
    while (this.idle.length !== 0) {
      const b = this.idle.pop()!;
      if (!b.broken && this.origin.get(b) === this.pool) {
        b.lastUsed = Date.now();
        return b;
      }
      void this.destroy(b);
    }
    return null;
  }

  /** Hands idle backends back to generic-pool: all of them, or those idle past server_idle_timeout. */
  private returnIdle(all: boolean): void {
    const limit = this.settings.server_idle_timeout;
    const now = Date.now();
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const b = this.idle[i]!;
      if (all || b.broken || (limit > 0 && now - b.lastUsed > limit / 2)) {
        this.idle.splice(i, 1);
        const pool = this.origin.get(b) ?? this.pool;
        if (b.broken) void this.destroy(b, pool);
        else void pool.release(b).catch(() => undefined);
      }
    }
  }

  private makePool(): Pool<Backend> {
    const pool = genericPool.createPool<Backend>(
      {
        create: async () => {
          // Back off while the server refuses logins, as PgBouncer's server_login_retry does,
          // instead of generic-pool's immediate retry loop.
          if (this.loginFailures > 0) await delay(Math.min(250 * 2 ** (this.loginFailures - 1), 5_000));
          this.logins++;
          let b: Backend;
          try {
            b = await Backend.connect(this.db, this.settings.server_connect_timeout);
          } finally {
            this.logins--;
          }
          this.servers.add(b);
          this.reachedServer = true;
          this.failingNow = false;
          this.loginFailures = 0;
          this.lastLoginError = null;
          if (this.serverParams === null) this.serverParams = new Map(b.params);
          this.log.debug({ db: this.db.name, backend: b.id, pid: b.pid }, 'server connection opened');
          // generic-pool hands the new connection to its own waiting acquire, if any; when that
          // one was served meanwhile by a released connection (or timed out), it stays in
          // generic-pool's available list, where clients queued here would never see it.
          setImmediate(() => this.pump());
          return b;
        },
        destroy: async (b) => {
          if (this.servers.delete(b)) this.counters.serversClosed++;
          b.close();
        },
        validate: async (b) => !b.broken,
      },
      {
        // The reserve is part of generic-pool's bound; checkout() opens it only to clients
        // that have waited reserve_pool_timeout, as PgBouncer does.
        max: this.db.pool_size + this.db.reserve_pool_size,
        min: this.db.min_pool_size,
        acquireTimeoutMillis: this.settings.query_wait_timeout > 0 ? this.settings.query_wait_timeout : undefined,
        idleTimeoutMillis: this.settings.server_idle_timeout > 0 ? this.settings.server_idle_timeout : Number.MAX_SAFE_INTEGER,
        evictionRunIntervalMillis: this.settings.server_idle_timeout > 0 ? Math.min(30_000, this.settings.server_idle_timeout) : 0,
        testOnBorrow: true,
        fifo: false,
        autostart: true,
      },
    );
    pool.on('factoryCreateError', (err: unknown) => {
      const e = err instanceof SqlError ? err : new SqlError(SQLSTATE.CONNECTION_FAILURE, String(err));
      this.loginFailures++;
      this.counters.loginFailures++;
      this.failingNow = true;
      this.lastLoginError = e;
      this.log.warn({ db: this.db.name, err: e.message }, 'server login failed');
      // Clients waiting while no server connection exists get the error now, not after
      // query_wait_timeout.
      if (this.pool.size === 0 || this.pool.borrowed + this.pool.available === 0) {
        for (const w of this.waiters) this.settle(w, e);
        for (const w of this.queue.splice(0)) this.settle(w, e);
      }
    });
    return pool;
  }

  private settle(w: Waiter, err: SqlError): void {
    if (w.settled) return;
    w.settled = true;
    this.waiters.delete(w);
    w.reject(err);
  }

  /**
   * Checks out a backend: an idle one at once, a new connection while the pool has room,
   * otherwise a place in the queue. Callbacks rather than a promise keep the common paths
   * free of allocations and timers.
   */
  checkout(resolve: (b: Backend) => void, reject: (e: SqlError) => void): void {
    if (this.pausedQueue !== null) {
      this.pausedQueue.push({ settled: false, resolve, reject, since: Date.now() });
      return;
    }
    const idle = this.takeIdle();
    if (idle !== null) {
      resolve(idle);
      return;
    }
    const w: Waiter = { settled: false, resolve, reject, since: Date.now() };
    if (this.pool.available > 0 || this.roomInPool() || this.pool.size === 0) {
      this.acquireFromPool(w);
    } else {
      this.queue.push(w);
    }
  }

  acquire(): Promise<Backend> {
    return new Promise((resolve, reject) => this.checkout(resolve, reject));
  }

  private acquireFromPool(w: Waiter): void {
    const pool = this.pool;
    this.waiters.add(w);
    pool.acquire().then(
      (b) => {
        this.origin.set(b, pool);
        if (w.settled) {
          // The client already got an error; hand the connection straight back.
          void this.returnToPool(pool, b);
          return;
        }
        w.settled = true;
        this.waiters.delete(w);
        w.resolve(b);
      },
      (err: Error) => {
        this.settle(w, err.name === 'TimeoutError' ? this.waitTimeout() : this.lastLoginError ?? new SqlError(SQLSTATE.CONNECTION_FAILURE, err.message));
      },
    );
  }

  private waitTimeout(): SqlError {
    return new SqlError(SQLSTATE.TOO_MANY_CONNECTIONS, `query_wait_timeout: no server connection for database "${this.db.name}" became free within ${this.settings.query_wait_timeout / 1000}s`, { hint: 'The pool is exhausted; retry, or raise pool_size.' });
  }

  /** Fails queued clients that waited past query_wait_timeout (checked every second). */
  /** Room for another connection within pool_size (the reserve is not counted). */
  private roomInPool(): boolean {
    return this.pool.size < this.db.pool_size && this.pool.spareResourceCapacity > 0;
  }

  private expireWaiters(): void {
    const now = Date.now();
    // reserve_pool_size: a client that waited reserve_pool_timeout may open an extra connection.
    const reserveAfter = this.settings.reserve_pool_timeout;
    while (this.db.reserve_pool_size > 0 && this.queue.length !== 0 && this.pool.spareResourceCapacity > 0 && now - this.queue[0]!.since >= reserveAfter) {
      const w = this.queue.shift()!;
      if (w.settled) continue;
      this.log.info({ db: this.db.name, waited_ms: now - w.since }, 'opening a reserve server connection');
      this.acquireFromPool(w);
    }
    const limit = this.settings.query_wait_timeout;
    if (limit <= 0) return;
    while (this.queue.length !== 0 && now - this.queue[0]!.since >= limit) this.settle(this.queue.shift()!, this.waitTimeout());
  }

  /** Gives a clean backend to the longest-waiting client; false when nobody waits. */
  private handToWaiter(b: Backend): boolean {
    while (this.queue.length !== 0) {
      const w = this.queue.shift()!;
      if (w.settled) continue;
      w.settled = true;
      b.lastUsed = Date.now();
      w.resolve(b);
      return true;
    }
    return false;
  }

  /**
   * Gives a backend back. It is reset first if the client changed session state, closed if
   * anything about it is uncertain, and held back while a cancel for it is in flight.
   */
  async release(b: Backend): Promise<void> {
    await this.returnToPool(this.origin.get(b) ?? this.pool, b);
  }

  private async returnToPool(pool: Pool<Backend>, b: Backend): Promise<void> {
    b.detach();
    if (b.cancelsInFlight > 0) {
      await b.cancelsSettled();
    }
    const tooOld = this.settings.server_lifetime > 0 && Date.now() - b.createdAt > this.settings.server_lifetime;
    if (b.broken || !b.quiet || tooOld || pool !== this.pool || b.cleanup === Cleanup.Close) {
      await this.destroy(b, pool);
      return;
    }
    if (b.cleanup === Cleanup.Reset) {
      try {
        await b.runInternal(this.settings.server_reset_query || 'DISCARD ALL');
        b.resetDone();
        b.sequencesOf = null;
        b.namedOf = null;
        b.applied.clear();
        b.setContext(null, '');
        b.prepared.clear();
        b.uncertain.clear();
        b.pendingEvictions = [];
        b.unnamedOwner = null;
      } catch (err) {
        this.log.warn({ db: this.db.name, backend: b.id, err: (err as Error).message }, 'server reset failed; closing');
        await this.destroy(b, pool);
        return;
      }
    }
    b.lastUsed = Date.now();
    if (pool === this.pool && this.handToWaiter(b)) return;
    if (pool === this.pool && pool.pending === 0 && this.waiters.size === 0) {
      this.idle.push(b);
      return;
    }
    await pool.release(b).catch(() => undefined);
  }

  /**
   * The synchronous release of a clean backend (the common case); anything that needs a
   * reset, a cancel to settle or a waiting client goes the full way.
   */
  releaseNow(b: Backend): void {
    if (b.cancelsInFlight === 0 && b.cleanup === Cleanup.None && !b.broken && b.quiet && this.origin.get(b) === this.pool
      && (this.settings.server_lifetime <= 0 || Date.now() - b.createdAt <= this.settings.server_lifetime)) {
      b.detach();
      b.lastUsed = Date.now();
        if (this.handToWaiter(b)) return;
      if (this.pool.pending === 0 && this.waiters.size === 0) {
        this.idle.push(b);
        return;
      }
    }
    void this.release(b);
  }

  async destroy(b: Backend, pool: Pool<Backend> = this.origin.get(b) ?? this.pool): Promise<void> {
    b.broken = true;
    if (this.servers.delete(b)) this.counters.serversClosed++;
    b.close();
    if (pool.isBorrowedResource(b)) await pool.destroy(b).catch(() => undefined);
    // The slot is free again: a queued client may open a new connection in it.
    this.pump();
  }

  /**
   * Moves queued clients to generic-pool while it has an available connection or room for a
   * new one (a slot freed by a destroy, a connection whose login finished with nobody there
   * to take it).
   */
  private pump(): void {
    while (this.queue.length !== 0 && (this.pool.available > 0 || this.roomInPool())) {
      const w = this.queue.shift()!;
      if (!w.settled) this.acquireFromPool(w);
    }
  }

  /** Applies new sizes and timeouts (SIGHUP): new checkouts use a new pool, the old one drains. */
  reconfigure(db: DatabaseConfig, settings: PoolSettings): void {
    const changed = db.pool_size !== this.db.pool_size || db.min_pool_size !== this.db.min_pool_size || db.reserve_pool_size !== this.db.reserve_pool_size
      || settings.query_wait_timeout !== this.settings.query_wait_timeout || settings.server_idle_timeout !== this.settings.server_idle_timeout;
    this.db = db;
    this.settings = settings;
    if (!changed) return;
    this.returnIdle(true);
    const old = this.pool;
    this.pool = this.makePool();
    void old.drain().then(() => old.clear());
  }

  get paused(): boolean {
    return this.pausedQueue !== null;
  }

  /**
   * PAUSE (admin console): new checkouts wait until resume(); the server connections are
   * closed, the idle ones now, those in use when their transaction releases them. Resolves
   * once none is left in use.
   */
  async pause(): Promise<void> {
    if (this.pausedQueue === null) this.pausedQueue = [];
    this.returnIdle(true);
    const old = this.pool;
    this.pool = this.makePool();
    await old.drain();
    await old.clear();
  }

  /** RESUME: the checkouts that waited go on, in the order they came. */
  resume(): void {
    const waiting = this.pausedQueue;
    if (waiting === null) return;
    this.pausedQueue = null;
    for (const w of waiting) if (!w.settled) this.checkout(w.resolve, w.reject);
  }

  /** Clients waiting for a server connection (cl_waiting) and the oldest wait's start (ms), or 0. */
  waiting(): { count: number; oldest: number } {
    let count = 0;
    let oldest = 0;
    const see = (w: Waiter): void => {
      if (w.settled) return;
      count++;
      if (oldest === 0 || w.since < oldest) oldest = w.since;
    };
    for (const w of this.queue) see(w);
    for (const w of this.waiters) see(w);
    if (this.pausedQueue !== null) for (const w of this.pausedQueue) see(w);
    return { count, oldest };
  }

  /** Whether `b` waits for a client: in the idle stack or generic-pool's available list. */
  isIdle(b: Backend): boolean {
    if (this.idle.includes(b)) return true;
    const pool = this.origin.get(b) ?? this.pool;
    return !pool.isBorrowedResource(b);
  }

  /** Idle server connections (sv_idle): in the idle stack or in generic-pool's available list. */
  get idleCount(): number {
    return this.pool.available + this.idle.length;
  }

  stats(): PoolStats {
    return {
      database: this.db.name,
      size: this.pool.size,
      available: this.pool.available + this.idle.length,
      borrowed: this.pool.borrowed - this.idle.length,
      pending: this.pool.pending + this.queue.length,
      max: this.pool.max,
    };
  }

  async close(): Promise<void> {
    clearInterval(this.tick);
    this.returnIdle(true);
    const bye = new SqlError(SQLSTATE.ADMIN_SHUTDOWN, 'scopegate is shutting down', { severity: 'FATAL' });
    for (const w of this.waiters) this.settle(w, bye);
    for (const w of this.queue.splice(0)) this.settle(w, bye);
    for (const w of this.pausedQueue?.splice(0) ?? []) this.settle(w, bye);
    // drain() also waits for acquires still retrying a login to a server that is down: those
    // would hold shutdown until query_wait_timeout, so it gets a short bound.
    await Promise.race([this.pool.drain(), delay(2_000)]);
    await this.pool.clear();
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
