/** One client connection: input loop, frontend dispatch and the transaction loop that links it to a backend. */
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Backend, BackendOwner } from '../backend/backend.js';
import { CancelRegistry } from '../server/cancel-registry.js';
import type { Config } from '../config.js';
import { SqlError, SQLSTATE } from '../errors.js';
import { drainAndRelease, killAndClose } from '../pool/janitor.js';
import type { DatabasePool } from '../pool/database-pool.js';
import type { Route, RouteTable } from '../pool/routes.js';
import { FE, TX_IDLE } from '../protocol/codes.js';
import { Framer, HOLD, readCString, type PartialBytes } from '../protocol/framer.js';
import { statementRefusal, type StatementLimits } from './limits.js';
import * as msg from '../protocol/messages.js';
import { MAX_STARTUP_PACKET, parseOptions, parseStartupPacket } from '../protocol/startup.js';
import { settingsDiff, startupSettings } from './settings.js';
import { SessionLedger } from './effects.js';
import { holdsMessages, Phase } from './phase.js';
import type { SessionEffects } from '../policy/session-effects.js';
import { Rewrite, type RoleChoice, type StatementGate } from '../policy/gate.js';
import { ClientContext } from './context.js';
import type { Identity } from '../auth/index.js';
import { ClientStatements, NO_CHECKS, type CheckedParse, type ClientStatement } from './statements.js';
import { CLOSE_NOTHING, ensurePrepared, PARSE_COMPLETE, type StatementSender } from '../backend/server-statements.js';
import { parseMessage, renameStatement } from '../protocol/messages.js';
import type { ClientTls, ClientTransport } from '../server/tls.js';
import { raiseStatement, RefusalFilter } from '../protocol/refusal.js';

/** The answers to a BEGIN, COMMIT or ROLLBACK scopegate gives itself (role logins, see localTransaction). */
const LOCAL_BEGIN = Buffer.concat([msg.commandComplete('BEGIN'), msg.readyForQuery('T')]);
const LOCAL_COMMIT = Buffer.concat([msg.commandComplete('COMMIT'), msg.readyForQuery('I')]);
const LOCAL_ROLLBACK = Buffer.concat([msg.commandComplete('ROLLBACK'), msg.readyForQuery('I')]);

/** The statements clearing() returns, as Query messages. */
const CLEAR_QUERIES = new Map(['DEALLOCATE ALL;\nDISCARD SEQUENCES', 'DISCARD SEQUENCES', 'DEALLOCATE ALL'].map((q) => [q, msg.query(q)]));

/** Queued bytes past which a client waiting for a backend stops being read. */
const QUEUE_PAUSE_BYTES = 1024 * 1024;
/** Longest stretch of one client's input worked through before the event loop turns to the others. */
const INPUT_SLICE_MS = 2;

/** Everything a client session needs from the server around it. */
export interface ServerContext {
  config: Config;
  log: Logger;
  pools: Map<string, DatabasePool>;
  /** Databases with server_login: role: their pools by scope role. */
  rolePools: Map<string, Map<string, DatabasePool>>;
  /** Databases with route_by_claim: the token's claim picks the pool (src/pool/routes.ts). */
  routes?: Map<string, RouteTable>;
  cancels: CancelRegistry;
  /** What every client's unfinished message holds, against pool.max_partial_message_bytes. */
  partialBytes: PartialBytes;
  /** Counts one more connection for `user` (max_user_client_connections): the refusal when it has its limit already. */
  claimUserSlot(user: string): SqlError | null;
  /** That connection ended. */
  releaseUserSlot(user: string): void;
  gate: StatementGate;
  clientCount: number;
  shuttingDown: boolean;
  /** The admin console, when the config has an `admin:` section (null: off). */
  admin: AdminHost | null;
  onClientClosed(c: ClientSession): void;
}

/** What the session needs of the admin console (src/admin/console.ts). */
export interface AdminHost {
  /** `scopegate` or its alias `pgbouncer`. */
  isConsoleDatabase(name: string): boolean;
  /** Checks the client's scopes (throws 42501 FATAL without the admin or stats scope) and opens its console. */
  openConsole(c: ClientSession): AdminConsole;
}

/** One client's console: answers the client's messages itself. */
export interface AdminConsole {
  parameterStatus(): Buffer[];
  onMessage(type: number, buf: Buffer, start: number, end: number): void;
}


interface Queued {
  type: number;
  /** The message is buf[start, end): kept as a view of the client's chunk, so a message
   * queued while a backend is attached in the same tick still joins that chunk's write. */
  buf: Buffer;
  start: number;
  end: number;
  stmt: ClientStatement | null;
  /** The role the message must run under (undefined: no requirement). */
  role: RoleChoice;
  /** What running it does to the session, recorded once the server confirms it. */
  fx: SessionEffects | null;
  /** A message scopegate made, its answer hidden from the client. */
  own?: boolean;
}

let nextClientId = 1;
let clientIdStep = 1;

/** workers: N: worker i hands out ids i+1, i+1+N, ... so SHOW CLIENTS ids are unique over all workers. */
export function clientIdsForWorker(index: number, count: number): void {
  nextClientId = index + 1;
  clientIdStep = count;
}

/**
 * One client connection: startup and authentication, then the transaction loop that
 * borrows a backend when a transaction starts and returns it when ReadyForQuery says idle.
 */
export class ClientSession implements BackendOwner, StatementSender {
  readonly id = (nextClientId += clientIdStep) - clientIdStep;
  readonly address: string;
  /** Where this session is (see phase.ts); written only by enter(). */
  private phase: Phase = Phase.Startup;
  private startupBuf: Buffer | null = null;
  private readonly framer: Framer;
  private readonly limits: StatementLimits;
  /** Until the client has logged in (client_login_timeout). */
  private loginTimer: NodeJS.Timeout | null = null;
  user = '';
  database = '';
  /** The pool of the backend this client holds or will hold next (per transaction with role logins). */
  private pool: DatabasePool | null = null;
  /** server_login: role: a pool per scope role; a transaction runs on the pool of its role. */
  private rolePools: ReadonlyMap<string, DatabasePool> | null = null;
  /** A lone BEGIN answered here (role logins): sent ahead of the transaction's first statement,
   * whose role picks the server connection. */
  private pendingBegin: Buffer | null = null;
  /** The client's settings and its statements' effects: the only writer of either. */
  private ledger = new SessionLedger(new Map());
  /** The startup settings' values as the client sent them (for the policy's startup check). */
  startupValues: ReadonlyMap<string, string> = new Map();
  /** The last rewritten Parse built: drivers re-send the same unnamed Parse per statement. */
  private lastRewrite: { verdict: Rewrite; name: string; types: Buffer; tail: Buffer; message: Buffer } | null = null;
  /** DDL went through: re-read the column catalog when the transaction ends. */
  private catalogStale = false;
  poolMode: 'transaction' | 'session' = 'transaction';
  /** Server connections log in as the scope's role (no SET ROLE): GateClient reads it. */
  get loginRoles(): boolean { return this.rolePools !== null; }
  /** Prepared statements by client name; tracking is off when max_prepared_statements is 0. */
  readonly statements = new ClientStatements();
  private trackStatements = false;
  private statementLimit = 0;
  /** DEALLOCATE ALL / DISCARD ALL went by: the next Query clears the backend's statement map. */
  forgetServerStatements = false;
  private pid = 0;
  readonly cancelKey = Buffer.alloc(4);
  backend: Backend | null = null;
  /** The verified token's identity, or null under trust authentication. */
  identity: Identity | null = null;
  /** The client connection's TLS (version, cipher), or null in plain text (src/server/tls.ts). */
  readonly tls: ClientTls | null;
  /** A policy is enforced: every statement runs under a scope's role with this client's claims. */
  private enforcing = false;
  /** The role and claims this client's statements need on a backend; set at login. */
  private context = new ClientContext(null, '', null);
  /** The token's scopes, sorted: part of decision cache keys. */
  scopeKey = '';
  private queue: Queued[] = [];
  private queuedBytes = 0;
  /** The client's chunk is being processed: runs are flushed once at its end. */
  private inInput = false;
  /** The backend attached (and held) while a chunk was being processed. */
  private heldInInput: Backend | null = null;
  private idleTxTimer: NodeJS.Timeout | null = null;
  private runStart = -1;
  private runEnd = -1;
  private runBuf: Buffer | null = null;
  private clientPaused = false;
  private backendPausedForClient = false;
  private logger: Logger | null = null;
  /** When the client connected, and when its last transaction asked for a server (SHOW CLIENTS). */
  readonly connectedAt = Date.now();
  requestedAt = 0;
  /** performance.now() when the client began waiting for a server, and when it got one (-1: not). */
  private waitStart = -1;
  private txStart = -1;
  /** Set when the client logged in to the admin console: it answers every message itself. */
  console: AdminConsole | null = null;

  /** A child logger with this client's bindings, made on first use: most sessions never log. */
  private get log(): Logger {
    this.logger ??= this.ctx.log.child({ client: this.id, user: this.user, db: this.database, addr: this.address });
    return this.logger;
  }

