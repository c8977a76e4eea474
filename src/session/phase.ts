/** The phases of a client session: one value, changed only through ClientSession.enter. */

/**
 * Where a client session is. A session moves
 *
 *   Startup -> Authenticating -> Idle <-> Acquiring -> Preparing -> Linked -> Idle ...
 *                                            Linked <-> Switching | AwaitingQuiet
 *                                   Idle | Linked <-> SkippingToSync
 *   any -> Closed
 *
 * and the phases from Acquiring to AwaitingQuiet hold the client's messages in its queue.
 */
export const enum Phase {
  /** Reading the startup packet (SSLRequest, CancelRequest, StartupMessage). */
  Startup,
  /** The login exchange (password or SASL), then the startup checks. */
  Authenticating,
  /** Logged in, no server connection: the next statement borrows one. */
  Idle,
  /** Waiting for the pool to hand over a server connection. */
  Acquiring,
  /** A borrowed server connection is being given this client's settings, role and claims. */
  Preparing,
  /** The role and claims are being switched in a round trip of their own. */
  Switching,
  /** A pipelined Query waits for the server to answer what is in flight before its switch. */
  AwaitingQuiet,
  /** Linked to a server connection: messages flow through. */
  Linked,
  /** scopegate failed an extended-protocol batch: messages are dropped up to its Sync. */
  SkippingToSync,
  /** Ended: nothing more is read, nothing more is sent to a server for this client. */
  Closed,
}

/** Phases in which the client's messages wait in its queue. */
export function holdsMessages(p: Phase): boolean {
  return p >= Phase.Acquiring && p <= Phase.AwaitingQuiet;
}

const NAMES = ['startup', 'authenticating', 'idle', 'acquiring', 'preparing', 'switching', 'awaiting_quiet', 'linked', 'skipping_to_sync', 'closed'];

/** The phase's name, for logs and the admin console. */
export function phaseName(p: Phase): string {
  return NAMES[p] ?? 'unknown';
}
