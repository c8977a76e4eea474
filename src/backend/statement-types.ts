/** The shapes a server connection's statement bookkeeping shares with the client side. */

/** What a server connection needs to know of a client's statement to prepare it. */
export interface PreparableStatement {
  readonly name: string;
  readonly serverName: string;
  /** A complete Parse message carrying `serverName`. */
  readonly parse: Buffer;
}

/** The client's statement map: told when a Parse made on its behalf failed. */
export interface StatementOwner {
  dropIfSame(stmt: PreparableStatement): void;
}

/** A Parse that went to the server and whose ParseComplete or error has not come back. */
export interface PendingParse {
  epoch: number;
  serverName: string | null;
  /** The client's own Parse: on failure the client's name mapping is dropped too. */
  owner: StatementOwner | null;
  stmt: PreparableStatement | null;
}