  constructor(readonly socket: Socket, private readonly ctx: ServerContext, transport: ClientTransport | null = null) {
    this.address = socket.remoteAddress ?? 'unknown';
    this.tls = transport?.tls ?? null;
    this.framer = new Framer(0, ctx.partialBytes);
    const limits = ctx.config.pool;
    this.framer.setLimit(limits.max_login_packet_size);
    this.limits = { maxBytes: limits.max_statement_size, maxStatements: limits.max_statements_per_query };
    if (limits.client_login_timeout > 0) {
      // The front door's deadline is kept: a slow TLS handshake does not buy more time.
      const left = transport !== null && transport.loginDeadline > 0 ? Math.max(1, transport.loginDeadline - Date.now()) : limits.client_login_timeout;
      this.loginTimer = setTimeout(() => {
        this.log.info({ addr: this.address }, 'client_login_timeout: closing a client that did not log in');
        this.closeWith(new SqlError(SQLSTATE.PROTOCOL_VIOLATION, `client_login_timeout: login not completed within ${limits.client_login_timeout / 1000}s`, { severity: 'FATAL' }));
      }, left);
      this.loginTimer.unref();
    }
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // A TLS socket may stay open after an error (node's renegotiation limit): close it too.
    socket.on('error', () => { this.onClose(); socket.destroy(); });
    socket.on('close', () => this.onClose());
    socket.on('drain', () => {
      if (this.backendPausedForClient) {
        this.backendPausedForClient = false;
        this.backend?.resume();
      }
    });
    // What the front door read past the encryption requests, in order before any later chunk
    // (it may end the session at once: the listener checks `ended`).
    if (transport !== null && transport.pending.length > 0) this.onData(transport.pending);
  }

  // ---- input ------------------------------------------------------------------------

  private onData(chunk: Buffer | null): void {
    if (this.phase === Phase.Closed) return;
    try {
      if (this.phase === Phase.Startup) {
        if (chunk !== null) this.onStartupData(chunk);
        return;
      }
      if (this.phase === Phase.Authenticating) {
        if (chunk !== null) this.framer.push(chunk, this.onAuthMessage);
        return;
      }
      const b = this.backend;
      if (b === null) {
        this.inInput = true;
        try {
          this.feed(chunk);
          this.flushRun();
        } finally {
          this.inInput = false;
          // A backend attached during this chunk was held: its writes go out as one.
          const held = this.heldInInput;
          this.heldInInput = null;
          if (held !== null) held.release();
        }
        return;
      }
      b.hold();
      try {
        this.feed(chunk);
        this.flushRun();
      } finally {
        // Also on a protocol error: the janitor's ROLLBACK must not sit in a held buffer.
        b.release();
      }
      this.watchUnsynced();
    } catch (err) {
      // The messages before the bad one were accounted for on the backend: they must reach it.
      this.flushRun();
      this.fatal(err);
    }
  }

  /** When the current slice of this client's input began (see onMessage). */
  private sliceStart = 0;

  /**
   * Stops reading this client until the event loop has served the others (the next turn) or,
   * when the client is not reading what it was sent, until its socket drains: what it sent
   * waits in the framer, in order, and nothing else of it is read meanwhile.
   */
  private yieldInput(): typeof HOLD {
    this.socket.pause();
    const go = (): void => {
      if (this.isClosed()) return;
      if (!this.clientPaused) this.socket.resume();
      this.onData(null);
    };
    if (this.socket.writableNeedDrain) {
      if (this.pool !== null) this.pool.counters.clientOutputStalls++;
      this.socket.once('drain', go);
    } else setImmediate(go);
    return HOLD;
  }

  /** A chunk from the socket, or (null) the input held for a decision worker or a slice's end. */
  private feed(chunk: Buffer | null): void {
    this.sliceStart = performance.now();
    if (chunk !== null) this.framer.push(chunk, this.onMessage);
    else this.framer.resume(this.onMessage);
  }

  /** This client bound the unnamed portal since its last simple Query (or refusal). */
  private unnamedPortalBound = false;
  /** Refusals the server raises inside a transaction: their answers are shown without CONTEXT. */
  private readonly refusals = new RefusalFilter();

  /**
   * Execute or Describe of the unnamed portal the client never bound: Postgres 18.4 would run
   * the one a failed simple Query left behind, whose statements were freed with that Query's
   * memory (measured: BEGIN, a failing Query, a CopyData, then Execute("") crashes the
   * server). Answered as Postgres answers a portal that does not exist. Named portals only
   * ever come from Bind.
   */
  private portalRefusal(buf: Buffer, nameAt: number, isPortal: boolean): SqlError | null {
    if (!isPortal || buf[nameAt] !== 0 || this.unnamedPortalBound) return null;
    return new SqlError(SQLSTATE.INVALID_CURSOR_NAME, 'portal "" does not exist');
  }

  /**
   * What a decision worker said of the held message, taken when it is handed out again: its
   * refusal, or null when the checks may go on (from the cache it filled, or, if that was
   * made against a policy since replaced, afresh on the event loop: never a second hold).
   */
  private offThread: { sql: string; refusal: SqlError | null } | null = null;

  /** HOLD when `sql` must be decided off the event loop first; else its refusal, or null. */
  private offThreadVerdict(sql: string): SqlError | null | typeof HOLD {
    const done = this.offThread;
    this.offThread = null;
    if (done !== null && done.sql === sql) return done.refusal;
    return this.ctx.gate.needsOffThread(this, sql) ? this.holdForDecision(sql) : null;
  }

  /**
   * A big text not yet decided: a worker parses and decides it while this client's input
   * waits unread (the socket paused), so the event loop goes on serving everyone else.
   */
  private holdForDecision(sql: string): typeof HOLD {
    this.socket.pause();
    void this.ctx.gate.decideOffThread(this, sql).then((refusal) => {
      if (this.isClosed()) return;
      this.offThread = { sql, refusal };
      if (!this.clientPaused) this.socket.resume();
      this.onData(null);
    });
    return HOLD;
  }

