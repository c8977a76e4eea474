import { writeFileSync } from 'node:fs';
/**
 * The environment of the protocol fuzz suite (no tests here): a real PostgreSQL with the
 * scope fixture's schema, the real scopegate CLI in front of it with small size limits and a
 * pool of one server connection, development tokens, and a raw loopback connection that
 * records every byte the server sends and when it closes.
 */
import { connect, type Socket } from 'node:net';
import pg from 'pg';
import { startPostgres, type TestPostgres } from '../harness/postgres.js';
import { startLoggedPostgres } from '../scope.fixture.test.js';
import { startScopegate, type LogLine, type RunningScopegate } from '../harness/scopegate.js';
import { AUTH, AUTH_PASSWORD, DB, EXAMPLE_POLICY, ROLES_SQL, SCHEMA_SQL, SECRET, mintToken } from '../scope.fixture.test.js';
import type { Limits } from './frontend-gen.js';

export const LIMITS: Limits = { maxLoginPacket: 1024, maxPacket: 4096, maxStatement: 2048 };

/** A table the bad clients may write and COPY into; the bystander counts `orders`, which nobody writes. */
export const FUZZ_SQL = `
CREATE TABLE fuzz_sink (a int, b text);
GRANT ALL ON fuzz_sink TO app_admin, app_writer;
`;

export interface FuzzEnv {
  pg: TestPostgres;
  sg: RunningScopegate;
  /** Starts a fresh scopegate (after a failed case, so that shrinking starts from a clean process). */
  restart(): Promise<void>;
  token(scope: string, sub: string): Promise<string>;
  client(scope: string, sub: string, deadlineMs: number): Promise<pg.Client>;
  stop(): Promise<void>;
}

export async function startFuzzEnv(): Promise<FuzzEnv> {
  const pgsrv = process.env.SG_FUZZ_PGLOG ? await startLoggedPostgres([]) : await startPostgres();
  await pgsrv.sql(ROLES_SQL);
  await pgsrv.sql(`CREATE DATABASE ${DB}`);
  await pgsrv.sql(SCHEMA_SQL, DB);
  await pgsrv.sql(FUZZ_SQL, DB);
  // SG_FUZZ_WIRE=FILE: what scopegate sends the server is relayed and recorded there (hex, a line per chunk).
  const serverPort = process.env.SG_FUZZ_WIRE ? await wireRecorder(pgsrv.port, process.env.SG_FUZZ_WIRE) : pgsrv.port;
  const cfg: Record<string, unknown> = {
    databases: { [DB]: { url: pgsrv.url(DB, 'authenticator', AUTH_PASSWORD).replace(`:${pgsrv.port}/`, `:${serverPort}/`), pool_size: 1 } },
    auth: {
      ...AUTH,
      // Thousands of refused logins come from 127.0.0.1: no slow-down, or every case would wait.
      failure_delay: { after: 1_000_000 },
      rules: [{ user: 'saslfuzz', mechanism: 'oauthbearer' }],
    },
    pool: {
      max_login_packet_size: LIMITS.maxLoginPacket,
      max_packet_size: LIMITS.maxPacket,
      max_statement_size: LIMITS.maxStatement,
      query_wait_timeout: '30s',
    },
    log: { level: 'info' },
    policy: EXAMPLE_POLICY,
  };
  const env: FuzzEnv = {
    pg: pgsrv,
    sg: await startScopegate(cfg, { SG_SECRET: SECRET }),
    async restart() {
      await env.sg.stop('SIGKILL').catch(() => null);
      env.sg = await startScopegate(cfg, { SG_SECRET: SECRET });
    },
    token: (() => {
      const cache = new Map<string, Promise<string>>();
      return (scope: string, sub: string) => {
        const k = `${sub}\0${scope}`;
        let t = cache.get(k);
        if (t === undefined) { t = mintToken(env.sg.configFile, scope, sub); cache.set(k, t); }
        return t;
      };
    })(),
    async client(scope, sub, deadlineMs) {
      const c = new pg.Client({
        host: '127.0.0.1',
        port: env.sg.port,
        user: sub,
        password: await env.token(scope, sub),
        database: DB,
        connectionTimeoutMillis: deadlineMs,
        query_timeout: deadlineMs,
      });
      c.on('error', () => undefined);
      await c.connect();
      return c;
    },
    async stop() {
      await env.sg.stop().catch(() => null);
      // SG_FUZZ_PGLOG=FILE: the server's log (log_statement=all) is written there, to see what it was sent.
      if (process.env.SG_FUZZ_PGLOG && 'serverLog' in pgsrv) writeFileSync(process.env.SG_FUZZ_PGLOG, (pgsrv as { serverLog(): string }).serverLog());
      await pgsrv.stop();
    },
  };
  return env;
}

