/** Statements a server connection holds: which exist, re-preparing on demand, LRU eviction. */
import { createHash } from 'node:crypto';
import type { Backend } from './backend.js';
import { closeStatement } from '../protocol/messages.js';
import type { PreparableStatement, StatementOwner } from './statement-types.js';

export type { PendingParse, PreparableStatement, StatementOwner } from './statement-types.js';

export { PARSE_COMPLETE } from '../protocol/messages.js';
/** Close of a name no server statement has: the server answers CloseComplete in order. */
export const CLOSE_NOTHING = closeStatement('sg_closed');

/** sg_ + 20 characters of the SHA-256 of query text and parameter types. */
export function serverNameFor(tail: Buffer): string {
  return 'sg_' + createHash('sha256').update(tail).digest('base64url').slice(0, 20);
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
/** Parses sent on the clients' behalf (SHOW STATS, metrics): plain numbers, read at scrape time. */
export const preparedCounts = { parses: 0, reprepared: 0 };

export function ensurePrepared(b: Backend, stmt: PreparableStatement, limit: number, out: StatementSender, hidden: boolean, owner: StatementOwner | null): void {
  const held = b.prepared;
  if (held.has(stmt.serverName)) {
    held.delete(stmt.serverName);
    held.set(stmt.serverName, 1);
    return;
  }
  preparedCounts.parses++;
  // At Bind or Describe: the client prepared it on another server connection.
  if (hidden) preparedCounts.reprepared++;
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