  private onStartupData(chunk: Buffer): void {
    let buf = this.startupBuf ? Buffer.concat([this.startupBuf, chunk]) : chunk;
    this.startupBuf = null;
    while (buf.length >= 4 && this.phase === Phase.Startup) {
      const len = buf.readInt32BE(0);
      if (len < 8 || len > MAX_STARTUP_PACKET) {
        throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, `invalid length of startup packet: ${len}`, { severity: 'FATAL' });
      }
      if (buf.length < len) break;
      const packet = buf.subarray(0, len);
      buf = buf.subarray(len);
      const p = parseStartupPacket(packet);
      if (p.kind === 'ssl' || p.kind === 'gssenc') {
        // The listener's front door (server/tls.ts) answers these before a session exists;
        // a session made without it (in-process) has no TLS: 'N', go on in plain text.
        this.socket.write(msg.ENCRYPTION_REFUSED);
        continue;
      }
      if (p.kind === 'cancel') {
        this.ctx.cancels.cancel(p.pid, p.secret);
        this.enter(Phase.Closed);
        this.socket.end();
        return;
      }
      if (buf.length > 0) {
        // A client may not pipeline past the startup packet before authentication.
        throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, 'unexpected data after startup packet', { severity: 'FATAL' });
      }
      void this.startup(p.params, p.minor, p.protocolOptions).catch((err) => this.fatal(err));
      return;
    }
    if (buf.length > 0 && this.phase === Phase.Startup) this.startupBuf = Buffer.from(buf);
  }

  private async startup(params: Map<string, string>, minor: number, protocolOptions: string[]): Promise<void> {
    const ctx = this.ctx;
    if (minor > 0 || protocolOptions.length > 0) this.socket.write(msg.negotiateProtocolVersion(0, protocolOptions));
    if (ctx.shuttingDown) throw new SqlError(SQLSTATE.CANNOT_CONNECT_NOW, 'scopegate is shutting down', { severity: 'FATAL' });
    if (params.has('replication') && params.get('replication') !== 'false' && params.get('replication') !== '0') {
      throw new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, 'replication connections are not supported through scopegate', { severity: 'FATAL' });
    }
    this.user = params.get('user') ?? '';
    if (!this.user) throw new SqlError(SQLSTATE.INVALID_AUTHORIZATION, 'no PostgreSQL user name specified in startup packet', { severity: 'FATAL' });
    this.database = params.get('database') || this.user;
    if (ctx.admin !== null && ctx.admin.isConsoleDatabase(this.database)) {
      await this.consoleLogin(ctx.admin);
      return;
    }
    const byRole = ctx.rolePools.get(this.database);
    const routes = ctx.routes?.get(this.database);
    let pool = ctx.pools.get(this.database) ?? (byRole === undefined ? undefined : byRole.values().next().value);
    if (!pool && routes === undefined) throw new SqlError(SQLSTATE.INVALID_CATALOG_NAME, `no such database: ${this.database}`, { severity: 'FATAL' });
    if (byRole !== undefined) this.rolePools = byRole;
    this.pool = pool ?? null;
    this.poolMode = pool?.db.pool_mode ?? routes!.entry.pool_mode;
    this.statementLimit = ctx.config.pool.max_prepared_statements;
    this.trackStatements = this.poolMode === 'transaction' && this.statementLimit > 0;
    const startup = startupSettings(params, params.has('options') ? parseOptions(params.get('options')!) : new Map());
    this.ledger = new SessionLedger(startup.settings);
    this.startupValues = startup.values;
    this.identity = await ctx.gate.authenticate(this);
    if (this.isClosed()) return;
    // Counted by who the token says the client is: login names are the client's to choose.
    const slot = this.identity?.sub ?? this.user;
    const full = ctx.claimUserSlot(slot);
    if (full !== null) throw full;
    this.userSlot = slot;
    if (routes !== undefined) {
      // The route is picked before anything is connected to; a token that names none is refused.
      const route = routes.resolve(this.identity?.claims);
      this.route = route;
      route.attach(this);
      pool = this.pool = route.pool;
      // Statements are judged against this tenant's own columns: read them before the first one.
      if (ctx.gate.policyVersion() !== '' && route.catalog.current === null) await route.catalog.refresh();
      if (this.isClosed()) return;
    }
    this.scopeKey = [...new Set(this.identity?.scopes ?? [])].sort().join(' ');
    this.enforcing = ctx.gate.policyVersion() !== '';
    this.context = new ClientContext(this.identity, this.identity?.tokenHash ?? '', ctx.gate.defaultRole(this), this.rolePools !== null);
    await ctx.gate.checkStartup(this);
    if (this.isClosed()) return;
    pool = pool!;
    if (pool.serverParams === null) {
      // The first client of a database learns the server's parameters from a real login.
      const b = await pool.acquire();
      await pool.release(b);
    }
    // Revoked while logging in (after authenticate, before the sweep could see a ready session).
    const late = ctx.gate.checkRevoked(this);
    if (late !== null) throw late;
    const out: Buffer[] = [msg.authenticationOk()];
    const ownValues = new Map<string, string>();
    for (const [k, v] of params) ownValues.set(k.toLowerCase(), v);
    for (const [name, value] of pool.serverParams!) {
      const own = ownValues.get(name.toLowerCase());
      out.push(own === undefined ? pool.parameterStatus(name, value) : msg.parameterStatus(name, own));
    }
    const key = ctx.cancels.allocate();
    this.pid = key.pid;
    this.cancelKey.writeInt32BE(key.secret, 0);
    ctx.cancels.add(this.pid, this);
    out.push(msg.backendKeyData(key.pid, key.secret), msg.readyForQuery('I'));
    this.socket.write(Buffer.concat(out));
    if (this.loginTimer !== null) { clearTimeout(this.loginTimer); this.loginTimer = null; }
    this.framer.setLimit(this.ctx.config.pool.max_packet_size, statementMessageCap(this.ctx.config.pool.max_statement_size));
    this.enter(Phase.Idle);
    if (ctx.log.isLevelEnabled('debug')) this.log.debug('client ready');
  }

  /**
   * The admin console's login: the token is verified as for any database, then it must
   * carry the admin or stats scope (refused with 42501 FATAL otherwise, as PgBouncer refuses
   * the login); from then on the console answers every message and no server is involved.
   */
  private async consoleLogin(admin: AdminHost): Promise<void> {
    const ctx = this.ctx;
    this.identity = await ctx.gate.authenticate(this);
    if (this.isClosed()) return;
    this.scopeKey = [...new Set(this.identity?.scopes ?? [])].sort().join(' ');
    const opened = admin.openConsole(this);
    const key = ctx.cancels.allocate();
    this.pid = key.pid;
    this.cancelKey.writeInt32BE(key.secret, 0);
    this.console = opened;
    this.socket.write(Buffer.concat([msg.authenticationOk(), ...opened.parameterStatus(), msg.backendKeyData(key.pid, key.secret), msg.readyForQuery('I')]));
    if (this.loginTimer !== null) { clearTimeout(this.loginTimer); this.loginTimer = null; }
    this.framer.setLimit(Math.min(ctx.config.pool.max_packet_size, 1 << 20));
    this.enter(Phase.Idle);
  }

  /** With route_by_claim: the tenant's route (its pool and column catalog); null otherwise. */
  private route: Route | null = null;
  /** The user this connection counts for under max_user_client_connections (null: not counted yet). */
  private userSlot: string | null = null;

  /** The route's column catalog the gate judges statements against; null: the gate's own. */
  get catalog(): Route['catalog'] | null {
    return this.route?.catalog ?? null;
  }

  /** The pool this client's transactions use now (SHOW POOLS); null for the console. */
  get poolNow(): DatabasePool | null {
    return this.pool;
  }

  /** The client's phase (SHOW CLIENTS). */
  get phaseNow(): Phase {
    return this.phase;
  }

  /** Writes raw protocol bytes to the client (the auth exchange uses this). */
  send(data: Buffer): void {
    if (this.phase !== Phase.Closed) this.socket.write(data);
  }

  private authWaiter: ((m: { type: number; body: Buffer }) => void) | null = null;

  /** Reads the client's next message during authentication (a password or SASL response). */
  readAuthMessage(): Promise<{ type: number; body: Buffer }> {
    if (this.phase === Phase.Startup) this.enter(Phase.Authenticating);
    return new Promise((resolve) => { this.authWaiter = resolve; });
  }

  private readonly onAuthMessage = (type: number, buf: Buffer, start: number, end: number): void => {
    const w = this.authWaiter;
    this.authWaiter = null;
    if (type === FE.Terminate) { this.terminate(); return; }
    if (w === null || type !== FE.Password) {
      throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, `expected password response, got message type '${String.fromCharCode(type)}'`, { severity: 'FATAL' });
    }
    w({ type, body: Buffer.from(buf.subarray(start + 5, end)) });
  };

  private readonly onMessage = (type: number, buf: Buffer, start: number, end: number): boolean | void => {
    // The rest of a chunk after the message that ended the session (Terminate, a fatal error) is not read.
    if (this.phase === Phase.Closed) return;
    // One client's input is worked through in slices: a chunk of 9,000 pipelined messages
    // (or ones scopegate answers itself, which the client does not read) would otherwise keep
    // the event loop every client shares, and the revocation feed, for seconds.
    if (this.socket.writableNeedDrain || performance.now() - this.sliceStart > INPUT_SLICE_MS) return this.yieldInput();
    if (this.console !== null) {
      if (type === FE.Terminate) { this.terminate(); return; }
      const revoked = this.identity === null ? null : this.ctx.gate.checkRevoked(this);
      if (revoked !== null) throw revoked;
      this.console.onMessage(type, buf, start, end);
      return;
    }
    if (this.idleTxTimer) { clearTimeout(this.idleTxTimer); this.idleTxTimer = null; }
    if (this.phase === Phase.SkippingToSync) {
      // Postgres checks the type before it skips: an unknown one ends the session, and so does Terminate.
      if (!isFrontendType(type)) throw unknownType(type);
      if (type === FE.Terminate) { this.terminate(); return; }
      if (type === FE.Sync) {
        this.enter(this.backend === null ? Phase.Idle : Phase.Linked);
        this.socket.write(msg.readyForQuery(this.backend ? txChar(this.backend.txStatus) : 'I'));
      }
      return;
    }
    // A revoked token or subject: refused at its next message (Describe, COPY data too), whatever it holds.
    if (this.identity !== null && type !== FE.Terminate) {
      const revoked = this.ctx.gate.checkRevoked(this);
      if (revoked !== null) throw revoked;
    }
    switch (type) {
      case FE.Terminate:
        this.terminate();
        return;
      case FE.Query: {
        // A simple Query replaces the unnamed portal (and may leave it failed: see portalRefusal).
        this.unnamedPortalBound = false;
        this.checkSessionStillValid();
        const [sql] = readCString(buf, start + 5, end);
        const tooBig = statementRefusal(this.limits, sql, end - start) ?? this.offThreadVerdict(sql);
        if (tooBig === HOLD) return HOLD;
        if (tooBig !== null) { this.reject(tooBig, false); return; }
        const fx = this.ctx.gate.effectsOf(this, sql);
        const verdict = this.ctx.gate.checkQuery(this, sql, fx);
        if (verdict instanceof SqlError) { this.reject(verdict, false); return; }
        if (this.rolePools !== null && this.backend === null && this.wireFree && this.localTransaction(sql, buf, start, end)) return;
        if (fx !== null) this.accepted(fx);
        if (verdict instanceof Rewrite) {
          if (verdict.changesCatalog) this.catalogStale = true;
          if (verdict.sql === null) {
            this.forwardToBackend(type, buf, start, end, null, verdict.role, fx);
          } else {
            const m = msg.query(verdict.sql);
            this.forwardToBackend(type, m, 0, m.length, null, verdict.role, fx);
          }
          return;
        }
        this.forwardToBackend(type, buf, start, end, null, verdict, fx);
        return;
      }
      case FE.Parse: {
        this.checkSessionStillValid();
        const [name, afterName] = readCString(buf, start + 5, end);
        const [sql, afterSql] = readCString(buf, afterName, end);
        const tooBig = statementRefusal(this.limits, sql, end - start) ?? this.offThreadVerdict(sql);
        if (tooBig === HOLD) return HOLD;
        if (tooBig !== null) { this.reject(tooBig, true); return; }
        const fx = this.ctx.gate.effectsOf(this, sql);
        const verdict = this.ctx.gate.checkQuery(this, sql, fx);
        if (verdict instanceof SqlError) { this.reject(verdict, true); return; }
        const decision = this.ctx.gate.lastDecision;
        if (verdict instanceof Rewrite && verdict.bindChecks.length !== 0) {
          const typed = ClientStatements.declaredTypesRefusal(buf.subarray(afterSql, end), verdict.bindChecks);
          if (typed !== null) { this.reject(typed, true); return; }
        }
        if (name !== '' && this.statements.byName.has(name)) {
          this.reject(new SqlError(SQLSTATE.DUPLICATE_PREPARED_STATEMENT, `prepared statement "${name}" already exists`), true);
          return;
        }
        if (fx !== null) this.accepted(fx);
        // Its effects happen when a portal bound to it is executed, each time.
        this.statements.setEffects(name, fx);
        let role: RoleChoice;
        let tail = buf.subarray(afterName, end);
        // The client's own bytes unless rewritten: then it joins the run of this chunk.
        let message = buf;
        let mStart = start;
        let mEnd = end;
        let sentSql = sql;
        if (verdict instanceof Rewrite) {
          role = verdict.role;
          if (verdict.changesCatalog) this.catalogStale = true;
          if (verdict.sql !== null) {
            // The server prepares the rewritten text; parameter types stay as the client sent them.
            sentSql = verdict.sql;
            const types = buf.subarray(afterSql, end);
            const last = this.lastRewrite;
            if (last !== null && last.verdict === verdict && last.name === name && last.types.equals(types)) {
              tail = last.tail;
              message = last.message;
            } else {
              tail = Buffer.concat([Buffer.from(`${sentSql}\0`, 'utf8'), types]);
              message = parseMessage(name, tail);
              this.lastRewrite = { verdict, name, types: Buffer.from(types), tail, message };
            }
            mStart = 0;
            mEnd = message.length;
          }
          this.statements.setChecks(name, verdict.bindChecks);
        } else {
          role = verdict;
          this.statements.setChecks(name, NO_CHECKS);
        }
        // A rewrite was parsed again when it was made; the client's own text is asked about.
        if (this.trackStatements && name !== '' && sentSql === sql && !this.ctx.gate.parses(sql)) {
          // Postgres will refuse it: let it say so in its own words, and keep no mapping.
          this.forwardToBackend(type, message, mStart, mEnd, null, undefined);
          return;
        }
        if (name !== '') {
          // Recorded in every mode: a name this client never parsed is never bound for it.
          const stmt = this.statements.add(name, sql, tail);
          stmt.role = role;
          stmt.sentSql = sentSql;
          stmt.checkedVersion = this.ctx.gate.policyVersion();
          stmt.decision = decision;
          if (!this.trackStatements) {
            this.forwardToBackend(type, message, mStart, mEnd, null, role);
            return;
          }
          if (this.wireFree) {
            // Nothing in flight and no backend: answer now and prepare on whichever backend
            // the statement first runs on. A client blocked in PQprepare must not wait for
            // a backend that clients on its own thread hold (pgbench -M prepared -j 2).
            this.socket.write(PARSE_COMPLETE);
            return;
          }
          // The role is switched when the statement runs (Bind), not when it is parsed.
          this.forwardToBackend(type, message, mStart, mEnd, stmt, undefined);
          return;
        }
        this.statements.unnamed = { name: '', message: message.subarray(mStart, mEnd), sql, sentSql, role, checkedVersion: this.ctx.gate.policyVersion(), decision, bound: false };
        this.forwardToBackend(type, message, mStart, mEnd, null, role);
        return;
      }
      case FE.Bind:
      case FE.Describe: {
        if (type === FE.Describe) {
          const refused = this.portalRefusal(buf, start + 6, buf[start + 5] === 0x50);
          if (refused !== null) { this.reject(refused, true); return; }
        }
        if (type === FE.Bind && this.statements.hasChecks) {
          const refusal = this.statements.checkBind(buf, start, end);
          if (refusal !== null) { this.reject(refusal, true); return; }
        }
        if (type === FE.Bind && (this.statements.hasEffects || this.ledger.hasPortals)) this.noteBind(buf, start, end);
        let nameStart = start + 6;
        if (type === FE.Bind) {
          nameStart = buf.indexOf(0, start + 5) + 1;
        } else if (buf[start + 5] !== 0x53) {
          break; // Describe of a portal: portals live inside the transaction, on this backend
        }
        const nameEnd = buf.indexOf(0, nameStart);
        if (nameStart <= 0 || nameEnd < 0 || nameEnd >= end) throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, 'malformed Bind/Describe message', { severity: 'FATAL' });
        // Only statements this client parsed, judged again if the policy changed since:
        // the server connection is shared, and another client's statement may sit on it.
        const checked = nameEnd === nameStart ? this.statements.unnamed : this.statements.byName.get(buf.toString('utf8', nameStart, nameEnd));
        if (checked === null || checked === undefined) {
          const what = nameEnd === nameStart ? 'unnamed prepared statement' : `prepared statement "${buf.toString('utf8', nameStart, nameEnd)}"`;
          this.reject(new SqlError(SQLSTATE.INVALID_SQL_STATEMENT_NAME, `${what} does not exist`), true);
          return;
        }
        let role: RoleChoice;
        if (type === FE.Bind) {
          const verdict = this.recheck(checked);
          if (verdict instanceof SqlError) { this.reject(verdict, true); return; }
          role = verdict;
        }
        // The unnamed statement and untracked names go as sent; tracked ones are renamed.
        const stmt = nameEnd === nameStart || !this.trackStatements ? null : this.statements.byName.get(checked.name) ?? null;
        if (type === FE.Bind && buf[start + 5] === 0) this.unnamedPortalBound = true;
        this.forwardToBackend(type, buf, start, end, stmt, role);
        return;
      }
      case FE.Close: {
        if (buf[start + 5] === 0x53 && buf[start + 6] !== 0) {
          const [name] = readCString(buf, start + 6, end);
          this.statements.byName.delete(name);
          this.statements.setChecks(name, NO_CHECKS);
          this.statements.setEffects(name, null);
          if (!this.trackStatements) break; // the server closes it, on the connection that has it
          // Only this client's name goes; the server statement stays for others (and LRU).
          if (this.wireFree) {
            this.socket.write(msg.CLOSE_COMPLETE);
            return;
          }
          this.forwardToBackend(type, CLOSE_NOTHING, 0, CLOSE_NOTHING.length);
          return;
        }
        break;
      }
      case FE.Sync:
        if (this.wireFree) {
          // Everything since the last Sync was answered here: so is this one.
          this.socket.write(msg.readyForQuery('I'));
          return;
        }
        break;
      case FE.Flush:
        if (this.wireFree) return;
        break;
      case FE.Execute: {
        const refused = this.portalRefusal(buf, start + 5, true);
        if (refused !== null) { this.reject(refused, true); return; }
        if (this.ledger.hasPortals) {
          const [portal] = readCString(buf, start + 5, end);
          this.forwardToBackend(type, buf, start, end, null, undefined, this.ledger.executing(portal));
          return;
        }
        break;
      }
      case FE.CopyData: case FE.CopyDone: case FE.CopyFail:
        break;
      case FE.FunctionCall:
        this.reject(new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, 'the fastpath function call protocol is not supported through scopegate'), false);
        return;
      default:
        throw unknownType(type);
    }
    this.forwardToBackend(type, buf, start, end);
  };

  /**
   * Role logins: a lone BEGIN cannot know which role's connection the transaction needs, so
   * it is answered here and sent ahead of the first statement; COMMIT or ROLLBACK of such a
   * transaction before any statement is answered here too. Returns true when answered.
   */
  private localTransaction(sql: string, buf: Buffer, start: number, end: number): boolean {
    const t = this.ctx.gate.transactionControl(sql);
    if (t === 'begin' && this.pendingBegin === null) {
      this.pendingBegin = Buffer.from(buf.subarray(start, end));
      this.socket.write(LOCAL_BEGIN);
      return true;
    }
    if ((t === 'commit' || t === 'rollback') && this.pendingBegin !== null) {
      this.pendingBegin = null;
      this.socket.write(t === 'commit' ? LOCAL_COMMIT : LOCAL_ROLLBACK);
      return true;
    }
    return false;
  }

  // ---- session effects ---------------------------------------------------------------

  /** Effects applied as soon as a statement is accepted, before it runs. */
  private accepted(fx: SessionEffects): void {
    if (fx.deallocateAll) {
      // Later messages of this chunk may prepare names again: the map is cleared now, in order.
      this.statements.byName.clear();
      this.statements.unnamed = null;
      this.forgetServerStatements = true;
    }
  }

  /** A Bind: the portal carries the effects of the statement bound to it, if any. */
  private noteBind(buf: Buffer, start: number, end: number): void {
    const [portal, afterPortal] = readCString(buf, start + 5, end);
    const [name] = readCString(buf, afterPortal, end);
    this.ledger.bound(portal, this.statements.effectsOf(name));
  }

  /** A prepared statement is judged again at Bind when the policy changed since its Parse. */
  private recheck(stmt: CheckedParse): SqlError | RoleChoice {
    const version = this.ctx.gate.policyVersion();
    if (stmt.checkedVersion === version) {
      // Every execution is a decision: the first Bind is covered by the Parse's audit line.
      if (stmt.bound && stmt.decision !== null) this.ctx.gate.auditExecution(this, stmt.decision);
      stmt.bound = true;
      return stmt.role;
    }
    const verdict = this.ctx.gate.recheck(this, stmt);
    if (verdict instanceof SqlError) return verdict;
    // Judged (and audited) afresh: later Binds repeat this decision.
    stmt.decision = this.ctx.gate.lastDecision;
    stmt.bound = true;
    if (verdict instanceof Rewrite) {
      // The server holds the statement as it was rewritten at Parse; a different rewrite
      // now means the client must prepare it again.
      if ((verdict.sql ?? stmt.sql) !== stmt.sentSql) {
        return new SqlError(SQLSTATE.INSUFFICIENT_PRIVILEGE, 'permission denied: the policy changed how this prepared statement is filtered', { hint: 'Prepare the statement again.' });
      }
      stmt.role = verdict.role;
      this.statements.setChecks(stmt.name, verdict.bindChecks);
      stmt.checkedVersion = version;
      return verdict.role;
    }
    stmt.role = verdict;
    stmt.checkedVersion = version;
    return verdict;
  }

  // ---- client -> backend ------------------------------------------------------------

  /** No backend, nothing queued or in flight: a message can be answered here, in order. */
  private get wireFree(): boolean {
    return this.phase === Phase.Idle && this.queue.length === 0;
  }

  /** A new transaction starts only while the client's token is still valid. */
  private checkSessionStillValid(): void {
    if (this.identity === null) return;
    const b = this.backend;
    if (b !== null && (holdsMessages(this.phase) || !b.quiet)) return; // a running transaction may finish
    const refusal = this.ctx.gate.checkTransactionStart(this);
    if (refusal !== null) throw refusal;
  }

  private forwardToBackend(type: number, buf: Buffer, start: number, end: number, stmt: ClientStatement | null = null, role: RoleChoice = undefined, fx: SessionEffects | null = null): void {
    const b = this.backend;
    if (b === null || holdsMessages(this.phase)) {
      if (type === FE.CopyData || type === FE.CopyDone || type === FE.CopyFail) {
        return; // COPY data without a COPY in progress: Postgres ignores it too.
      }
      this.queue.push({ type, buf, start, end, stmt, role, fx });
      this.queuedBytes += end - start;
      // Pausing costs two epoll changes per transaction, so only a client that keeps
      // sending while it waits for a backend is throttled.
      if (this.queuedBytes > QUEUE_PAUSE_BYTES && !this.clientPaused) { this.clientPaused = true; this.socket.pause(); }
      if (b === null && this.phase !== Phase.Acquiring) this.acquire();
      return;
    }
    this.dispatch(b, type, buf, start, end, stmt, role, fx);
  }

  /** Sends queued messages in order until one has to wait (a role switch). */
  private drainQueue(b: Backend): void {
    const held = !this.inInput;
    if (held) {
      b.hold();
    } else if (this.heldInInput === null) {
      // Inside the input loop: the rest of the chunk follows; released when the chunk is done.
      b.hold();
      this.heldInInput = b;
    }
    while (this.queue.length !== 0 && !holdsMessages(this.phase) && this.backend === b) {
      const q = this.queue.shift()!;
      this.queuedBytes -= q.end - q.start;
      if (q.own !== undefined) {
        if (q.type === FE.Parse) this.noteUnnamedParse(b, null); // a refusal's DO block
        this.sendOwn(b, q.buf, q.own);
      } else {
        this.dispatch(b, q.type, q.buf, q.start, q.end, q.stmt, q.role, q.fx);
      }
    }
    // Inside the input loop the run stays open: the rest of the chunk joins the same write.
    if (held) {
      this.flushRun();
      b.release();
      this.watchUnsynced();
    }
    if (!holdsMessages(this.phase)) this.resumeClient();
  }

  /**
   * Makes `b` act for this client before the next message: the statement's role, and the
   * token's claims in scopegate.claims / scopegate.sub for RLS. Returns true when the
   * switch went into the same write (the message can follow), false when the message was
   * queued behind it.
   */
  private switchContext(b: Backend, type: number, buf: Buffer, start: number, end: number, stmt: ClientStatement | null, role: RoleChoice, fx: SessionEffects | null, want: string | null): boolean {
    const item: Queued = { type, buf, start, end, stmt, role, fx };
    const sql = this.context.statement(b, want);
    if (b.idleWire && this.runBuf === null) {
      // Nothing in flight: switch in a round trip of its own, so a failed switch can never
      // let the statement run in the previous context.
      this.enter(Phase.Switching);
      this.queue.unshift(item);
      this.queuedBytes += end - start;
      if (b.txStatus !== TX_IDLE) b.roleUncertain = true; // undone if the transaction rolls back
      b.runInternal(sql).then(
        () => {
          this.context.applied(b, want);
          // The client left during the switch: the connection waited for it, now it winds down.
          if (this.isClosed()) { this.abandonBackend(Phase.Linked); return; }
          if (this.phase !== Phase.Switching || this.backend !== b) return;
          this.enter(Phase.Linked);
          this.drainQueue(b);
        },
        (err: unknown) => {
          b.forgetContext();
          if (this.isClosed()) { this.abandonBackend(Phase.Linked); return; }
          if (this.phase !== Phase.Switching || this.backend !== b) return;
          this.enter(Phase.Linked);
          const failed = this.queue.shift();
          if (failed) this.queuedBytes -= failed.end - failed.start;
          const e = err instanceof SqlError ? err : new SqlError(SQLSTATE.INTERNAL_ERROR, String(err));
          this.log.warn({ role: want, err: e.message }, 'role switch failed');
          this.reject(new SqlError(SQLSTATE.INSUFFICIENT_PRIVILEGE, `scopegate could not switch to role "${want}": ${e.message}`), type !== FE.Query);
          this.drainQueue(b);
        },
      );
      return false;
    }
    if (type === FE.Query && !b.unsynced) {
      // Pipelined simple queries: wait until the server has answered what is in flight.
      this.enter(Phase.AwaitingQuiet);
      this.queue.unshift(item);
      this.queuedBytes += end - start;
      return false;
    }
    // Inside a pipelined extended batch: the switch goes through a portal of our own,
    // responses hidden. If it fails, the server skips the rest of the batch, the statement
    // included, and the context is treated as unknown.
    // The rest of the batch runs after the switch or not at all, so the new context is what
    // the following messages see; a failure or a rollback makes it unknown again.
    this.context.applied(b, want);
    b.roleUncertain = b.roleUncertain || b.txStatus !== TX_IDLE;
    b.roleInjected = true;
    this.noteUnnamedParse(b, null);
    this.sendOwn(b, parseMessage('', Buffer.from(`${sql}\0\0\0`, 'utf8')), true);
    this.sendOwn(b, BIND_ROLE_PORTAL, true);
    this.sendOwn(b, EXECUTE_ROLE_PORTAL, true, (ok) => {
      if (!ok) b.forgetContext();
    });
    this.sendOwn(b, CLOSE_ROLE_PORTAL, true);
    return true;
  }

  /**
   * With role logins a statement needs the server connection of its own role. Between
   * transactions the client moves to that pool; inside one (Postgres would refuse the
   * SET ROLE anyway) the statement is refused. Returns false when the message was queued
   * or answered.
   */
  private otherLoginRole(b: Backend, item: Queued, role: string | null): boolean {
    if (!b.unsynced && b.pendingSyncs !== 0) {
      // Whether a transaction is open once what is in flight has run is not known yet.
      this.flushRun();
      this.enter(Phase.AwaitingQuiet);
      this.queue.unshift(item);
      this.queuedBytes += item.end - item.start;
      return false;
    }
    if (!b.unsynced && b.txStatus === TX_IDLE) {
      this.flushRun();
      this.queue.unshift(item);
      this.queuedBytes += item.end - item.start;
      this.letGo(b);
      this.acquire();
      return false;
    }
    // An open transaction, or an extended batch not yet synced (one implicit transaction).
    this.reject(new SqlError(SQLSTATE.INSUFFICIENT_PRIVILEGE, `permission denied: this statement runs as role "${role ?? 'none'}", but the transaction logged in as "${b.db.user}"`, {
      hint: 'With server_login: role a transaction runs under one scope role: run statements of other scopes in a transaction of their own.',
    }), item.type !== FE.Query);
    return false;
  }

  /** Sends one client message to the attached backend, rewriting statement names. */
  private dispatch(b: Backend, type: number, buf: Buffer, start: number, end: number, stmt: ClientStatement | null, role: RoleChoice, fx: SessionEffects | null): void {
    // Messages queued before a revocation arrived are checked again as they leave.
    if (this.identity !== null && isStatementMessage(type)) {
      const revoked = this.ctx.gate.checkRevoked(this);
      if (revoked !== null) { this.closeWith(revoked); return; }
    }
    if (this.rolePools !== null && role !== undefined && (role ?? this.context.defaultRole) !== b.db.user) {
      if (!this.otherLoginRole(b, { type, buf, start, end, stmt, role, fx }, role)) return;
    }
    if (this.enforcing) {
      const want = this.context.needed(b, role);
      if (want !== undefined && !this.switchContext(b, type, buf, start, end, stmt, role, fx, want)) return;
    }
    if (stmt === null) this.unnamedOnBackend(b, type, buf, start);
    if (this.trackStatements) {
      if (type === FE.Parse) {
        if (stmt !== null) {
          if (b.prepared.has(stmt.serverName)) {
            if (b.pendingSyncs === 0 && !b.unsynced && this.runBuf === null) {
              // Nothing in flight, so this answer lands in order: no round trip.
              b.prepared.delete(stmt.serverName);
              b.prepared.set(stmt.serverName, 1);
              this.socket.write(PARSE_COMPLETE);
              return;
            }
            b.prepared.delete(stmt.serverName);
            b.uncertain.add(stmt.serverName);
          }
          ensurePrepared(b, stmt, this.statementLimit, this, false, this.statements);
          return;
        }
        if (buf[start + 5] !== 0) {
          // A named Parse forwarded as sent (Postgres will refuse its syntax): it must still
          // line up with its answer, but it does not touch the unnamed statement.
          b.pendingParses.push({ epoch: b.sendEpoch, serverName: null, owner: null, stmt: null });
        }
      } else if (type === FE.Bind || (type === FE.Describe && buf[start + 5] === 0x53)) {
        if (stmt !== null) {
          ensurePrepared(b, stmt, this.statementLimit, this, true, null);
          const nameStart = type === FE.Bind ? buf.indexOf(0, start + 5) + 1 : start + 6;
          this.sendOwn(b, renameStatement(buf, start, end, nameStart, buf.indexOf(0, nameStart), stmt.serverName), false);
          return;
        }
      } else if (type === FE.Query && this.forgetServerStatements) {
        this.forgetServerStatements = false;
        b.forgetPrepared();
      }
      if (type === FE.Parse && this.forgetServerStatements) {
        // DEALLOCATE ALL through the extended protocol runs at its Execute: whatever the
        // server holds by then is unknown, so every name is closed before it is parsed again.
        this.forgetServerStatements = false;
        b.forgetPrepared();
        b.forgetAtIdle = true;
        // The unnamed statement this Parse makes is still the client's own: a Bind that
        // follows must not "restore" a later one over it (that ran the later statement twice).
        if (buf[start + 5] === 0) b.unnamedOwner = this;
      }
    }
    if (type === FE.Query || type === FE.Execute) {
      this.pool!.counters.queries++;
      if (this.txStart < 0) this.txStart = performance.now();
    }
    b.noteSent(type, false, fx === null ? undefined : this.ledger.sent(b, fx));
    if (this.runBuf === buf && this.runEnd === start) {
      this.runEnd = end;
    } else {
      this.flushRun();
      this.runBuf = buf;
      this.runStart = start;
      this.runEnd = end;
    }
  }

  /**
   * The server's unnamed statement is whoever parsed last on that connection: a Parse makes
   * it this client's, and a Bind or Describe of it first restores this client's own when
   * another client's sits there (the gate refused it already if this client has none).
   */
  private unnamedOnBackend(b: Backend, type: number, buf: Buffer, start: number): void {
    if (type === FE.Parse) {
      if (buf[start + 5] === 0) this.noteUnnamedParse(b, this);
      else if (!this.trackStatements) b.namedOf = this;
      return;
    }
    const unnamed = type === FE.Bind ? buf[buf.indexOf(0, start + 5) + 1] === 0 : type === FE.Describe && buf[start + 5] === 0x53 && buf[start + 6] === 0;
    if (unnamed && b.unnamedOwner !== this && this.statements.unnamed !== null) {
      this.noteUnnamedParse(b, this);
      this.sendOwn(b, this.statements.unnamed.message, true);
    }
  }

  /**
   * Bookkeeping for an unnamed Parse about to be sent: every Parse gets a pending entry so
   * ParseComplete and errors line up, and the unnamed statement changes hands (`owner`
   * null: scopegate's own, which no client may bind).
   */
  private noteUnnamedParse(b: Backend, owner: ClientSession | null): void {
    b.pendingParses.push({ epoch: b.sendEpoch, serverName: null, owner: null, stmt: null });
    b.unnamedOwner = owner;
  }

  /** Sends a message outside the current run; `own` hides its answer from the client. */
  sendOwn(b: Backend, data: Buffer, own: boolean, onDone?: (ok: boolean) => void): void {
    this.flushRun();
    b.noteSent(data[0]!, own, onDone);
    b.write(data);
  }

  private flushRun(): void {
    if (this.runBuf === null) return;
    const data = this.runBuf.subarray(this.runStart, this.runEnd);
    this.runBuf = null;
    const b = this.backend;
    if (b && !b.write(data)) this.onServerBusy();
  }

  /** The server's socket buffer is full: read nothing more from the client until it drains. */
  onServerBusy(): void {
    const b = this.backend;
    if (b === null || this.clientPaused) return;
    this.clientPaused = true;
    this.socket.pause();
    b.socket.once('drain', () => {
      this.clientPaused = false;
      if (!this.isClosed()) this.socket.resume();
    });
  }

  private resumeClient(): void {
    if (this.clientPaused && !this.isClosed()) {
      this.clientPaused = false;
      this.socket.resume();
    }
  }

  private acquire(): void {
    // A closed session never borrows: its checkout would only be handed back.
    if (this.isClosed()) return;
    if (this.pendingBegin !== null) {
      // Hidden: the client saw its BEGIN answered already.
      this.queue.unshift({ type: FE.Query, buf: this.pendingBegin, start: 0, end: this.pendingBegin.length, stmt: null, role: undefined, fx: null, own: true });
      this.queuedBytes += this.pendingBegin.length;
      this.pendingBegin = null;
    }
    if (this.rolePools !== null) {
      const chosen = this.rolePool();
      if (chosen instanceof SqlError) { this.failQueued(chosen); return; }
      this.pool = chosen;
    }
    const pool = this.pool!;
    this.enter(Phase.Acquiring);
    this.requestedAt = Date.now();
    this.waitStart = performance.now();
    pool.checkout(this.onAcquired, this.onCheckoutFailed);
  }

  /** The pool of the role the queued transaction needs: its first statement's, else the default. */
  private rolePool(): DatabasePool | SqlError {
    const first = this.queue.find((q) => q.role !== undefined && q.own === undefined);
    const role = first?.role ?? this.context.defaultRole;
    const pool = role === null ? undefined : this.rolePools!.get(role);
    if (pool !== undefined) return pool;
    return new SqlError(SQLSTATE.INSUFFICIENT_PRIVILEGE, role === null ? 'permission denied: no scope role to log in as' : `permission denied: no server login for role "${role}"`, {
      hint: `With server_login: role every scope role needs an entry under databases.${this.database}.roles.`,
    });
  }

  private readonly onCheckoutFailed = (err: SqlError): void => {
    if (this.isClosed()) return;
    this.enter(Phase.Idle);
    this.failQueued(err);
  };

  private readonly onAcquired = (b: Backend): void => {
    const pool = this.pool!;
    if (this.isClosed()) {
      pool.releaseNow(b);
      return;
    }
    this.backend = b;
    b.attach(this);
    b.errorSinceIdle = false;
    const now = performance.now();
    const counters = pool.counters;
    counters.assignments++;
    if (this.waitStart >= 0) counters.wait.observe((now - this.waitStart) / 1000);
    this.waitStart = -1;
    this.txStart = now;
    const clear = this.clearing(b);
    const prep = this.preparation(b, clear);
    if (prep === null) {
      if (clear !== null) {
        // Ahead of the client's messages in the same write: it cannot fail on an idle
        // connection, and if it did, the connection is not trusted with anyone after.
        this.sendOwn(b, CLEAR_QUERIES.get(clear)!, true, (ok) => { if (!ok) b.requireClose(); });
        b.sequencesOf = null;
        b.namedOf = null;
      }
      // Nothing to bring over: the queued messages go out in this same tick.
      this.enter(Phase.Linked);
      this.drainQueue(b);
      return;
    }
    this.enter(Phase.Preparing);
    b.runInternal(prep.sql).then(
      () => {
        b.applied = new Map(this.ledger.settings);
        if (b.sequencesOf !== this) b.sequencesOf = null;
        if (b.namedOf !== this) b.namedOf = null;
        if (prep.want !== undefined) this.context.applied(b, prep.want);
        if (this.isClosed()) {
          this.abandonBackend(Phase.Linked);
          return;
        }
        this.enter(Phase.Linked);
        this.drainQueue(b);
      },
      (err: unknown) => {
        this.backend = null;
        const sqlErr = err instanceof SqlError ? err : new SqlError(SQLSTATE.INTERNAL_ERROR, String(err));
        // What the server kept of a failed preparation is unknown: reset before reuse.
        b.requireReset();
        if (b.broken) void pool.destroy(b);
        else void pool.release(b);
        if (this.isClosed()) return;
        if (prep.settings && this.ledger.asStarted && settingRefused(sqlErr)) {
          // A startup parameter the server will not take (unknown, a bad value, not settable):
          // Postgres refuses such a login; here every statement would fail the same way.
          this.closeWith(new SqlError(sqlErr.code, sqlErr.message, { severity: 'FATAL', hint: 'A startup parameter (or options=-c) that the server refused: remove it from the connection settings.' }));
          return;
        }
        this.enter(Phase.Idle);
        this.failQueued(sqlErr);
      },
    );
  };

  /**
   * What a freshly borrowed backend needs to act for this client: settings that differ and,
   * for the first statement, the role and claims (with `clear` ahead of them). Null when
   * nothing (the common case).
   */
  private preparation(b: Backend, clear: string | null): { sql: string; want: string | null | undefined; settings: boolean } | null {
    const stmts = settingsDiff(b.applied, this.ledger.settings);
    const settings = stmts.length !== 0;
    let want: string | null | undefined;
    if (this.enforcing) {
      const first = this.queue.find(hasRole);
      want = this.context.needed(b, first?.role);
      if (want !== undefined) stmts.push(this.context.statement(b, want));
    }
    if (stmts.length === 0) return null;
    // The round trip is paid anyway: what the last client left is cleared in it too.
    if (clear !== null) stmts.unshift(clear);
    // One statement a line: a recorded SET may end in a -- comment.
    return { sql: stmts.join('\n;\n'), want, settings };
  }

  /** What another client left that only the next one could see: its sequence values
   * (lastval, currval) and, untracked, its named statements. Null when nothing. */
  private clearing(b: Backend): string | null {
    const seq = b.sequencesOf !== null && b.sequencesOf !== this;
    const named = b.namedOf !== null && b.namedOf !== this;
    if (!seq && !named) return null;
    return seq && named ? 'DEALLOCATE ALL;\nDISCARD SEQUENCES' : seq ? 'DISCARD SEQUENCES' : 'DEALLOCATE ALL';
  }

  /** Answers queued messages with an error when no backend could be had; the client may retry. */
  private failQueued(err: SqlError): void {
    const queued = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    let sent = false;
    let inExtended = false;
    const out: Buffer[] = [];
    for (const q of queued) {
      if (q.type === FE.Query) {
        out.push(msg.errorResponse(err), msg.readyForQuery('I'));
        sent = true;
        inExtended = false;
      } else if (q.type === FE.Sync) {
        if (!sent || inExtended) out.push(msg.errorResponse(err));
        out.push(msg.readyForQuery('I'));
        sent = true;
        inExtended = false;
      } else {
        inExtended = true;
      }
    }
    if (inExtended) {
      out.push(msg.errorResponse(err));
      this.enter(Phase.SkippingToSync);
    }
    if (out.length > 0) this.socket.write(Buffer.concat(out));
    this.log.info({ err: err.message, code: err.code }, 'no server connection for client');
    this.resumeClient();
  }

  /**
   * Refuses a statement without letting it reach Postgres. Inside a transaction block the
   * server itself raises the error, so the transaction aborts exactly as Postgres would.
   */
  private reject(err: SqlError, extended: boolean): void {
    // A refusal runs as a statement of its own: the unnamed portal is no longer the client's.
    this.unnamedPortalBound = false;
    // Inside a BEGIN answered here: the refusal must fail a real transaction, as in Postgres.
    if (this.pendingBegin !== null && this.backend === null && !holdsMessages(this.phase)) this.acquire();
    const b = this.backend;
    if (holdsMessages(this.phase) || (b !== null && (b.txStatus !== TX_IDLE || b.unsynced || b.pendingSyncs > 0))) {
      const raise = raiseStatement(err);
      this.refusals.expect(err);
      if (!extended) {
        const m = msg.query(raise);
        this.forwardToBackend(FE.Query, m, 0, m.length);
        return;
      }
      // Parse, Bind and Execute of the DO block; only its error reaches the client.
      for (const data of [parseMessage('', Buffer.from(`${raise}\0\0\0`, 'utf8')), BIND_UNNAMED, EXECUTE_UNNAMED]) {
        if (holdsMessages(this.phase) || b === null) {
          this.queue.push({ type: data[0]!, buf: data, start: 0, end: data.length, stmt: null, role: undefined, fx: null, own: true });
        } else {
          if (data[0] === FE.Parse) this.noteUnnamedParse(b, null);
          this.sendOwn(b, data, true);
        }
      }
      return;
    }
    if (extended) {
      this.flushRun();
      this.socket.write(msg.errorResponse(err));
      this.enter(Phase.SkippingToSync);
    } else {
      this.socket.write(Buffer.concat([msg.errorResponse(err), msg.readyForQuery(b ? txChar(b.txStatus) : 'I')]));
    }
  }

  /**
   * The revocation list changed: if it names this session, it ends now rather than at its
   * next message. Nothing buffered here goes on (the run, the queue, unread input); a
   * statement on a server connection is cancelled and that connection killed, so nothing
   * already sent commits; an idle transaction is rolled back by the janitor. True if ended.
   */
  endIfRevoked(): boolean {
    // A login still under way is refused at its end (startup checks again): nothing to cut yet.
    if (this.phase === Phase.Closed || this.phase === Phase.Startup || this.phase === Phase.Authenticating || this.identity === null) return false;
    const revoked = this.ctx.gate.checkRevoked(this, true);
    if (revoked === null) return false;
    this.runBuf = null;
    this.queue = [];
    this.queuedBytes = 0;
    this.pendingBegin = null;
    const b = this.backend;
    const from = this.enter(Phase.Closed);
    let killed = false;
    // Acquiring, Preparing and Switching hand the connection on themselves (abandonBackend).
    if (b !== null && !b.idleWire && from !== Phase.Acquiring && from !== Phase.Preparing && from !== Phase.Switching) {
      this.backend = null;
      if (this.idleTxTimer) { clearTimeout(this.idleTxTimer); this.idleTxTimer = null; }
      this.ledger.abandoned(b);
      killAndClose(b, this.pool!, this.log);
      killed = true;
    }
    this.log.info({ sub: this.identity.sub, code: revoked.code, err: revoked.message, killed }, 'session ended: access revoked');
    this.socket.end(msg.errorResponse(revoked));
    this.abandonBackend(from);
    this.finish();
    return true;
  }

  /** Cancels the statement this client runs now, if any (CancelRequest from its key). */
  cancelRunning(): void {
    const b = this.backend;
    if (b !== null && (b.pendingSyncs > 0 || b.unsynced)) b.cancel();
  }

  // ---- backend -> client (BackendOwner) --------------------------------------------

  forward(buf: Buffer, start: number, end: number): boolean {
    if (this.refusals.active) {
      const shown = this.refusals.filter(buf, start, end);
      if (shown !== null) { buf = shown; start = 0; end = shown.length; }
    }
    // The server is still answering an unsynced batch: it is not idle.
    if (this.idleTxTimer !== null && this.unsyncedIdle) this.idleTxTimer.refresh();
    if (!this.socket.write(start === 0 && end === buf.length ? buf : buf.subarray(start, end)) && !this.backendPausedForClient) {
      this.backendPausedForClient = true;
      this.backend?.pause();
    }
    // Not all written at once: the socket keeps a view of these bytes until it is.
    return this.socket.writableLength !== 0;
  }

  onIdle(status: number): void {
    const b = this.backend;
    if (!b) return;
    if (status === TX_IDLE && (b.roleUncertain || b.roleInjected)) {
      // A context set inside a transaction block, or in a pipelined batch that failed, may
      // have been rolled back: set it afresh next time.
      if (b.roleUncertain || b.errorSinceIdle) {
        b.forgetContext();
      }
      b.roleUncertain = false;
      b.roleInjected = false;
    }
    if (status === TX_IDLE) {
      const counters = this.pool!.counters;
      counters.xacts++;
      if (this.txStart >= 0) counters.xactTime.observe((performance.now() - this.txStart) / 1000);
      // Session mode keeps the server: the next transaction is timed from its first message.
      this.txStart = -1;
      this.ledger.transactionEnded(b, !b.errorSinceIdle && !b.rolledBack);
      if (this.catalogStale) {
        this.catalogStale = false;
        if (this.route !== null) void this.route.catalog.refresh();
        else this.ctx.gate.refreshCatalog();
      }
      b.errorSinceIdle = false;
    }
    if (this.phase === Phase.AwaitingQuiet && b.idleWire) {
      this.enter(Phase.Linked);
      this.drainQueue(b);
      return;
    }
    if (status === TX_IDLE) {
      if (this.poolMode === 'transaction' && b.quiet && this.queue.length === 0 && this.runBuf === null) {
        this.letGo(b);
        if (this.ctx.shuttingDown) this.closeWith(new SqlError(SQLSTATE.ADMIN_SHUTDOWN, 'terminating connection: scopegate is shutting down', { severity: 'FATAL' }));
      }
      // A route removed by a reload drains: its clients leave as their transaction ends (session mode too).
      if (this.route?.draining && b.quiet && this.queue.length === 0 && this.runBuf === null) this.closeWith(this.route.removedError());
      return;
    }
    this.armIdleTimer(false);
  }

  /** The idle timer runs for a batch without Sync (no ReadyForQuery will start it). */
  private unsyncedIdle = false;

  /**
   * A client that sends Parse/Bind/Execute and then nothing holds its server connection with
   * no ReadyForQuery to come: idle_transaction_timeout counts from the last message either
   * side sent (the server's answers refresh it), as the server cannot say it is idle.
   */
  private watchUnsynced(): void {
    const b = this.backend;
    if (b !== null && b.unsynced && !b.copyIn && this.idleTxTimer === null && !this.isClosed()) this.armIdleTimer(true);
  }

  private armIdleTimer(unsynced: boolean): void {
    const timeout = this.ctx.config.pool.idle_transaction_timeout;
    if (timeout <= 0) return;
    this.unsyncedIdle = unsynced;
    this.idleTxTimer = setTimeout(() => {
      this.closeWith(new SqlError(SQLSTATE.IDLE_IN_TRANSACTION_TIMEOUT, `idle_transaction_timeout: transaction idle for more than ${timeout / 1000}s`, { severity: 'FATAL' }));
    }, timeout);
    this.idleTxTimer.unref();
  }

  /** Between transactions: `b` goes back to its pool and this client waits for its next message. */
  private letGo(b: Backend): void {
    this.backend = null;
    if (this.phase === Phase.Linked) this.enter(Phase.Idle);
    if (this.backendPausedForClient) { this.backendPausedForClient = false; b.resume(); }
    this.pool!.releaseNow(b);
  }

  onBackendLost(err: SqlError): void {
    const b = this.backend;
    this.backend = null;
    if (b) void this.pool!.destroy(b);
    if (err.code !== SQLSTATE.CONNECTION_FAILURE) {
      // The server broke a promise scopegate relies on (a pinned setting changed): fail closed.
      this.log.error({ audit: 'server_breach', sub: this.context.identity?.sub ?? null, err: err.message }, 'server connection closed: it no longer reads text as scopegate checked it');
      this.closeWith(err);
      return;
    }
    this.log.warn({ err: err.message }, 'server connection lost while in use');
    this.closeWith(new SqlError(SQLSTATE.CONNECTION_FAILURE, `server connection lost: ${err.message}`, { severity: 'FATAL' }));
  }

  // ---- teardown ---------------------------------------------------------------------

  /**
   * Between transactions: no backend, or (session mode) one with nothing in flight or queued.
   * A removed route (src/pool/routes.ts) closes such clients at once.
   */
  get betweenTransactions(): boolean {
    if (this.idle) return true;
    const b = this.backend;
    return b !== null && this.phase === Phase.Linked && b.quiet && this.queue.length === 0 && this.runBuf === null;
  }

  /** True while this client holds no backend (used by shutdown). */
  get idle(): boolean {
    return this.backend === null && !holdsMessages(this.phase);
  }

  private terminate(): void {
    // Terminate may end a chunk whose earlier messages are accounted for but not yet written.
    this.flushRun();
    this.abandonBackend(this.enter(Phase.Closed));
    this.socket.end();
    this.finish();
  }

  closeWith(err: SqlError): void {
    if (this.phase === Phase.Closed) return;
    this.flushRun();
    this.socket.end(msg.errorResponse(err));
    this.abandonBackend(this.enter(Phase.Closed));
    this.finish();
  }

  private fatal(err: unknown): void {
    const e = err instanceof SqlError ? err : new SqlError(SQLSTATE.INTERNAL_ERROR, (err as Error)?.message ?? String(err), { severity: 'FATAL' });
    if (!(err instanceof SqlError)) this.log.error({ err }, 'internal error');
    else this.log.info({ code: e.code, err: e.message }, 'closing client');
    this.closeWith(e.severity === 'FATAL' ? e : new SqlError(e.code, e.message, { severity: 'FATAL', hint: e.hint, detail: e.detail }));
  }

  private onClose(): void {
    if (this.phase !== Phase.Closed) this.abandonBackend(this.enter(Phase.Closed));
    this.finish();
  }

  /**
   * Gives the backend up after the client left. `from` is the phase the session was in:
   * while the pool or the preparation still works on it, their callbacks see Closed and
   * release it themselves.
   */
  private abandonBackend(from: Phase): void {
    if (this.idleTxTimer) { clearTimeout(this.idleTxTimer); this.idleTxTimer = null; }
    const b = this.backend;
    // Acquiring, Preparing and Switching run scopegate's own round trip on the connection:
    // its completion hands the connection on (to the janitor if the client has left).
    if (!b || from === Phase.Acquiring || from === Phase.Preparing || from === Phase.Switching) return;
    this.backend = null;
    this.ledger.abandoned(b);
    if (this.poolMode === 'session') b.requireReset();
    if (b.quiet) {
      this.pool!.releaseNow(b);
    } else {
      drainAndRelease(b, this.pool!, this.log);
    }
  }

  /** The one place the phase changes; returns the phase left. */
  private enter(next: Phase): Phase {
    const prev = this.phase;
    if (prev === Phase.Closed) return prev; // nothing leaves Closed
    this.phase = next;
    return prev;
  }

  private isClosed(): boolean {
    return this.phase === Phase.Closed;
  }

  private finished = false;
  /** The session has ended and told the server context so. */
  get ended(): boolean { return this.finished; }
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.framer.release();
    if (this.userSlot !== null) { this.ctx.releaseUserSlot(this.userSlot); this.userSlot = null; }
    if (this.loginTimer !== null) { clearTimeout(this.loginTimer); this.loginTimer = null; }
    if (this.pid) this.ctx.cancels.remove(this.pid, this);
    this.route?.detach(this);
    this.ctx.onClientClosed(this);
  }
}

