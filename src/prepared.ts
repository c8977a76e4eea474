import { createHash } from 'node:crypto';
import type { Backend } from './backend/backend.js';
import { BE, FE } from './protocol/codes.js';
import { SqlError, SQLSTATE } from './errors.js';
import type { BindCheck } from './policy/index.js';

export const NO_CHECKS: readonly BindCheck[] = Object.freeze([]);


/**
 * Prepared statements across transaction pooling.
 *
 * A client's statement names map to proxy-chosen server names derived from a hash of the
 * query text and parameter types, so clients preparing the same text share one server
 * statement, and two clients using "S_1" for different texts never collide. Each backend
 * remembers which server names it holds (LRU-bounded); a Bind or Describe for a statement
 * the borrowed backend lacks gets its Parse sent first, in the same write, and the extra
 * ParseComplete is swallowed.
 */

/** One statement a client prepared, as scopegate will (re-)prepare it on any backend. */
export interface ClientStatement {
  readonly name: string;
  readonly serverName: string;
  /** A complete Parse message carrying `serverName`. */
  readonly parse: Buffer;
  readonly sql: string;
  /** Policy version the statement was checked under ('' when no policy). */
  checkedVersion: string;
  /** The text the server prepares: the client's, or the policy's rewrite of it. */
  sentSql: string;
  /** Role chosen by the policy for this statement (undefined: no policy). */
  role: string | null | undefined;
}

/** A Parse that went to the server and whose ParseComplete or error has not come back. */
export interface PendingParse {
  epoch: number;
  serverName: string | null;
  /** The client's own Parse: on failure the client's name mapping is dropped too. */
  owner: ClientStatements | null;
  stmt: ClientStatement | null;
}

export const PARSE_COMPLETE = Buffer.from([BE.ParseComplete, 0, 0, 0, 4]);
/** Close of a name no server statement has: the server answers CloseComplete in order. */
export const CLOSE_NOTHING = closeStatement('sg_closed');

/** The statements of one client. */
export class ClientStatements {
  readonly byName = new Map<string, ClientStatement>();
  /** The client's last unnamed Parse, to restore it on a backend that lost it. */
  unnamed: Buffer | null = null;
  /** The role the policy chose for the unnamed statement. */
  unnamedRole: string | null | undefined = undefined;
  /** Row-filter checks on parameter values, by statement name ('' = unnamed). */
  private readonly checks = new Map<string, readonly BindCheck[]>();

  get hasChecks(): boolean {
    return this.checks.size !== 0;
  }

  setChecks(name: string, checks: readonly BindCheck[]): void {
    if (checks.length === 0) this.checks.delete(name);
    else this.checks.set(name, checks);
  }

  /**
   * Verifies that a Bind writes only rows inside the client's row filter: each checked
   * parameter must be sent as text and be one of the allowed values.
   */
  checkBind(buf: Buffer, start: number, end: number): SqlError | null {
    const portalEnd = buf.indexOf(0, start + 5);
    const nameEnd = buf.indexOf(0, portalEnd + 1);
    if (portalEnd < 0 || nameEnd < 0 || nameEnd >= end) return null; // malformed: the server says so
    const checks = this.checks.get(buf.toString('utf8', portalEnd + 1, nameEnd));
    if (checks === undefined) return null;
    let off = nameEnd + 1;
    const nFormats = buf.readInt16BE(off);
    const formats: number[] = [];
    for (let i = 0; i < nFormats; i++) formats.push(buf.readInt16BE(off + 2 + 2 * i));
    off += 2 + 2 * nFormats;
    const nParams = buf.readInt16BE(off);
    off += 2;
    const values: Array<string | null> = [];
    for (let i = 0; i < nParams && off + 4 <= end; i++) {
      const len = buf.readInt32BE(off);
      off += 4;
      const format = nFormats === 0 ? 0 : nFormats === 1 ? formats[0]! : formats[i] ?? 0;
      if (len < 0) values.push(null);
      else values.push(format === 0 ? buf.toString('utf8', off, off + len) : '\0binary');
      if (len > 0) off += len;
    }
    for (const c of checks) {
      const v = values[c.param - 1];
      if (v === undefined || v === null || v === '\0binary' || !c.allowed.includes(v)) {
        return new SqlError(SQLSTATE.INSUFFICIENT_PRIVILEGE, `permission denied: write outside row filter (${c.column} = ${v === '\0binary' ? 'binary value' : v === null || v === undefined ? 'NULL' : JSON.stringify(v)})`, {
          hint: 'Rows may only be written inside the row filter of your scopes; send the value as text.',
        });
      }
    }
    return null;
  }

