/** One logged-in server connection: frames the server's stream, tracks its transaction state, hands answers to its owner. */
import type { Socket } from 'node:net';
import { connectServer } from './connect.js';
import type { DatabaseConfig } from '../config.js';
import { SqlError, SQLSTATE } from '../errors.js';
import { BE, FE, TX_IDLE } from '../protocol/codes.js';
import { cancelRequest, copyFail, parseErrorFields, query, TERMINATE } from '../protocol/messages.js';

const INTERNAL_COPY_REFUSED = copyFail('');
import { login } from './login.js';
import type { ServerReads } from './server-reads.js';
import { lexicalBreach } from '../policy/lexical.js';
import type { PendingParse } from './statement-types.js';
import { ResponseQueue } from './responses.js';

/** What a backend hands its responses to while a client has it checked out. */
export interface BackendOwner {
  /**
   * Forward buf[start, end) to the client as it is. The bytes may be overwritten after the
   * call (a reusable read buffer): true when the owner still holds them (its write was
   * buffered), so they are not read over.
   */
  forward(buf: Buffer, start: number, end: number): boolean;
  /** A ReadyForQuery arrived and every Query/Sync sent so far has been answered. */
  onIdle(status: number): void;
  /** The connection to the server broke while this owner held it. */
  onBackendLost(err: SqlError): void;
  /** Held writes went out and the server's socket buffer is full: stop feeding it until 'drain'. */
  onServerBusy?(): void;
}

// Messages up to this size are gathered whole before they are looked at; larger ones
// (big rows, COPY data) stream through in pieces and are never buffered.
const GATHER_LIMIT = 16 * 1024;

const enum Mode { Idle, Client, Internal }

/** A value no role name can have: the next statement must set its role afresh. */
export const ROLE_UNKNOWN = '\0unknown';

interface InternalQuery {
  resolve: () => void;
  reject: (err: SqlError) => void;
  error: SqlError | null;
}

let nextBackendId = 1;

/**
 * One logged-in server connection. Frames the server's byte stream just enough to find
 * message boundaries, ReadyForQuery and ParameterStatus; rows pass through untouched.
 */
/** What a server connection needs before another client may have it, in increasing order. */
export const enum Cleanup { None = 0, Reset = 1, Close = 2 }

export class Backend {
  readonly id = nextBackendId++;
  readonly createdAt = Date.now();
  lastUsed = Date.now();
  broken = false;
  /** Transaction status from the last ReadyForQuery: 'I', 'T' or 'E' as a byte. */
  txStatus = TX_IDLE;
  private syncsOwed = 0;
  private extendedOpen = false;
  private epochSent = 0;
  /** Query and Sync messages sent whose ReadyForQuery has not come back yet. */
  get pendingSyncs(): number { return this.syncsOwed; }
  /** Extended-protocol messages were sent after the last Sync. */
  get unsynced(): boolean { return this.extendedOpen; }
  /** An extended-protocol request failed and no Sync has been sent since: the server
   * discards every message until it gets one, so nothing sent now is answered. */
  private discarding = false;
  /** The server is in COPY FROM STDIN and waits for CopyData/CopyDone/CopyFail. */
  copyIn = false;
  /** A CopyDone or CopyFail went out during this COPY: the server reads what follows it
   * normally (a Sync after it is answered). */
  private copyEndSent = false;
  /** CopyDone and CopyFail messages sent so far, and CopyData messages (they order COPY
   * messages against requests in flight), and whether CopyData went out during this COPY. */
  private copyEndsSent = 0;
  private copyDataSent = 0;
  private copyDataInCopy = false;
  /** An ErrorResponse arrived since the last idle ReadyForQuery. */
  errorSinceIdle = false;
  private cleanupNeeded: Cleanup = Cleanup.None;
  /** What must happen before another client may use this connection; it only escalates until done. */
  get cleanup(): Cleanup { return this.cleanupNeeded; }
  /** Session state changed in a way only server_reset_query undoes. */
  requireReset(): void { if (this.cleanupNeeded < Cleanup.Reset) this.cleanupNeeded = Cleanup.Reset; }
  /** Session state changed in a way no reset undoes (the random seed, an unknown lexical setting): close it. */
  requireClose(): void { this.cleanupNeeded = Cleanup.Close; }
  /** server_reset_query ran: the connection is as a fresh login left it. */
  resetDone(): void { if (this.cleanupNeeded === Cleanup.Reset) this.cleanupNeeded = Cleanup.None; }
  /** The client whose statements may have advanced sequences here since the last reset:
   * lastval()/currval() would show its values to the next one, so they are discarded first. */
  sequencesOf: BackendOwner | null = null;
  /** The client whose named statements the server holds under their own names
   * (max_prepared_statements 0): deallocated before another client may bind them. */
  namedOf: BackendOwner | null = null;
  /** A CommandComplete "ROLLBACK" (ROLLBACK, ROLLBACK TO, or COMMIT of a failed
   * transaction) arrived since the last idle ReadyForQuery. */
  rolledBack = false;
  /** Settings applied on behalf of the client that last held it: name -> SET statement. */
  applied = new Map<string, string>();
  private roleNow: string | null = null;
  private claimsOf = '';
  /** Role set with SET ROLE, null for the login role, ROLE_UNKNOWN when not known. */
  get role(): string | null { return this.roleNow; }
  /** A role was switched inside a transaction block that may still roll back. */
  roleUncertain = false;
  /** A role was switched inside a pipelined batch: an error in it undoes the switch. */
  roleInjected = false;
  /** Whose claims scopegate.claims holds: a client's token hash, '' for none, ROLE_UNKNOWN. */
  get contextKey(): string { return this.claimsOf; }