function txChar(status: number): 'I' | 'T' | 'E' {
  return status === 0x54 ? 'T' : status === 0x45 ? 'E' : 'I';
}




/** A portal of scopegate's own for SET ROLE inside a pipelined batch. */
const BIND_ROLE_PORTAL = msg.bind('sg_role', '');
const EXECUTE_ROLE_PORTAL = msg.execute('sg_role');
const CLOSE_ROLE_PORTAL = msg.closePortal('sg_role');


/** Whether Postgres's parser accepts the text (cached per text by the policy module). */
const BIND_UNNAMED = msg.bind('', '');
const EXECUTE_UNNAMED = msg.execute('');

/** The message types a client may send once logged in (Postgres's SocketBackend list). */
function isFrontendType(type: number): boolean {
  switch (type) {
    case FE.Bind: case FE.Close: case FE.Describe: case FE.Execute: case FE.FunctionCall: case FE.Flush:
    case FE.Parse: case FE.Query: case FE.Sync: case FE.Terminate: case FE.CopyData: case FE.CopyDone: case FE.CopyFail:
      return true;
    default:
      return false;
  }
}

function unknownType(type: number): SqlError {
  return new SqlError(SQLSTATE.PROTOCOL_VIOLATION, `invalid frontend message type ${type} ('${String.fromCharCode(type)}')`, { severity: 'FATAL' });
}

