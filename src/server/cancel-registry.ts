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
 * Maps the cancel keys scopegate hands to clients onto client sessions. A client never sees
 * a server's own key, so a cancel can reach only the backend serving that client right now.
 */
export class CancelRegistry {
  private readonly byPid = new Map<number, Cancellable>();
  /** Set by the listener when peer_id is configured; null: keys are local only. */
  routing: CancelRouting | null = null;

  /** Allocates an unused process id and a random secret for a new client. */
  allocate(): { pid: number; secret: number } {
    for (;;) {
      const pid = randomInt(1, 0x7fffffff);
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
    const c = this.byPid.get(pid);
    const secret = this.routing === null ? presented : this.routing.canonical(presented);
    if (!c || secret.length !== c.cancelKey.length || !timingSafeEqual(secret, c.cancelKey)) {
      this.routing?.elsewhere(pid, presented);
      return false;
    }
    c.cancelRunning();
    return true;
  }
}
