/** Loggers: pino for operations, a separate JSON stream for audit lines. */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import pino, { type Logger } from 'pino';
import { ConfigError } from './errors.js';

/** The process log: pino JSON on stdout (stderr would mix with the demo's banner). */
export function createLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}

/**
 * Where audit lines go (`log.audit`): stdout, nowhere (`off`), or a file appended in chunks.
 * A line is pre-serialised JSON members without braces; the log adds time and stream.
 */
export interface AuditLog {
  /** Writes one line: `fields` is `"k":v,...` (JSON object members, no braces). */
  line(fields: string): void;
  /** The same for a line in three parts (`a + b + c`), written without joining them first. */
  line3(a: string, b: string, c: string): void;
  /** Flushes and reopens the file by name (logrotate renamed it, then sent SIGHUP). */
  reopen(): void;
  /** Flushes what is buffered and closes the file; later lines are dropped. */
  close(): void;
}

/** Buffered lines are written once this many bytes are pending, or within FLUSH_MS when quiet. */
const AUDIT_CHUNK = 4096;
/** Room for the pending lines: a flush leaves it at AUDIT_CHUNK, so the rest is for one line's worst case. */
const OUT_BYTES = 64 * 1024;
const FLUSH_MS = 500;
/** Bounds of the encoded-parts cache of a file audit log. */
const PART_ENTRIES = 4096;
const PART_BYTES = 4 * 1024 * 1024;
const EMPTY = Buffer.alloc(0);
/** The closing brace of a line's JSON object, and its newline. */
const LINE_END = Buffer.from('}\n');

/** The prefix of every line, rebuilt once per millisecond rather than per line. */
let stampMs = -1;
let stamp = '';
function linePrefix(): string {
  const now = Date.now();
  if (now !== stampMs) {
    stampMs = now;
    stamp = `{"level":30,"time":"${new Date(now).toISOString()}","stream":"audit",`;
  }
  return stamp;
}

const OFF: AuditLog = { line() {}, line3() {}, reopen() {}, close() {} };

/**
 * Opens `log.audit`. A file that cannot be opened throws ConfigError('log.audit', ...), so
 * startup ends in one line; a write that fails later is reported through `onError` once per
 * episode and its lines dropped, so a full disk does not stop the pooler.
 */
export function openAuditLog(dest: string, onError: (err: Error) => void = () => {}): AuditLog {
  if (dest === 'off') return OFF;
  if (dest === 'stdout') {
    // As before: each line as it comes, through the same non-blocking writer pino uses.
    const out = pino.destination({ dest: 1, sync: false, minLength: 0 });
    return {
      line(fields) { out.write(`${linePrefix()}${fields}}\n`); },
      line3(a, b, c) { out.write(`${linePrefix()}${a}${b}${c}}\n`); },
      reopen() {},
      close() { try { out.flushSync(); } catch { /* stdout closed: nothing to keep */ } },
    };
  }
  return new FileAuditLog(dest, onError);
}

/**
 * Appends to a file with O_APPEND: each flush is whole lines in one write call, so no line is
 * torn and lines written before a rename land in the old file, later ones in the new.
 * Writes are synchronous (a 4 KiB page-cache write) so SIGTERM and exit lose nothing buffered.
 */
class FileAuditLog implements AuditLog {
  private fd: number;
  /** Lines not yet written, encoded in place: no string join and no Buffer per flush. */
  private readonly out = Buffer.allocUnsafe(OUT_BYTES);
  private used = 0;
  private timer: NodeJS.Timeout | null = null;
  private failing = false;
  private closed = false;

  constructor(private readonly path: string, private readonly onError: (err: Error) => void) {
    this.fd = FileAuditLog.open(path);
    // Backstop for exits that skip close(): whatever is buffered is written.
    process.once('exit', () => this.close());
  }

  private static open(path: string): number {
    try {
      mkdirSync(dirname(path), { recursive: true });
      return openSync(path, 'a', 0o640);
    } catch (err) {
      throw new ConfigError('log.audit', `cannot open ${path} for appending: ${(err as Error).message}`);
    }
  }

  line(fields: string): void {
    // One-off texts (a refused login, a console command): encoded here, not kept.
    this.append(Buffer.from(fields, 'utf8'), EMPTY, EMPTY);
  }

  line3(a: string, b: string, c: string): void {
    this.append(this.encoded(a), this.encoded(b), this.encoded(c));
  }

  private append(pa: Buffer, pb: Buffer, pc: Buffer): void {
    if (this.closed) return;
    const pp = this.prefixBytes(linePrefix());
    const size = pp.length + pa.length + pb.length + pc.length + LINE_END.length;
    if (this.used + size > OUT_BYTES) {
      this.flush();
      if (size > OUT_BYTES) {
        // Longer than the whole buffer (a line is bounded, but not by this): on its own.
        this.writeAll(Buffer.concat([pp, pa, pb, pc, LINE_END]));
        return;
      }
    }
    const out = this.out;
    let o = this.used;
    // Copies of bytes encoded once: a client's fields and a decision's repeat on every line.
    out.set(pp, o); o += pp.length;
    out.set(pa, o); o += pa.length;
    if (pb.length !== 0) { out.set(pb, o); o += pb.length; }
    if (pc.length !== 0) { out.set(pc, o); o += pc.length; }
    out.set(LINE_END, o); o += LINE_END.length;
    this.used = o;
    if (o >= AUDIT_CHUNK) this.flush();
    else if (this.timer === null) {
      this.timer = setTimeout(() => { this.timer = null; this.flush(); }, FLUSH_MS);
      this.timer.unref();
    }
  }

  /** UTF-8 of the line parts seen lately (client and decision fields are made once and reused). */
  private readonly parts = new Map<string, Buffer>();
  private partBytes = 0;

  private encoded(s: string): Buffer {
    if (s.length === 0) return EMPTY;
    let b = this.parts.get(s);
    if (b === undefined) {
      b = Buffer.from(s, 'utf8');
      // Bounded: many clients and statements start the cache afresh rather than grow it.
      if (this.parts.size >= PART_ENTRIES || this.partBytes + b.length > PART_BYTES) { this.parts.clear(); this.partBytes = 0; }
      this.parts.set(s, b);
      this.partBytes += b.length;
    }
    return b;
  }

  /** The line prefix changes once per millisecond: encoded when it does. */
  private prefixText = '';
  private prefixEncoded = EMPTY;

  private prefixBytes(prefix: string): Buffer {
    if (prefix !== this.prefixText) {
      this.prefixText = prefix;
      this.prefixEncoded = Buffer.from(prefix, 'latin1');
    }
    return this.prefixEncoded;
  }

  private flush(): void {
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null; }
    if (this.used === 0) return;
    const n = this.used;
    this.used = 0;
    this.writeAll(this.out.subarray(0, n));
  }

  private writeAll(buf: Buffer): void {
    try {
      let off = 0;
      // A regular file takes the whole buffer; the loop is for the rare short write.
      while (off < buf.length) off += writeSync(this.fd, buf, off, buf.length - off);
      this.failing = false;
    } catch (err) {
      if (!this.failing) this.onError(err as Error);
      this.failing = true;
    }
  }

  reopen(): void {
    if (this.closed) return;
    this.flush();
    let next: number;
    try {
      next = openSync(this.path, 'a', 0o640);
    } catch (err) {
      // Keep writing to the file we have rather than lose lines.
      this.onError(err as Error);
      return;
    }
    closeSync(this.fd);
    this.fd = next;
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    try { closeSync(this.fd); } catch { /* already closed */ }
  }
}
