/** Winding down a server connection whose client left mid-transaction before it is reused. */
import type { Logger } from 'pino';
import { Backend, type BackendOwner } from '../backend/backend.js';
import type { SqlError } from '../errors.js';
import { FE, TX_IDLE } from '../protocol/codes.js';
import { COPY_FAIL_CLIENT_GONE, SYNC } from '../protocol/messages.js';
import type { DatabasePool } from './database-pool.js';

/** How long a backend may take to wind down an abandoned transaction before it is closed. */
const DRAIN_TIMEOUT_MS = 30_000;

/**
 * Takes over a backend whose client went away mid-transaction: cancels what still runs
 * (Postgres would keep running it, holding its locks), ends COPY and the open transaction,
 * and returns the backend only when it is provably idle. Anything uncertain closes it.
 */
export function drainAndRelease(b: Backend, pool: DatabasePool, log: Logger): void {
  const finish = async (): Promise<void> => {
    clearTimeout(timer);
    try {
      await b.cancelsSettled();
      if (b.txStatus !== TX_IDLE) await b.runInternal('ROLLBACK');
      await pool.release(b);
    } catch (err) {
      log.warn({ backend: b.id, err: (err as Error).message }, 'could not reset abandoned server connection; closing it');
      await pool.destroy(b);
    }
  };
  let copyFailed = false;
  const failCopy = (): void => {
    if (copyFailed || !b.copyIn) return;
    copyFailed = true;
    b.write(COPY_FAIL_CLIENT_GONE);
  };
  const owner: BackendOwner = {
    // A COPY FROM STDIN the client started just before it left begins after the takeover:
    // end it when it does, or the server waits for data that never comes.
    forward: () => { failCopy(); return false; },
    onIdle: () => { if (b.quiet || b.txStatus !== TX_IDLE) void finish(); },
    onBackendLost: (_err: SqlError) => { clearTimeout(timer); void pool.destroy(b); },
  };
  const timer = setTimeout(() => {
    log.warn({ backend: b.id }, 'abandoned server connection did not become idle; closing it');
    void pool.destroy(b);
  }, DRAIN_TIMEOUT_MS);
  timer.unref();
  b.attach(owner);
  failCopy();
  if (b.unsynced) {
    b.write(SYNC);
    b.noteSent(FE.Sync, true);
  }
  if (b.pendingSyncs > 0) {
    b.cancel();
  } else {
    void finish();
  }
}

/** Answers of a server connection being killed: nobody hears them. */
const DEAF: BackendOwner = { forward: () => false, onIdle: () => undefined, onBackendLost: () => undefined };

/**
 * Takes a server connection away mid-statement from a client whose access was revoked:
 * nothing it still sends or has queued may run or commit. The statement is cancelled
 * (CancelRequest), the connection closed (never back in the pool: mid-COPY or
 * mid-transaction it cannot be trusted), and the server process terminated from a side
 * login of the same role, because messages already in the server's socket buffer (a
 * pipelined batch, several Queries in one write) would otherwise still be read and run.
 */
export function killAndClose(b: Backend, pool: DatabasePool, log: Logger): void {
  // A cancel stops the running statement at once, but the server then reads on: only when
  // nothing else is owed an answer does it also stop the rest (an extended batch skips to its
  // Sync, a multi-statement Query aborts whole). Otherwise the next pipelined Query would run
  // and commit before the terminate arrives, so the terminate goes first, the cancel after.
  const alone = b.pendingSyncs + (b.unsynced ? 1 : 0) <= 1;
  b.attach(DEAF);
  if (alone) b.cancel();
  void pool.destroy(b);
  void (async () => {
    let side: Backend | null = null;
    try {
      side = await Backend.connect(b.db, 5_000);
      // Its own role's backends may be signalled by any member of the role (PostgreSQL's rule).
      await side.runInternal(`SELECT pg_terminate_backend(${b.pid})`);
    } catch (err) {
      if (!alone) b.cancel();
      log.warn({ backend: b.id, pid: b.pid, err: (err as Error).message }, 'could not terminate the server process of a revoked session; its connection is closed');
    } finally {
      side?.close();
    }
  })();
}
