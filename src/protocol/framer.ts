/** Type+length framing of a client's byte stream, with views into the socket's chunks. */
import { SqlError, SQLSTATE } from '../errors.js';

/** Called once per complete message: buf[start, end) is the whole message including its header. */
export type MessageSink = (type: number, buf: Buffer, start: number, end: number) => void;

/**
 * Splits a byte stream of typed messages (1-byte type, int32 length) into whole messages.
 * Messages that arrive whole are handed out as views into the socket's own chunk; only a
 * message split across chunks is copied, once, when its last piece arrives.
 */
export class Framer {
  private pending: Buffer | null = null;
  constructor(private readonly maxMessageSize: number) {}

  push(chunk: Buffer, sink: MessageSink): void {
    let buf = chunk;
    if (this.pending !== null) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    let off = 0;
    const n = buf.length;
    while (n - off >= 5) {
      const len = buf.readInt32BE(off + 1);
      if (len < 4 || len > this.maxMessageSize) {
        throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, len < 4 ? `invalid message length ${len}` : `message of ${len} bytes exceeds the limit of ${this.maxMessageSize}`, { severity: 'FATAL' });
      }
      const end = off + 1 + len;
      if (end > n) break;
      sink(buf[off]!, buf, off, end);
      off = end;
    }
    if (off < n) this.pending = off === 0 ? buf : buf.subarray(off);
  }

  /** Bytes held for a message not yet complete. */
  get buffered(): number {
    return this.pending?.length ?? 0;
  }
}

/** Reads a NUL-terminated string at `off`; returns the string and the offset after the NUL. */
export function readCString(buf: Buffer, off: number, end: number): [string, number] {
  const nul = buf.indexOf(0, off);
  if (nul < 0 || nul >= end) throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, 'unterminated string in message', { severity: 'FATAL' });
  return [buf.toString('utf8', off, nul), nul + 1];
}