/** Log lines that show scopegate hit a bug: an error-level line, or anything carrying a stack trace. */
export function badLogLines(lines: readonly LogLine[]): LogLine[] {
  return lines.filter((l) => (typeof l.level === 'number' && l.level >= 50) || JSON.stringify(l).includes('"stack"'));
}

export interface BeMsg { type: string; body: Buffer }

/**
 * A raw client connection that records everything: the bytes received, the typed messages
 * in them from a chosen offset on, and the close. Never blocks without a deadline.
 */
export class FuzzConn {
  private chunks: Buffer[] = [];
  private size = 0;
  private waiters: Array<() => void> = [];
  isClosed = false;
  readonly closed: Promise<void>;
  private parsed: BeMsg[] = [];
  /** Bytes of `received` already split into messages. */
  private parsedUpTo = 0;
  /** Index into parsed[] where the steps' answers begin (see mark()). */
  private markAt = 0;

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => { this.chunks.push(d); this.size += d.length; this.wake(); });
    this.closed = new Promise((resolve) => {
      const done = (): void => { this.isClosed = true; this.wake(); resolve(); };
      socket.on('close', done);
      socket.on('error', () => undefined);
    });
  }

  static open(port: number): Promise<FuzzConn> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host: '127.0.0.1' });
      s.setNoDelay(true);
      s.once('connect', () => { s.off('error', reject); resolve(new FuzzConn(s)); });
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Everything received so far. */
  get received(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  /** Typed messages received from the cursor on (a message not yet whole is left for later). */
  messages(): BeMsg[] {
    const buf = this.received;
    let off = this.parsedUpTo;
    while (buf.length - off >= 5) {
      const len = buf.readInt32BE(off + 1);
      if (len < 4 || buf.length - off < 1 + len) break;
      this.parsed.push({ type: String.fromCharCode(buf[off]!), body: Buffer.from(buf.subarray(off + 5, off + 1 + len)) });
      off += 1 + len;
    }
    this.parsedUpTo = off;
    return this.parsed;
  }

  /** Messages from now on are what since() returns (called after the prelude). */
  mark(): void {
    this.markAt = this.messages().length;
  }

  /** Messages received since mark(). */
  since(): BeMsg[] {
    return this.messages().slice(this.markAt);
  }

  /** Resolves with true once `pred` holds (checked on every arrival), false at the deadline or close. */
  async until(pred: () => boolean, deadline: number): Promise<boolean> {
    for (;;) {
      if (pred()) return true;
      if (this.isClosed) return pred();
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  write(data: Buffer): Promise<void> {
    if (this.isClosed || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.write(data, () => resolve());
    });
  }

  /** Half-closes: the client has nothing more to say. */
  end(): void {
    if (!this.socket.destroyed) this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A loopback relay to the server that appends every client-to-server chunk to `file` (connection id, hex). */
async function wireRecorder(target: number, file: string): Promise<number> {
  const { createServer, connect } = await import('node:net');
  const { appendFileSync } = await import('node:fs');
  let n = 0;
  const server = createServer((c) => {
    const id = ++n;
    const s = connect(target, '127.0.0.1');
    c.on('data', (d) => { appendFileSync(file, `${id} ${Date.now()} ${d.toString('hex')}\n`); s.write(d); });
    s.on('data', (d) => c.write(d));
    c.on('close', () => s.destroy());
    s.on('close', () => c.destroy());
    c.on('error', () => s.destroy());
    s.on('error', () => c.destroy());
  });
  server.unref();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}
