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
  /** Per request: how many CopyDone/CopyFail, and how many CopyData, had been sent when it
   * was (see copyInStarted). */
  private marks = new Uint32Array(64);
  private dataMarks = new Uint32Array(64);
  private head = 0;
  private size = 0;
  /** Callbacks for own requests, by absolute sequence number (rare: role switches). */
  private readonly done = new Map<number, (ok: boolean) => void>();
  private seq = 0;
  /** The Query at the head got an ErrorResponse: its callback hears ok = false. */
  private headFailed = false;
  /** What the last extended-protocol ErrorResponse made the server skip (see takeSkipped). */
  private skipped: { queries: number; untilUnsentSync: boolean } | null = null;

  /**
   * After an ErrorResponse to an extended-protocol request: how many Query messages sent
   * before the next Sync the server will ignore, and whether no Sync was sent yet (the server
   * then discards whatever comes until one is). Null when the error was a Query's.
   */
  takeSkipped(): { queries: number; untilUnsentSync: boolean } | null {
    const s = this.skipped;
    this.skipped = null;
    return s;
  }

  get length(): number {
    return this.size;
  }

  /** The head request's type (0 when nothing is in flight). */
  headType(): number {
    return this.size === 0 ? 0 : this.ring[this.head]! & ~OWN;
  }

  /** CopyDone/CopyFail messages sent before the head request (see push). */
  headMark(): number {
    return this.size === 0 ? -1 : this.marks[this.head]!;
  }

  /** CopyData messages sent before the head request (see push). */
  headDataMark(): number {
    return this.size === 0 ? -1 : this.dataMarks[this.head]!;
  }

  /** Records a request sent: Parse, Bind, Describe, Execute, Close, Sync or Query. */
  push(type: number, own: boolean, onDone?: (ok: boolean) => void, copyEnds = 0, copyData = 0): void {
    if (this.size === this.ring.length) this.grow();
    const at = (this.head + this.size) & (this.ring.length - 1);
    this.ring[at] = own ? type | OWN : type;
    this.marks[at] = copyEnds;
    this.dataMarks[at] = copyData;
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
    if (this.size === 0) {
      // An error nothing in flight expects an answer from: a Flush's (it has no answer of
      // its own). The server now skips to a Sync not sent yet (the caller checks that the
      // extended protocol is open).
      if (type === BE.ErrorResponse) this.skipped = { queries: 0, untilUnsentSync: true };
      return false;
    }
    const h = this.ring[this.head]!;
    const req = h & ~OWN;
    const own = (h & OWN) !== 0;
    switch (type) {
      case BE.NoticeResponse:
      case BE.ParameterStatus:
      case BE.NotificationResponse:
        return false; // asynchronous: belongs to no request
      case BE.ErrorResponse: {
        // A Query's error, or a Sync's (a commit that fails there, a malformed Sync):
        // ReadyForQuery still follows.
        if (req === FE.Query || req === FE.Sync) { this.headFailed = true; return false; }
        // The server skips everything up to the next Sync, Query messages included.
        this.pop(false);
        let queries = 0;
        while (this.size !== 0 && (this.ring[this.head]! & ~OWN) !== FE.Sync) {
          if ((this.ring[this.head]! & ~OWN) === FE.Query) queries++;
          this.pop(false);
        }
        this.skipped = { queries, untilUnsentSync: this.size === 0 };
        return false;
      }
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
    const marks = new Uint32Array(this.ring.length * 2);
    const dataMarks = new Uint32Array(this.ring.length * 2);
    for (let i = 0; i < this.size; i++) {
      next[i] = this.ring[(this.head + i) & (this.ring.length - 1)]!;
      marks[i] = this.marks[(this.head + i) & (this.ring.length - 1)]!;
      dataMarks[i] = this.dataMarks[(this.head + i) & (this.ring.length - 1)]!;
    }
    this.ring = next;
    this.marks = marks;
    this.dataMarks = dataMarks;
    this.head = 0;
  }

  /**
   * The head request started COPY FROM STDIN (a CopyInResponse arrived). Requests sent after
   * it but before any CopyDone/CopyFail reach the server while it is in COPY: a Sync is
   * ignored there, so it is removed here and gets no ReadyForQuery; anything else (or a Sync
   * after CopyData, which may have failed the COPY first) is answered in ways this queue
   * does not follow.
   * Returns the Syncs removed, and whether such another request follows.
   */
  copyInStarted(): { syncsRemoved: number; requestInCopy: boolean } {
    const mask = this.ring.length - 1;
    const headMark = this.marks[this.head]!;
    const headData = this.dataMarks[this.head]!;
    let removed = 0;
    let requestInCopy = false;
    for (let i = 1; i < this.size; i++) {
      const at = (this.head + i) & mask;
      if (this.marks[at] !== headMark) break; // the COPY ended before this one
      if ((this.ring[at]! & ~OWN) !== FE.Sync || this.dataMarks[at] !== headData) { requestInCopy = true; break; }
      removed++;
    }
    if (removed === 0) return { syncsRemoved: 0, requestInCopy };
    // Entries 1..removed go; later ones move up, callbacks keyed by position with them.
    for (let i = 1; i <= removed; i++) {
      const cb = this.done.get(this.seq + i);
      if (cb) { this.done.delete(this.seq + i); cb(true); }
    }
    for (let i = removed + 1; i < this.size; i++) {
      const from = (this.head + i) & mask;
      const to = (this.head + i - removed) & mask;
      this.ring[to] = this.ring[from]!;
      this.marks[to] = this.marks[from]!;
      this.dataMarks[to] = this.dataMarks[from]!;
      const cb = this.done.get(this.seq + i);
      if (cb) { this.done.delete(this.seq + i); this.done.set(this.seq + i - removed, cb); }
    }
    this.size -= removed;
    return { syncsRemoved: removed, requestInCopy };
  }
}
