import type { Backend } from './backend/backend.js';
import type { ClientSession } from './client.js';
import type { SqlError } from './errors.js';

/**
 * The checks a client session passes through: at connect (startup parameters, credentials)
 * and per statement. The plain pooler, OAuth and scope enforcement plug in here.
 */
export interface StatementGate {
  /** Refuses startup parameters the policy does not allow (throws a FATAL SqlError). */
  checkStartup(c: ClientSession): Promise<void>;
  /** Runs the authentication exchange; throws a FATAL SqlError on failure. */
  authenticate(c: ClientSession): Promise<void>;
  /** Checks one simple Query or Parse; returns the error to send, or null to let it through. */
  checkQuery(c: ClientSession, sql: string): SqlError | null;
  /** The role the client's next statements run under (null: the login role). */
  roleFor(c: ClientSession): string | null;
  /** A transaction (or autocommit statement) ended on `b`; `ok` when no error happened in it. */
  transactionEnded(c: ClientSession, b: Backend, ok: boolean): void;
}

/** Trust authentication, no statement checks: scopegate as a plain pooler. */
export class PlainGate implements StatementGate {
  async checkStartup(): Promise<void> {}
  async authenticate(): Promise<void> {}
  checkQuery(): SqlError | null {
    return null;
  }
  roleFor(): string | null {
    return null;
  }
  transactionEnded(): void {}
}