/** Messages that run (or prepare) a statement: where a revocation takes effect. */
function isStatementMessage(type: number): boolean {
  return type === FE.Query || type === FE.Parse || type === FE.Bind || type === FE.Execute;
}

/** The queue's first message with a role of its own (a module-level predicate: no closure per checkout). */
function hasRole(q: Queued): boolean {
  return q.role !== undefined;
}

/** The server's answer to a SET of a startup parameter it does not take. */
function settingRefused(err: SqlError): boolean {
  // 42704 unrecognized parameter, 22023 invalid value, 55P02 cannot be changed now, 42501 not permitted to set.
  return err.code === SQLSTATE.UNDEFINED_OBJECT || err.code === SQLSTATE.INVALID_PARAMETER_VALUE || err.code === SQLSTATE.CANT_CHANGE_RUNTIME_PARAM || (err.code === SQLSTATE.INSUFFICIENT_PRIVILEGE && /parameter/.test(err.message));
}

/**
 * The largest Query or Parse message buffered at all: one a little past max_statement_size
 * is read whole and refused with 54000 (the session goes on); one far past it ends the
 * session from its header, so that N connections cannot each park max_packet_size bytes.
 */
function statementMessageCap(maxStatementSize: number): number {
  return 2 * maxStatementSize + 512 * 1024;
}
