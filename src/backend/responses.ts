/** The requests in flight on a server connection, so answers to scopegate's own messages stay hidden. */
import { BE, FE } from '../protocol/codes.js';

const OWN = 0x80;

/**
 * The requests sent to a backend whose answers have not finished arriving, in order.
 * Knowing which request each response belongs to is what lets scopegate slip messages of
 * its own into a client's pipeline (re-prepares, role switches, refusals) and hide their
 * answers exactly, whatever the client has in flight around them.
 *
 * A ring of message-type bytes: no allocation per message on the hot path.
 */
export class ResponseQueue {
  private ring = new Uint8Array(64);
  private head = 0;
  private size = 0;
  /** Callbacks for own requests, by absolute sequence number (rare: role switches). */
  private readonly done = new Map<number, (ok: boolean) => void>();
  private seq = 0;
  /** The Query at the head got an ErrorResponse: its callback hears ok = false. */
  private headFailed = false;

  get length(): number {
    return this.size;
  }

  /** Records a request sent: Parse, Bind, Describe, Execute, Close, Sync or Query. */
  push(type: number, own: boolean, onDone?: (ok: boolean) => void): void {
    if (this.size === this.ring.length) this.grow();
    this.ring[(this.head + this.size) & (this.ring.length - 1)] = own ? type | OWN : type;
    if (onDone) this.done.set(this.seq + this.size, onDone);
    this.size++;
  }

  clear(): void {
    for (const cb of this.done.values()) cb(false);
    this.head = 0;
    this.size = 0;
    this.done.clear();
    this.headFailed = false;
  }

  /**
   * Accounts for one response message; returns true when it answers a request scopegate
   * sent on its own, so the client must not see it. Errors are always shown: a failed own
   * request explains why the client's batch was skipped.
   */
  onResponse(type: number): boolean {
    if (this.size === 0) return false;
    const h = this.ring[this.head]!;
    const req = h & ~OWN;
    const own = (h & OWN) !== 0;
    switch (type) {
      case BE.NoticeResponse:
      case BE.ParameterStatus:
      case BE.NotificationResponse:
        return false; // asynchronous: belongs to no request
      case BE.ErrorResponse:
        if (req === FE.Query) { this.headFailed = true; return false; } // ReadyForQuery still follows
        // The server skips everything up to the next Sync.
        this.pop(false);
        while (this.size !== 0 && (this.ring[this.head]! & ~OWN) !== FE.Sync) this.pop(false);
        return false;
      case BE.ReadyForQuery:
        if (req === FE.Query || req === FE.Sync) {
          this.pop(!this.headFailed);
          this.headFailed = false;
        }
        return own;
      case BE.ParseComplete:
      case BE.BindComplete:
      case BE.CloseComplete:
        this.pop();
        return own;
      case BE.RowDescription:
      case BE.NoData:
        if (req === FE.Describe) this.pop();
        return own;
      case BE.CommandComplete:
      case BE.EmptyQueryResponse:
      case BE.PortalSuspended:
        if (req === FE.Execute) this.pop();
        return own;
      default:
        return own; // rows, ParameterDescription, COPY responses: part of the head's answer
    }
  }

  /** Removes the head and tells its callback whether it was answered without error. */
  private pop(ok = true): void {
    const cb = this.done.size !== 0 ? this.done.get(this.seq) : undefined;
    if (cb) {
      this.done.delete(this.seq);
      cb(ok);
    }
    this.head = (this.head + 1) & (this.ring.length - 1);
    this.size--;
    this.seq++;
  }

  private grow(): void {
    const next = new Uint8Array(this.ring.length * 2);
    for (let i = 0; i < this.size; i++) next[i] = this.ring[(this.head + i) & (this.ring.length - 1)]!;
    this.ring = next;
    this.head = 0;
  }
}
