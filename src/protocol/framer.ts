/** Type+length framing of a client's byte stream, with views into the socket's chunks. */
import { SqlError, SQLSTATE } from '../errors.js';

/**
 * Called once per complete message: buf[start, end) is the whole message including its
 * header. Returning HOLD stops the framer before this message, to be handed out again by
 * resume() (the session awaits something first); it keeps the bytes after it unread too.
 */
export type MessageSink = (type: number, buf: Buffer, start: number, end: number) => boolean | void;

export const HOLD = false;

/**
 * Bytes held for client messages not yet whole, summed over every framer that shares it (one
 * per process): pool.max_partial_message_bytes bounds them, so many clients each sending
 * most of a max_packet_size message cannot take the process's memory together.
 */
export class PartialBytes {
  used = 0;
  constructor(public limit: number) {}
}

/** The pieces of no message: shared, never pushed to (push() only appends while `held` is not 0). */
const NO_PIECES: Buffer[] = [];

/**
 * Splits a byte stream of typed messages (1-byte type, int32 length) into whole messages.
 * Messages that arrive whole are handed out as views into the socket's own chunk; only a
 * message split across chunks is copied, once, when its last piece arrives.
 */
export class Framer {
  /** Pieces of a message split across chunks (its header included), and their total size. */
  private pieces: Buffer[] = NO_PIECES;
  private held = 0;
  /** The whole length of that message once its header has arrived, else 0. */
  private want = 0;
  /** A sink said HOLD: the pieces start with the held message, and nothing is handed out. */
  private holding = false;
  /** A lower limit for Query and Parse messages (0: none): their text is parsed whole, so it is capped before it is buffered. */
  private maxStatementMessage = 0;
  constructor(private maxMessageSize: number, private readonly budget: PartialBytes | null = null) {}

  /** Holds `n` bytes instead of `held`: charged to the budget, refused (FATAL 53200) past its limit. */
  private setHeld(n: number): void {
    const b = this.budget;
    if (b !== null) {
      const more = n - this.held;
      if (more > 0 && b.used + more > b.limit) {
        throw new SqlError(SQLSTATE.OUT_OF_MEMORY, `out of memory: unfinished client messages would hold more than pool.max_partial_message_bytes (${b.limit} bytes)`, { severity: 'FATAL', hint: 'Others are sending large messages slowly; retry, or raise pool.max_partial_message_bytes.' });
      }
      b.used += more;
    }
    this.held = n;
  }

  /** The session ended: what it held for an unfinished message is no longer charged. */
  release(): void {
    this.setHeld(0);
    this.pieces = NO_PIECES;
    this.want = 0;
  }

  /** Changes the limit (the session lowers it before authentication, raises it after). */
  setLimit(maxMessageSize: number, maxStatementMessage = 0): void {
    this.maxMessageSize = maxMessageSize;
    this.maxStatementMessage = maxStatementMessage;
  }

  push(chunk: Buffer, sink: MessageSink): void {
    let buf = chunk;
    if (this.holding) {
      this.setHeld(this.held + chunk.length);
      this.pieces.push(chunk);
      return;
    }
    if (this.held !== 0) {
      // A large message arrives in many chunks: keep them, join once when it is whole, so
      // the cost stays linear in its size.
      this.setHeld(this.held + chunk.length);
      this.pieces.push(chunk);
      if (this.want === 0 && this.held >= 5) this.want = this.lengthOf(Buffer.concat(this.pieces, 5), 0);
      if (this.want === 0 || this.held < this.want) return;
      buf = Buffer.concat(this.pieces, this.held);
      this.pieces = NO_PIECES;
      this.setHeld(0);
      this.want = 0;
    }
    let off = 0;
    const n = buf.length;
    while (n - off >= 5) {
      const end = off + this.lengthOf(buf, off);
      if (end > n) break;
      if (sink(buf[off]!, buf, off, end) === HOLD) {
        this.holding = true;
        break;
      }
      off = end;
    }
    if (off < n) {
      const rest = off === 0 ? buf : buf.subarray(off);
      this.setHeld(rest.length);
      this.pieces = [rest];
      this.want = rest.length >= 5 ? this.lengthOf(rest, 0) : 0;
    }
  }

  /** Hands out the held message again, then what followed it. */
  resume(sink: MessageSink): void {
    if (!this.holding) return;
    this.holding = false;
    if (this.held === 0) return;
    const buf = Buffer.concat(this.pieces, this.held);
    this.pieces = [];
    this.setHeld(0);
    this.want = 0;
    this.push(buf, sink);
  }

  /** 1 + the length field of the message starting at buf[off]; refuses bad ones. */
  private lengthOf(buf: Buffer, off: number): number {
    const len = buf.readInt32BE(off + 1);
    if (len < 4 || len > this.maxMessageSize) {
      throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, len < 4 ? `invalid message length ${len}` : `message of ${len} bytes exceeds the limit of ${this.maxMessageSize}`, { severity: 'FATAL' });
    }
    const type = buf[off];
    if (this.maxStatementMessage !== 0 && len > this.maxStatementMessage && (type === 0x51 /* Q */ || type === 0x50 /* P */)) {
      // Refused from its header, before megabytes of it are held in memory.
      throw new SqlError(SQLSTATE.PROGRAM_LIMIT_EXCEEDED, `statement message of ${len} bytes exceeds max_statement_size by far`, { severity: 'FATAL', hint: 'Send smaller statements, or raise pool.max_statement_size.' });
    }
    return 1 + len;
  }

  /** Bytes held for a message not yet complete. */
  get buffered(): number {
    return this.held;
  }
}

/** Reads a NUL-terminated string at `off`; returns the string and the offset after the NUL. */
export function readCString(buf: Buffer, off: number, end: number): [string, number] {
  const nul = buf.indexOf(0, off);
  if (nul < 0 || nul >= end) throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, 'unterminated string in message', { severity: 'FATAL' });
  return [buf.toString('utf8', off, nul), nul + 1];
}
