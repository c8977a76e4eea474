import type { Logger } from 'pino';
import type { Identity } from './auth/index.js';
import { isExpired } from './auth/index.js';
import type { Backend } from './backend/backend.js';
import type { ClientAuthenticator } from './client-auth.js';
import type { ClientSession } from './client.js';
import { SqlError, SQLSTATE } from './errors.js';

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

  checkQuery(): SqlError | null {
    return null;
  }

  roleFor(): string | null {
    return null;
  }

  transactionEnded(): void {}
}
