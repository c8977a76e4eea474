/** Cancel keys handed to clients, and routing a CancelRequest to the right client. */
import { randomInt, timingSafeEqual } from 'node:crypto';

/** What the cancel registry needs from a client session. */
export interface Cancellable {
  readonly cancelKey: Buffer;
  cancelRunning(): void;
}

/**
 * Maps the cancel keys scopegate hands to clients onto client sessions. A client never sees
 * a server's own key, so a cancel can reach only the backend serving that client right now.
 */
export class CancelRegistry {
  private readonly byPid = new Map<number, Cancellable>();

  /** Allocates an unused process id and a random secret for a new client. */
  allocate(): { pid: number; secret: number } {
    for (;;) {
      const pid = randomInt(1, 0x7fffffff);
      if (!this.byPid.has(pid)) return { pid, secret: randomInt(0, 0x7fffffff) };
    }
  }

  add(pid: number, c: Cancellable): void {
    this.byPid.set(pid, c);
  }

  remove(pid: number, c: Cancellable): void {
    if (this.byPid.get(pid) === c) this.byPid.delete(pid);
  }

  /** Returns true when the key matched a client (whether or not it had anything running). */
  cancel(pid: number, secret: Buffer): boolean {
    const c = this.byPid.get(pid);
    if (!c || secret.length !== c.cancelKey.length || !timingSafeEqual(secret, c.cancelKey)) return false;
    c.cancelRunning();
    return true;
  }
}