  /** The server now runs as `role` with the claims of `key` (after scopegate set them). */
  setContext(role: string | null, key: string): void {
    this.roleNow = role;
    this.claimsOf = key;
  }

  /** Role and claims on the server are not known: the next statement sets them afresh. */
  forgetContext(): void {
    this.roleNow = ROLE_UNKNOWN;
    this.claimsOf = ROLE_UNKNOWN;
  }
  /** Cancel requests sent for this backend that have not completed. */
  cancelsInFlight = 0;
  private cancelWaiters: Array<() => void> = [];
  /** Server statement names this server holds, least recently used first. */
  readonly prepared = new Map<string, number>();
  /** Names whose Parse failed or was skipped after an error: Close before parsing again. */
  readonly uncertain = new Set<string>();
  /** Parses sent whose ParseComplete (or error) has not arrived, oldest first. */
  pendingParses: PendingParse[] = [];
  /** Requests in flight, in order, marking those scopegate sent on its own. */
  readonly responses = new ResponseQueue();
  /** Sync/Query messages sent, and ReadyForQuery received: a message sent while sendEpoch is
   * k gets its response while recvEpoch is k. */
  get sendEpoch(): number { return this.epochSent; }
  recvEpoch = 0;
  /** The client whose unnamed statement this server holds. */
  unnamedOwner: object | null = null;
  /** Evictions (Close) sent whose outcome is not known yet: an error before them skips them. */
  pendingEvictions: Array<{ epoch: number; name: string }> = [];
  /** A DEALLOCATE ALL is in flight: forget the statement map again once it has run. */
  forgetAtIdle = false;

  /** Marks every statement as maybe-present: the next use closes it, then parses it again. */
  forgetPrepared(): void {
    for (const name of this.prepared.keys()) this.uncertain.add(name);
    this.prepared.clear();
    this.unnamedOwner = null;
  }

  owner: BackendOwner | null = null;
  private mode = Mode.Idle;
  private internal: InternalQuery | null = null;
  private partial: Buffer | null = null;
  private streamLeft = 0;
  private streamForward = false;
  private paused = false;
  /** The server reported a pinned setting with another value: nothing more is forwarded. */
  private breach: SqlError | null = null;

