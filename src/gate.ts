import type { Logger } from 'pino';
import type { Identity } from './auth/index.js';
import { isExpired } from './auth/index.js';
import type { Backend } from './backend/backend.js';
import type { ClientAuthenticator } from './client-auth.js';
import type { ClientSession } from './client.js';
import { SqlError, SQLSTATE } from './errors.js';
import type { SessionStateTracker } from './session-state.js';

/**
 * The checks a client session passes through: at connect (startup parameters, credentials)
 * and per statement. Authentication, session-state tracking and scope enforcement plug in here.
 */
export interface StatementGate {
  /** Refuses startup parameters the policy does not allow (throws a FATAL SqlError). */
  checkStartup(c: ClientSession): Promise<void>;
  /** Runs the authentication exchange; throws a FATAL SqlError on failure. */
  authenticate(c: ClientSession): Promise<Identity | null>;
  /** Called before a client borrows a backend for a new transaction. */
  checkTransactionStart(c: ClientSession): SqlError | null;
  /** Checks one simple Query or Parse; returns the error to send, or null to let it through. */
  checkQuery(c: ClientSession, sql: string): SqlError | null;
  /** The role the client's next statements run under (null: the login role). */
  roleFor(c: ClientSession): string | null;
  /** A transaction (or autocommit statement) ended on `b`; `ok` when no error happened in it. */
  transactionEnded(c: ClientSession, b: Backend, ok: boolean): void;
}

export interface GateParts {
  log: Logger;
  auth: ClientAuthenticator | null;
  clockToleranceMs: number;
  /** Tracks SET/temp tables/LISTEN in transaction mode; null when every pool is in session mode. */
  sessionState: SessionStateTracker | null;
}

/** Composes the configured parts; with none of them scopegate is a plain pooler. */
export class SessionGate implements StatementGate {
  constructor(private readonly parts: GateParts) {}

  async checkStartup(): Promise<void> {}

  async authenticate(c: ClientSession): Promise<Identity | null> {
    const auth = this.parts.auth;
    if (auth === null) return null;
    return auth.authenticate(c);
  }

  checkTransactionStart(c: ClientSession): SqlError | null {
    const id = c.identity;
    if (id !== null && isExpired(id, Date.now(), this.parts.clockToleranceMs)) {
      return new SqlError(SQLSTATE.INVALID_AUTHORIZATION, 'access token expired', { severity: 'FATAL', hint: 'Reconnect with a fresh token.' });
    }
    return null;
  }

  checkQuery(c: ClientSession, sql: string): SqlError | null {
    const tracker = this.parts.sessionState;
    if (tracker !== null && c.poolMode === 'transaction') {
      const fx = tracker.effects(sql);
      if (fx.listen) {
        return new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, 'LISTEN is not supported in transaction pooling mode', { hint: 'Notifications need a session of their own: connect listeners to a database entry with pool_mode: session.' });
      }
      if (fx.sqlPrepared) {
        return new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, 'SQL-level PREPARE, EXECUTE and DEALLOCATE are not supported in transaction pooling mode', { hint: "Use your driver's prepared statements (protocol-level Parse/Bind), which scopegate carries across server connections." });
      }
      if (fx.deallocateAll) {
        c.statements.byName.clear();
        c.statements.unnamed = null;
        c.forgetServerStatements = true;
      }
      if (fx.needsReset) c.needsReset = true;
      if (fx.resetAll) c.pendingSettings.push(['*', null]);
      for (const s of fx.settings) c.pendingSettings.push(s);
    }
    return null;
  }

  roleFor(): string | null {
    return null;
  }

  transactionEnded(c: ClientSession, b: Backend, ok: boolean): void {
    if (c.needsReset) {
      // Session locks survive even a failed transaction, so this does not depend on `ok`.
      b.dirty = true;
      c.needsReset = false;
    }
    if (c.pendingSettings.length === 0) return;
    const pending = c.pendingSettings;
    c.pendingSettings = [];
    if (!ok) return;
    for (const [name, stmt] of pending) {
      if (name === '*') {
        c.settings = new Map(c.startupSettings);
        b.applied.clear();
      } else if (stmt === null) {
        const initial = c.startupSettings.get(name);
        if (initial !== undefined) c.settings.set(name, initial);
        else c.settings.delete(name);
        b.applied.delete(name);
      } else {
        c.settings.set(name, stmt);
        b.applied.set(name, stmt);
      }
    }
  }
}