  add(name: string, sql: string, tail: Buffer): ClientStatement {
    const stmt: ClientStatement = { name, serverName: serverNameFor(tail), parse: parseMessage(serverNameFor(tail), tail), sql, checkedVersion: '', sentSql: sql, role: undefined };
    this.byName.set(name, stmt);
    return stmt;
  }

  dropIfSame(stmt: ClientStatement): void {
    if (this.byName.get(stmt.name) === stmt) this.byName.delete(stmt.name);
  }
}

/** sg_ + 20 characters of the SHA-256 of query text and parameter types. */
export function serverNameFor(tail: Buffer): string {
  return 'sg_' + createHash('sha256').update(tail).digest('base64url').slice(0, 20);
}

/** Parse message: name, then `tail` = query text NUL, int16 count, parameter type oids. */
export function parseMessage(name: string, tail: Buffer): Buffer {
  const nameLen = Buffer.byteLength(name);
  const out = Buffer.allocUnsafe(5 + nameLen + 1 + tail.length);
  out[0] = FE.Parse;
  out.writeInt32BE(4 + nameLen + 1 + tail.length, 1);
  out.write(name, 5);
  out[5 + nameLen] = 0;
  tail.copy(out, 6 + nameLen);
  return out;
}

export function closeStatement(name: string): Buffer {
  const nameLen = Buffer.byteLength(name);
  const out = Buffer.allocUnsafe(5 + 1 + nameLen + 1);
  out[0] = FE.Close;
  out.writeInt32BE(4 + 1 + nameLen + 1, 1);
  out[5] = 0x53; // 'S'
  out.write(name, 6);
  out[6 + nameLen] = 0;
  return out;
}

/**
 * Replaces the statement name of a Bind ('B': portal, statement, rest) or Describe
 * ('D': 'S', statement) message. `nameStart`/`nameEnd` delimit the old name (NUL excluded).
 */
export function renameStatement(buf: Buffer, start: number, end: number, nameStart: number, nameEnd: number, serverName: string): Buffer {
  const newLen = Buffer.byteLength(serverName);
  const total = (end - start) - (nameEnd - nameStart) + newLen;
  const out = Buffer.allocUnsafe(total);
  buf.copy(out, 0, start, nameStart);
  out.write(serverName, nameStart - start);
  buf.copy(out, nameStart - start + newLen, nameEnd, end);
  out.writeInt32BE(total - 1, 1);
  return out;
}

/** What the per-backend bookkeeping needs to send on the client's behalf. */
export interface StatementSender {
  /** Sends a message scopegate made; `own` hides its answer from the client. */
  sendOwn(b: Backend, data: Buffer, own: boolean, onDone?: (ok: boolean) => void): void;
}

/**
 * Makes sure `b` holds `stmt`: evicts the least recently used statement past the limit,
 * clears a name whose earlier Parse may or may not have happened, and re-prepares.
 */
export function ensurePrepared(b: Backend, stmt: ClientStatement, limit: number, out: StatementSender, hidden: boolean, owner: ClientStatements | null): void {
  const held = b.prepared;
  if (held.has(stmt.serverName)) {
    held.delete(stmt.serverName);
    held.set(stmt.serverName, 1);
    return;
  }
  while (limit > 0 && held.size >= limit) {
    const oldest = held.keys().next().value as string;
    held.delete(oldest);
    b.pendingEvictions.push({ epoch: b.sendEpoch, name: oldest });
    out.sendOwn(b, closeStatement(oldest), true);
  }
  if (b.uncertain.delete(stmt.serverName)) out.sendOwn(b, closeStatement(stmt.serverName), true);
  b.pendingParses.push({ epoch: b.sendEpoch, serverName: stmt.serverName, owner, stmt });
  held.set(stmt.serverName, 1);
  out.sendOwn(b, stmt.parse, hidden);
}

