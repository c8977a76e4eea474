/**
 * A small raw PostgreSQL wire-protocol client for tests: it sends exactly the bytes it is
 * told to and reads the server's messages one by one, so tests can check what a pooler
 * answers to odd or malformed input.
 */
import { connect, type Socket } from 'node:net';
import { SUPERPASS, SUPERUSER } from './postgres.js';

export interface Msg {
  /** One-letter message type ('R', 'S', 'E', 'Z', ...). */
  type: string;
  body: Buffer;
}

export const PROTOCOL_3_0 = 196608;
export const SSL_REQUEST = 80877103;
export const CANCEL_REQUEST = 80877102;

function cstr(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

/** A typed frontend message: type byte, int32 length, body. */
export function typed(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

/** An untyped startup-phase packet: int32 length, int32 code, rest. */
export function startupPacket(params: Record<string, string>, code = PROTOCOL_3_0): Buffer {
  const parts: Buffer[] = [Buffer.alloc(8)];
  for (const [k, v] of Object.entries(params)) parts.push(cstr(k), cstr(v));
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  out.writeInt32BE(out.length, 0);
  out.writeInt32BE(code, 4);
  return out;
}

export function sslRequest(): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(SSL_REQUEST, 4);
  return b;
}

export function cancelRequestPacket(pid: number, secret: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(CANCEL_REQUEST, 4);
  b.writeInt32BE(pid, 8);
  b.writeInt32BE(secret | 0, 12);
  return b;
}

export const fe = {
  query: (sql: string) => typed('Q', cstr(sql)),
  parse: (sql: string, name = '', types: number[] = []) => {
    const t = Buffer.alloc(2 + 4 * types.length);
    t.writeInt16BE(types.length, 0);
    types.forEach((oid, i) => t.writeInt32BE(oid, 2 + 4 * i));
    return typed('P', Buffer.concat([cstr(name), cstr(sql), t]));
  },
  /** Bind with text-format parameters (null for SQL NULL) and text results. */
  bind: (params: Array<string | null> = [], portal = '', stmt = '') => {
    const parts: Buffer[] = [cstr(portal), cstr(stmt), Buffer.from([0, 0])];
    const n = Buffer.alloc(2);
    n.writeInt16BE(params.length, 0);
    parts.push(n);
    for (const p of params) {
      const len = Buffer.alloc(4);
      if (p === null) { len.writeInt32BE(-1, 0); parts.push(len); continue; }
      const v = Buffer.from(p, 'utf8');
      len.writeInt32BE(v.length, 0);
      parts.push(len, v);
    }
    parts.push(Buffer.from([0, 0]));
    return typed('B', Buffer.concat(parts));
  },
  describePortal: (portal = '') => typed('D', Buffer.concat([Buffer.from('P'), cstr(portal)])),
  execute: (portal = '', maxRows = 0) => {
    const m = Buffer.alloc(4);
    m.writeInt32BE(maxRows, 0);
    return typed('E', Buffer.concat([cstr(portal), m]));
  },
  sync: () => typed('S'),
  flush: () => typed('H'),
  terminate: () => typed('X'),
};

/** Fields of an ErrorResponse/NoticeResponse body by field letter (C = SQLSTATE, M = message). */
export function errorFields(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 0;
  while (off < body.length && body[off] !== 0) {
    const code = String.fromCharCode(body[off]!);
    const nul = body.indexOf(0, off + 1);
    if (nul < 0) break;
    out[code] = body.toString('utf8', off + 1, nul);
    off = nul + 1;
  }
  return out;
}

/** Text values of a DataRow body (null for NULL). */
export function dataRow(body: Buffer): Array<string | null> {
  const n = body.readInt16BE(0);
  const out: Array<string | null> = [];
  let off = 2;
  for (let i = 0; i < n; i++) {
    const len = body.readInt32BE(off);
    off += 4;
    if (len < 0) { out.push(null); continue; }
    out.push(body.toString('utf8', off, off + len));
    off += len;
  }
  return out;
}

/** name -> value of a ParameterStatus body. */
export function parameterStatus(body: Buffer): [string, string] {
  const k = body.indexOf(0);
  return [body.toString('utf8', 0, k), body.toString('utf8', k + 1, body.length - 1)];
}

export class RawClient {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private ended = false;
  /** Resolves when the server closed (or reset) the connection. */
  readonly closed: Promise<void>;
  /** From BackendKeyData after a successful startup. */
  pid = 0;
  secret = 0;
  readonly params = new Map<string, string>();

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      const done = (): void => { this.ended = true; this.wake(); resolve(); };
      socket.on('end', done);
      socket.on('close', done);
      socket.on('error', done);
    });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host });
      s.once('connect', () => { s.off('error', reject); resolve(new RawClient(s)); });
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private async need(n: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`connection closed (wanted ${n} bytes, have ${this.buf.length})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes from the server`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => { clearTimeout(t); resolve(); };
      });
    }
  }

  write(data: Buffer): void {
    this.socket.write(data);
  }

  /** Reads one raw byte (the answer to SSLRequest). */
  async readByte(timeoutMs = 10_000): Promise<string> {
    await this.need(1, timeoutMs);
    const b = this.buf[0]!;
    this.buf = this.buf.subarray(1);
    return String.fromCharCode(b);
  }

  /** Reads the next typed message; throws if the connection closes first. */
  async read(timeoutMs = 10_000): Promise<Msg> {
    await this.need(5, timeoutMs);
    const len = this.buf.readInt32BE(1);
    await this.need(1 + len, timeoutMs);
    const m = { type: String.fromCharCode(this.buf[0]!), body: Buffer.from(this.buf.subarray(5, 1 + len)) };
    this.buf = this.buf.subarray(1 + len);
    if (m.type === 'K') { this.pid = m.body.readInt32BE(0); this.secret = m.body.readInt32BE(4); }
    if (m.type === 'S') { const [k, v] = parameterStatus(m.body); this.params.set(k, v); }
    return m;
  }

  /** Reads messages up to and including ReadyForQuery (or an error followed by close). */
  async readUntilReady(timeoutMs = 10_000): Promise<Msg[]> {
    const out: Msg[] = [];
    for (;;) {
      const m = await this.read(timeoutMs);
      out.push(m);
      if (m.type === 'Z') return out;
    }
  }

  /** Reads messages until the server closes the connection; returns what arrived. */
  async readUntilClosed(timeoutMs = 10_000): Promise<Msg[]> {
    const out: Msg[] = [];
    for (;;) {
      try {
        out.push(await this.read(timeoutMs));
      } catch (err) {
        if (this.ended) return out;
        throw err;
      }
    }
  }

  /** Sends a startup packet and reads through ReadyForQuery. */
  async startup(params: Record<string, string>, code = PROTOCOL_3_0): Promise<Msg[]> {
    this.write(startupPacket(params, code));
    return this.readUntilReady();
  }

  /** Simple query; returns all messages through ReadyForQuery. */
  async query(sql: string): Promise<Msg[]> {
    this.write(fe.query(sql));
    return this.readUntilReady();
  }

  /** Extended query with text parameters: Parse/Bind/Describe/Execute/Sync. */
  async extended(sql: string, params: Array<string | null> = []): Promise<Msg[]> {
    this.write(Buffer.concat([fe.parse(sql), fe.bind(params), fe.describePortal(), fe.execute(), fe.sync()]));
    return this.readUntilReady();
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The rows (text values) among `msgs`. */
export function rows(msgs: Msg[]): Array<Array<string | null>> {
  return msgs.filter((m) => m.type === 'D').map((m) => dataRow(m.body));
}

/** The first ErrorResponse among `msgs`, as fields, or undefined. */
export function firstError(msgs: Msg[]): Record<string, string> | undefined {
  const e = msgs.find((m) => m.type === 'E');
  return e ? errorFields(e.body) : undefined;
}

/** Sends a CancelRequest on a fresh connection and waits until the server closes it. */
export async function sendCancel(port: number, pid: number, secret: number, host = '127.0.0.1'): Promise<void> {
  const c = await RawClient.connect(port, host);
  c.write(cancelRequestPacket(pid, secret));
  await c.closed;
}

/**
 * Polls `cond` until it returns a truthy value (returned) or `timeoutMs` passes (throws with
 * `what`). For waiting on server-side state such as pg_stat_activity, never as a sleep.
 */
export async function waitFor<T>(cond: () => Promise<T> | T, what: string, timeoutMs = 15_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * A raw connection logged in with a token as the password (scopegate's cleartext request):
 * the login's messages up to ReadyForQuery, whose ErrorResponse the caller may check.
 */
export async function rawLogin(port: number, user: string, token: string, database = 'app'): Promise<{ raw: RawClient; login: Msg[] }> {
  const raw = await RawClient.connect(port);
  raw.write(startupPacket({ user, database }));
  const auth = await raw.read();
  if (auth.type !== 'R' || auth.body.readInt32BE(0) !== 3) throw new Error(`expected a cleartext password request, got ${auth.type}`);
  raw.write(typed('p', Buffer.from(token + '\0', 'utf8')));
  const login = await raw.readUntilReady();
  return { raw, login };
}

/** A raw connection straight to PostgreSQL as the superuser (a server with password auth), logged in. */
export async function rawSuperuserLogin(port: number): Promise<RawClient> {
  const raw = await RawClient.connect(port);
  raw.write(startupPacket({ user: SUPERUSER, database: 'postgres' }));
  await raw.read(5_000);
  raw.write(typed('p', Buffer.from(`${SUPERPASS}\0`)));
  await raw.readUntilReady(5_000);
  return raw;
}
