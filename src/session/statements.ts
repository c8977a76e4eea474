/** A client's prepared statements: its names, what each was checked as, row-filter checks at Bind. */
import { serverNameFor, type PreparableStatement, type StatementOwner } from '../backend/server-statements.js';
import { parseMessage } from '../protocol/messages.js';
import { SqlError, SQLSTATE } from '../errors.js';
import type { BindCheck, Decision } from '../policy/index.js';
import type { SessionEffects } from '../policy/session-effects.js';

export const NO_CHECKS: readonly BindCheck[] = Object.freeze([]);
const TEXT_OID = 25;
const VARCHAR_OID = 1043;

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

/** A statement as the gate checked it at Parse: judged again at Bind when the policy changed. */
export interface CheckedParse {
  /** The client's name ('' for the unnamed statement). */
  readonly name: string;
  readonly sql: string;
  /** Policy version the statement was checked under ('' when no policy). */
  checkedVersion: string;
  /** The text the server prepares: the client's, or the policy's rewrite of it. */
  sentSql: string;
  /** Role chosen by the policy for this statement (undefined: no policy). */
  role: string | null | undefined;
  /** The decision behind `role` (null: no policy), audited again at each execution but the first. */
  decision: Decision | null;
  /** A Bind has run it under that decision: the Parse's audit line is spent, later Binds write their own. */
  bound: boolean;
}

/** One statement a client prepared, as scopegate will (re-)prepare it on any backend. */
export interface ClientStatement extends PreparableStatement, CheckedParse {
  readonly name: string;
}

/** The client's unnamed statement: its Parse message, to restore it on a backend that lost it. */
export interface UnnamedStatement extends CheckedParse {
  readonly name: '';
  readonly message: Buffer;
}

/**
 * The empty statement map of every client that has named none: reads, delete and clear
 * work on it, set does not (add() gives the client a map of its own first).
 */
class NoStatements extends Map<string, ClientStatement> {
  override set(): this {
    throw new TypeError('NO_STATEMENTS is shared: ClientStatements.add() makes a map of its own');
  }
}
const NO_STATEMENTS: Map<string, ClientStatement> = new NoStatements();

/**
 * The statements of one client. Most clients of a pool never prepare a named statement:
 * the maps are made on first use (an idle client costs no empty maps).
 */
export class ClientStatements implements StatementOwner {
  private named: Map<string, ClientStatement> | null = null;
  /** The client's last unnamed Parse (null: it has none, and may not Bind or Describe one). */
  unnamed: UnnamedStatement | null = null;
  /** Row-filter checks on parameter values, by statement name ('' = unnamed). */
  private checks: Map<string, readonly BindCheck[]> | null = null;
  /** What executing the statement does to the session, by name ('' = unnamed); only those with effects. */
  private effects: Map<string, SessionEffects> | null = null;

  /** The client's named statements by name (add() is the only way in). */
  get byName(): Map<string, ClientStatement> {
    return this.named ?? NO_STATEMENTS;
  }

  get hasEffects(): boolean {
    return this.effects !== null && this.effects.size !== 0;
  }

  setEffects(name: string, fx: SessionEffects | null): void {
    if (fx === null) this.effects?.delete(name);
    else (this.effects ??= new Map()).set(name, fx);
  }

  effectsOf(name: string): SessionEffects | null {
    return this.effects === null || this.effects.size === 0 ? null : this.effects.get(name) ?? null;
  }

  get hasChecks(): boolean {
    return this.checks !== null && this.checks.size !== 0;
  }

  setChecks(name: string, checks: readonly BindCheck[]): void {
    if (checks.length === 0) this.checks?.delete(name);
    else (this.checks ??= new Map()).set(name, checks);
  }

  /**
   * A row-filter check on a parameter holds only if the server reads the parameter as the
   * text that was checked: a type declared in Parse ("char", name, char(n) ...) would store
   * another value. Unspecified, text and varchar are the types that keep it.
   */
  static declaredTypesRefusal(types: Buffer, checks: readonly BindCheck[]): SqlError | null {
    if (checks.length === 0 || types.length < 2) return null;
    const n = types.readInt16BE(0);
    for (const c of checks) {
      const i = c.param - 1;
      if (i >= n || 2 + 4 * i + 4 > types.length) continue;
      const oid = types.readUInt32BE(2 + 4 * i);
      if (oid !== 0 && oid !== TEXT_OID && oid !== VARCHAR_OID) {
        return new SqlError(SQLSTATE.INSUFFICIENT_PRIVILEGE, `permission denied: parameter $${c.param} (${c.column}) is declared with type oid ${oid}, so the value stored may differ from the value checked`, {
          hint: 'Leave the type of a row-filtered parameter unspecified, or declare it text.',
        });
      }
    }
    return null;
  }

  /**
   * Verifies that a Bind writes only rows inside the client's row filter: each checked
   * parameter must be sent as text and be one of the allowed values.
   */
  checkBind(buf: Buffer, start: number, end: number): SqlError | null {
    const portalEnd = buf.indexOf(0, start + 5);
    const nameEnd = buf.indexOf(0, portalEnd + 1);
    if (portalEnd < 0 || nameEnd < 0 || nameEnd >= end) return null; // malformed: the server says so
    const checks = this.checks?.get(buf.toString('utf8', portalEnd + 1, nameEnd));
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
    const stmt: ClientStatement = { name, serverName: serverNameFor(tail), parse: parseMessage(serverNameFor(tail), tail), sql, checkedVersion: '', sentSql: sql, role: undefined, decision: null, bound: false };
    (this.named ??= new Map()).set(name, stmt);
    return stmt;
  }

  dropIfSame(stmt: PreparableStatement): void {
    if (this.byName.get(stmt.name) === stmt) this.byName.delete(stmt.name);
  }
}