  private constructor(
    readonly db: DatabaseConfig,
    readonly socket: Socket,
    readonly pid: number,
    readonly secret: number,
    readonly params: Map<string, string>,
    private readonly reads: ServerReads | null,
  ) {
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    if (reads !== null) reads.sink = (chunk: Buffer) => this.onData(chunk);
    else socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.lost(new SqlError(SQLSTATE.CONNECTION_FAILURE, `server connection failed: ${err.message}`)));
    socket.on('close', () => this.lost(new SqlError(SQLSTATE.CONNECTION_FAILURE, 'server closed the connection unexpectedly')));
  }

  static async connect(db: DatabaseConfig, timeoutMs: number): Promise<Backend> {
    const r = await login(db, timeoutMs, {}, true);
    return new Backend(db, r.socket, r.pid, r.secret, r.params, r.reads);
  }

  attach(owner: BackendOwner): void {
    this.owner = owner;
    this.mode = Mode.Client;
    this.lastUsed = Date.now();
    // A pause belonged to the previous owner's slow reader. The janitor takes over a backend
    // whose client left mid-result without detach(): still paused, it would never read the
    // server's answer to its cancel (Postgres blocked in a write does not act on a cancel
    // until the write completes) and would hold the pool slot until the drain timeout.
    this.resume();
  }

  /**
   * Accounts for one message written to the server on an owner's behalf: the one place the
   * count of answers owed is kept. `own` hides its answer; `onDone` hears if it completed.
   */
  noteSent(type: number, own: boolean, onDone?: (ok: boolean) => void): void {
    if (this.discarding && type !== FE.Sync) {
      // The server drops everything up to the next Sync (after an extended-protocol error):
      // no answer will come, so none is awaited, and a Query does not start an epoch.
      for (const e of this.pendingEvictions) if (e.epoch === this.epochSent) this.uncertain.add(e.name);
      this.pendingEvictions = this.pendingEvictions.filter((e) => e.epoch !== this.epochSent);
      if (type !== FE.CopyData && type !== FE.CopyDone && type !== FE.CopyFail) this.extendedOpen = true;
      onDone?.(false);
      return;
    }
    if (this.copyIn && !this.copyEndSent && type !== FE.Sync && type !== FE.Flush && type !== FE.CopyData && type !== FE.CopyDone && type !== FE.CopyFail) {
      // The server errors out of COPY on it and consumes it: what it answers next is no
      // longer known here. The connection is not trusted with anything more.
      this.unfollowable('a request was sent during COPY FROM STDIN');
    }
    switch (type) {
      case FE.Query:
        // PostgreSQL 18.4 runs a simple Query inside an unsynced extended batch, but leaves its
        // transaction state wrong: the connection's next statement fails with XX000
        // ("StartTransactionCommand: unexpected state STARTED"). Never another client's.
        if (this.extendedOpen) this.requireClose();
        this.syncsOwed++;
        this.epochSent++;
        this.responses.push(type, own, onDone, this.copyEndsSent, this.copyDataSent);
        break;
      case FE.Sync:
        this.discarding = false;
        // The server ignores Sync while it is in COPY FROM STDIN; but CopyData may have
        // failed the COPY before the Sync arrives, and then it is answered; and a COPY begun by
        // Execute, once it fails, skips to a Sync after this one. Not followable either way.
        if (this.copyIn && !this.copyEndSent) this.unfollowable(this.copyDataInCopy ? 'a Sync was sent inside COPY FROM STDIN after CopyData' : 'a Sync was sent inside COPY FROM STDIN');
        if (!this.copyIn || this.copyEndSent) {
          this.syncsOwed++;
          this.epochSent++;
          this.responses.push(type, own, onDone, this.copyEndsSent, this.copyDataSent);
        }
        this.extendedOpen = false;
        break;
      case FE.CopyDone: case FE.CopyFail:
        // The server leaves COPY when it reads this: a Sync after it is answered.
        this.copyEndsSent++;
        if (this.copyIn) this.copyEndSent = true;
        break;
      case FE.CopyData:
        this.copyDataSent++;
        if (this.copyIn) this.copyDataInCopy = true;
        break;
      case FE.Flush:
        this.extendedOpen = true;
        break;
      default:
        this.extendedOpen = true;
        this.responses.push(type, own, onDone, this.copyEndsSent, this.copyDataSent);
    }
  }

  /**
   * What the server will answer can no longer be matched to what was sent: the client gets
   * a FATAL error and the connection is closed, never reused. (Only a client breaking the
   * COPY sub-protocol gets here; PostgreSQL itself would just fail the COPY.)
   */
  private unfollowable(why: string): void {
    if (this.broken) return;
    this.requireClose();
    process.nextTick(() => this.lost(new SqlError(SQLSTATE.CONNECTION_FAILURE, `closed by scopegate: ${why}`)));
  }

  detach(): void {
    this.responses.clear();
    this.owner = null;
    if (this.mode === Mode.Client) this.mode = Mode.Idle;
    if (this.paused) this.resume();
  }

  write(buf: Buffer): boolean {
    // A Flush with a body fails on the server and starts a skip to Sync, but it has no
    // answer of its own to pin that error to: the answers would be misread from then on.
    for (let off = 0; off + 5 <= buf.length; off += 1 + buf.readInt32BE(off + 1)) {
      if (buf[off] === FE.Flush && buf.readInt32BE(off + 1) !== 4) { this.unfollowable('a malformed Flush message'); break; }
      if (buf.readInt32BE(off + 1) < 4) break;
    }
    return this.send(buf);
  }

  /** Writes held by hold(): the first, and any after it. */
  private heldFirst: Buffer | null = null;
  private heldRest: Buffer[] | null = null;
  private holds = 0;

  /**
   * Collects what is written until the matching release(), which sends it in one write: the
   * session holds while it works through a chunk of client input, so a role switch, a
   * restored statement and the client's own messages reach the server together. (What
   * socket.cork() did, without a buffered request object per write.)
   */
  hold(): void {
    this.holds++;
  }

  release(): void {
    if (this.holds === 0 || --this.holds !== 0) return;
    this.sendHeld();
  }

  private sendHeld(): void {
    const first = this.heldFirst;
    if (first === null) return;
    const rest = this.heldRest;
    this.heldFirst = null;
    this.heldRest = null;
    if (this.socket.destroyed) return;
    // Usually one buffer: sent as it is, no copy.
    const data = rest === null ? first : Buffer.concat([first, ...rest]);
    if (!this.socket.write(data)) this.owner?.onServerBusy?.();
  }

  /** Every write to the server goes through here, so held bytes keep their order. */
  private send(buf: Buffer): boolean {
    if (this.holds === 0) return this.socket.write(buf);
    if (this.heldFirst === null) this.heldFirst = buf;
    else (this.heldRest ??= []).push(buf);
    return true;
  }

  pause(): void {
    if (!this.paused) { this.paused = true; this.socket.pause(); }
  }

  resume(): void {
    if (this.paused) { this.paused = false; this.socket.resume(); }
  }

  /** Nothing sent is still waiting for its answer (a transaction may be open). */
  get idleWire(): boolean {
    return this.pendingSyncs === 0 && !this.unsynced && !this.copyIn;
  }

  /** True when the server is idle outside any transaction with nothing in flight. */
  get quiet(): boolean {
    return this.pendingSyncs === 0 && !this.unsynced && this.txStatus === TX_IDLE && !this.copyIn;
  }

  /**
   * Runs a statement on scopegate's own account and swallows its results. Only valid while
   * nothing else is in flight on this backend.
   */
  runInternal(sql: string): Promise<void> {
    if (this.broken) return Promise.reject(new SqlError(SQLSTATE.CONNECTION_FAILURE, 'server connection is gone'));
    if (this.pendingSyncs !== 0 || this.internal) {
      return Promise.reject(new SqlError(SQLSTATE.INTERNAL_ERROR, 'internal query while the server is busy'));
    }
    return new Promise((resolve, reject) => {
      this.internal = { resolve, reject, error: null };
      this.mode = Mode.Internal;
      this.syncsOwed = 1;
      this.send(query(sql));
    });
  }

  /** Sends a CancelRequest for whatever this backend runs now, on a fresh connection. */
  cancel(): void {
    this.cancelsInFlight++;
    const done = (): void => {
      if (--this.cancelsInFlight === 0) {
        const waiters = this.cancelWaiters;
        this.cancelWaiters = [];
        for (const w of waiters) w();
      }
    };
    // Over TLS when logins are (server_tls): the cancel key is a secret of the server's too.
    let sock: Socket | null = null;
    let settled = false;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      done();
    };
    const timer = setTimeout(() => { sock?.destroy(); finish(); }, 10_000);
    connectServer(this.db, (s) => { sock = s; s.on('error', () => undefined); }).then((s) => {
      s.on('close', finish);
      s.end(cancelRequest(this.pid, this.secret));
    }, finish);
  }

  /** Resolves once no cancel for this backend is still on its way to the server. */
  cancelsSettled(): Promise<void> {
    if (this.cancelsInFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.cancelWaiters.push(resolve));
  }

  close(): void {
    if (!this.socket.destroyed) {
      this.broken = true;
      // As end() sent corked bytes first: what was held goes ahead of the Terminate.
      this.holds = 0;
      this.sendHeld();
      this.socket.end(TERMINATE);
      this.socket.destroy();
    }
  }

  private lost(err: SqlError): void {
    if (this.broken && !this.owner && !this.internal) return;
    this.broken = true;
    this.socket.destroy();
    const internal = this.internal;
    this.internal = null;
    if (internal) internal.reject(err);
    const owner = this.owner;
    this.owner = null;
    this.mode = Mode.Idle;
    if (owner) owner.onBackendLost(err);
  }

  /** Hands bytes of this chunk to the owner; if its write keeps a view of the read buffer, the next read gets a fresh one. */
  private pass(buf: Buffer, start: number, end: number): void {
    const r = this.reads;
    if (this.owner!.forward(buf, start, end) && r !== null && r.holds(buf)) r.lend();
  }

  private onData(chunk: Buffer): void {
    let buf = chunk;
    let off = 0;
    if (this.streamLeft > 0) {
      const take = Math.min(this.streamLeft, buf.length);
      if (this.streamForward && this.owner) this.pass(buf, 0, take);
      this.streamLeft -= take;
      off = take;
      if (off === buf.length) return;
    }
    if (this.partial !== null) {
      buf = Buffer.concat([this.partial, off === 0 ? buf : buf.subarray(off)]);
      this.partial = null;
      off = 0;
    }
    const n = buf.length;
    let runStart = -1;
    while (off < n) {
      if (n - off < 5) {
        this.partial = Buffer.from(buf.subarray(off));
        break;
      }
      const type = buf[off]!;
      const end = off + 1 + buf.readInt32BE(off + 1);
      if (end > n) {
        if (end - off <= GATHER_LIMIT) {
          // A reusable read buffer is overwritten by the next read: the unfinished tail is copied.
          this.partial = this.reads !== null ? Buffer.from(buf.subarray(off)) : buf.subarray(off);
          break;
        }
        // A large message: decide by its type, pass what we have, stream the rest.
        const fwd = this.mode === Mode.Client && this.owner !== null;
        if (type === BE.ErrorResponse) this.errorSinceIdle = true;
        if (fwd && runStart < 0) runStart = off;
        this.streamForward = fwd;
        this.streamLeft = end - n;
        off = n;
        break;
      }
      if (this.mode === Mode.Client) {
        const own = (this.responses.length !== 0 || this.pendingParses.length !== 0) && this.trackResponse(type);
        if (own) {
          // An answer to scopegate's own request: the client never sees it.
          if (runStart >= 0) this.pass(buf, runStart, off);
          runStart = -1;
          off = end;
          if (type === BE.ReadyForQuery) this.onReady(buf[end - 1]!);
          continue;
        }
        if (type === BE.ReadyForQuery) {
          if (runStart < 0) runStart = off;
          this.pass(buf, runStart, end);
          runStart = -1;
          off = end;
          this.onReady(buf[end - 1]!);
          continue;
        }
        this.inspect(type, buf, off, end);
        if (this.breach !== null) {
          // What follows was read by the server under other rules than scopegate checked.
          if (runStart >= 0 && this.owner) this.pass(buf, runStart, off);
          this.lost(this.breach);
          return;
        }
        if (runStart < 0) runStart = off;
      } else if (this.mode === Mode.Internal) {
        this.internalMessage(type, buf, off, end);
      } else {
        this.idleMessage(type, buf, off, end);
      }
      if (this.breach !== null) return;
      off = end;
    }
    if (runStart >= 0 && this.owner) this.pass(buf, runStart, off);
  }

  private inspect(type: number, buf: Buffer, start: number, end: number): void {
    switch (type) {
      case BE.ErrorResponse:
        this.errorSinceIdle = true;
        this.copyIn = false;
        this.copyEndSent = false;
        this.copyDataInCopy = false;
        if (this.prepared.size !== 0 && isStalePlanError(buf, start, end)) {
          // A table changed under a prepared statement: parse everything afresh on next use.
          this.forgetPrepared();
        }
        break;
      case BE.CopyInResponse: {
        // Requests sent before this arrived reached the server inside the COPY, unless a
        // CopyDone/CopyFail went ahead of them.
        const { syncsRemoved, requestInCopy } = this.responses.copyInStarted();
        if (syncsRemoved !== 0) {
          // Ignored Syncs: no ReadyForQuery is owed for them, and they start no epoch.
          const base = this.recvEpoch + (this.responses.headType() === FE.Query ? 1 : 0);
          this.syncsOwed -= syncsRemoved;
          this.epochSent -= syncsRemoved;
          for (const p of this.pendingParses) if (p.epoch > base) p.epoch -= syncsRemoved;
          for (const e of this.pendingEvictions) if (e.epoch > base) e.epoch -= syncsRemoved;
        }
        if (requestInCopy) this.unfollowable('a request was sent during COPY FROM STDIN');
        this.copyIn = true;
        this.copyEndSent = this.copyEndsSent !== this.responses.headMark();
        this.copyDataInCopy = this.copyDataSent !== this.responses.headDataMark();
        break;
      }
      case BE.CommandComplete:
        // 'ROLLBACK' is the tag of ROLLBACK, ROLLBACK TO SAVEPOINT and a COMMIT that failed.
        if (end - start >= 13 && buf[start + 5] === 0x52 && buf[start + 6] === 0x4f && buf.toString('latin1', start + 5, start + 13) === 'ROLLBACK') this.rolledBack = true;
        break;
      case BE.ParameterStatus: {
        const k = buf.indexOf(0, start + 5);
        if (k > 0 && k < end) {
          const name = buf.toString('utf8', start + 5, k);
          const value = buf.toString('utf8', k + 1, end - 1);
          this.params.set(name, value);
          this.breach ??= lexicalBreach(name, value);
        }
        break;
      }
    }
  }

  /**
   * Bookkeeping for requests in flight: confirms or fails pending Parses, and returns true
   * when this response answers a request the client never sent.
   */
  private trackResponse(type: number): boolean {
    if (type !== BE.ErrorResponse) {
      if (type === BE.ParseComplete && this.pendingParses.length !== 0) this.pendingParses.shift();
      return this.responses.onResponse(type);
    }
    const own = this.responses.onResponse(type);
    const skipped = this.responses.takeSkipped();
    // The server skips everything up to the next Sync: what was sent in this epoch failed,
    // and so did what was sent after Query messages it skips too (each began an epoch here).
    const epoch = this.recvEpoch;
    const last = epoch + (skipped?.queries ?? 0);
    if (this.pendingEvictions.length !== 0) {
      for (const e of this.pendingEvictions) if (e.epoch >= epoch && e.epoch <= last) this.uncertain.add(e.name);
      this.pendingEvictions = this.pendingEvictions.filter((e) => e.epoch < epoch || e.epoch > last);
    }
    while (this.pendingParses.length !== 0 && this.pendingParses[0]!.epoch <= last) this.failParse(this.pendingParses.shift()!);
    if (skipped !== null && skipped.queries !== 0) {
      // Those Queries get no ReadyForQuery: they neither count as owed nor start epochs.
      const n = skipped.queries;
      this.syncsOwed = Math.max(0, this.syncsOwed - n);
      this.epochSent -= n;
      for (const p of this.pendingParses) if (p.epoch > last) p.epoch -= n;
      for (const e of this.pendingEvictions) if (e.epoch > last) e.epoch -= n;
    }
    if (skipped !== null && skipped.untilUnsentSync && this.extendedOpen) this.discarding = true;
    return own;
  }

  /** A Parse that got no ParseComplete: its name is not on the server (or not known to be). */
  private failParse(p: PendingParse): void {
    if (p.serverName !== null) {
      this.prepared.delete(p.serverName);
      this.uncertain.add(p.serverName);
    }
    if (p.owner !== null && p.stmt !== null) p.owner.dropIfSame(p.stmt);
  }

  private onReady(status: number): void {
    // Nothing sent before this ReadyForQuery's Sync or Query is answered after it: a Parse
    // still pending was skipped by the server (sent while it discarded up to a Sync).
    while (this.pendingParses.length !== 0 && this.pendingParses[0]!.epoch <= this.recvEpoch) this.failParse(this.pendingParses.shift()!);
    this.recvEpoch++;
    if (this.pendingEvictions.length !== 0) this.pendingEvictions = this.pendingEvictions.filter((e) => e.epoch >= this.recvEpoch);
    if (this.forgetAtIdle && this.pendingSyncs <= 1) {
      this.forgetAtIdle = false;
      this.forgetPrepared();
    }
    this.txStatus = status;
    this.copyIn = false;
    this.copyEndSent = false;
    this.copyDataInCopy = false;
    if (this.syncsOwed > 0) this.syncsOwed--;
    if (this.pendingSyncs === 0 && this.owner) this.owner.onIdle(status);
    if (status === TX_IDLE && this.pendingSyncs === 0) this.rolledBack = false;
  }

  private internalMessage(type: number, buf: Buffer, start: number, end: number): void {
    const q = this.internal;
    if (!q) return;
    if (type === BE.ErrorResponse) {
      const f = parseErrorFields(buf, start, end);
      q.error = new SqlError(f.get('C') ?? SQLSTATE.INTERNAL_ERROR, f.get('M') ?? 'internal query failed', { detail: f.get('D'), hint: f.get('H') });
    } else if (type === BE.ParameterStatus) {
      this.inspect(type, buf, start, end);
      if (this.breach !== null) this.lost(this.breach);
    } else if (type === BE.CopyInResponse) {
      // Internal statements never COPY; refuse so the server returns to ReadyForQuery.
      this.send(INTERNAL_COPY_REFUSED);
    } else if (type === BE.ReadyForQuery) {
      this.txStatus = buf[end - 1]!;
      this.syncsOwed = 0;
      this.internal = null;
      this.mode = this.owner ? Mode.Client : Mode.Idle;
      if (q.error) q.reject(q.error);
      else q.resolve();
    }
  }

  private idleMessage(type: number, buf: Buffer, start: number, end: number): void {
    if (type === BE.ErrorResponse) {
      // Only a FATAL arrives unasked (admin shutdown, pg_terminate_backend, idle timeout).
      this.broken = true;
      this.socket.destroy();
    } else if (type === BE.ParameterStatus) {
      this.inspect(type, buf, start, end);
      if (this.breach !== null) this.lost(this.breach);
    }
  }
}

/** 0A000 "cached plan must not change result type": the server's statement is stale. */
function isStalePlanError(buf: Buffer, start: number, end: number): boolean {
  const f = parseErrorFields(buf, start, end);
  return f.get('C') === '0A000' && (f.get('M') ?? '').startsWith('cached plan must not change result type');
}
