/** Reading a server connection into one reusable buffer (net's `onread`), not a new Buffer per read. */

/** Bytes per read: a server's answers to a pipelined batch usually fit in one. */
const READ_SIZE = 64 * 1024;

/** A chunk nobody is listening for yet (between the login and the Backend taking over). */
const DROP = (_chunk: Buffer): void => undefined;

/**
 * The reads of one plain-TCP server connection. Each chunk handed to `sink` is a view into a
 * buffer the next read overwrites: a reader that keeps bytes past its call copies them, or,
 * when a write it made holds a view still (the client's socket buffered it), calls lend()
 * so the next read goes into a fresh buffer. Saves the stream machinery of a 'data' event
 * (a Buffer, Readable.push, a nextTick) on every read of the hot path.
 */
export class ServerReads {
  private buf = Buffer.allocUnsafe(READ_SIZE);
  private lent = false;
  /** The connection's reads come here (plain TCP); false once TLS took the socket over (connect.ts sets it). */
  inUse = false;
  /** Who reads now: the SSLRequest answer, the login, then the Backend. */
  sink: (chunk: Buffer) => void = DROP;

  /** For net.connect({ onread }): the buffer of the next read, and the callback of each. */
  readonly onread = {
    buffer: (): Buffer => {
      if (this.lent) {
        this.buf = Buffer.allocUnsafe(READ_SIZE);
        this.lent = false;
      }
      return this.buf;
    },
    // true: go on reading (a reader that must stop pauses the socket).
    callback: (n: number, buf: Uint8Array): boolean => {
      this.sink(Buffer.from(buf.buffer, buf.byteOffset, n));
      return true;
    },
  };

  /** Whether `view` lies in the buffer reads go into (a joined copy of a split message does not). */
  holds(view: Buffer): boolean {
    return view.buffer === this.buf.buffer;
  }

  /** The current chunk's bytes are still referenced (a pending write): never read over them. */
  lend(): void {
    this.lent = true;
  }

  /** Stops handing chunks to the current reader. */
  detach(): void {
    this.sink = DROP;
  }
}
