/** Cancel keys handed to clients, and routing a CancelRequest to the right client. */
import { randomInt, timingSafeEqual } from 'node:crypto';

/** What the cancel registry needs from a client session. */
export interface Cancellable {
  readonly cancelKey: Buffer;
  cancelRunning(): void;
}

/** Peering (server/peers.ts): stamps this instance's id into secrets and forwards keys it does not hold. */
export interface CancelRouting {
  /** The secret handed to a new client, from a fresh random one. */
  stamp(secret: number): number;
  /** A presented secret in the form stamp() handed out (so it compares with the stored one). */
  canonical(secret: Buffer): Buffer;
  /** No local client holds this key: forward it to the instance that issued it, or drop it. */
  elsewhere(pid: number, secret: Buffer): void;
}

/**
 * `workers: N` (server/workers.ts): the low bits of a key's pid name the worker that issued it,
 * and a cancel for another worker is relayed to it through the primary.
 */
export interface WorkerCancelRouting {
  readonly index: number;
  /** Bits of the pid that hold the worker index (ceil(log2(N))). */
  readonly bits: number;
  /** Whether the key names another instance (peers forward it; no worker relay). */
  foreign(secret: Buffer): boolean;
  /** Hands the cancel to worker `to`, which looks it up locally only (cancelLocal). */
  relay(to: number, pid: number, secret: Buffer): void;
}

/**
 * Maps the cancel keys scopegate hands to clients onto client sessions. A client never sees
 * a server's own key, so a cancel can reach only the backend serving that client right now.
 */
export class CancelRegistry {
  private readonly byPid = new Map<number, Cancellable>();
  /** Set by the listener when peer_id is configured; null: keys are local only. */
  routing: CancelRouting | null = null;
  /** Set in a worker of `workers: N`; null: one process. */
  workers: WorkerCancelRouting | null = null;

  /** Allocates an unused process id and a random secret for a new client. */
  allocate(): { pid: number; secret: number } {
    for (;;) {
      const w = this.workers;
      const pid = w === null ? randomInt(1, 0x7fffffff) : ((randomInt(0, 2 ** (31 - w.bits)) << w.bits) | w.index) || (1 << w.bits);
      if (!this.byPid.has(pid)) {
        const secret = randomInt(0, 0x7fffffff);
        return { pid, secret: this.routing === null ? secret : this.routing.stamp(secret) };
      }
    }
  }

  add(pid: number, c: Cancellable): void {
    this.byPid.set(pid, c);
  }

  remove(pid: number, c: Cancellable): void {
    if (this.byPid.get(pid) === c) this.byPid.delete(pid);
  }

  /** Returns true when the key matched a client (whether or not it had anything running). */
  cancel(pid: number, presented: Buffer): boolean {
    if (this.cancelLocal(pid, presented)) return true;
    const w = this.workers;
    if (w !== null && !w.foreign(presented)) {
      const owner = pid & ((1 << w.bits) - 1);
      // Another worker's key: relayed once; the owner never forwards it again (cancelLocal).
      if (owner !== w.index) { w.relay(owner, pid, presented); return false; }
    }
    this.routing?.elsewhere(pid, presented);
    return false;
  }

  /** A client of this process only: a relayed cancel is never relayed or forwarded again. */
  cancelLocal(pid: number, presented: Buffer): boolean {
    const c = this.byPid.get(pid);
    const secret = this.routing === null ? presented : this.routing.canonical(presented);
    if (!c || secret.length !== c.cancelKey.length || !timingSafeEqual(secret, c.cancelKey)) return false;
    c.cancelRunning();
    return true;
  }
}
