// Concern: a raw-protocol client that logs in through scopegate with a token and records every byte the server side sends it.
/**
 * Shared helper for test/security/*.test.ts (defines no tests). Builds on
 * test/harness/rawclient.ts: login with a token as the cleartext password, the messages
 * rawclient lacks (Describe/Close of a statement), and taps that keep everything a client
 * received (rows, errors, notices, parameter statuses) so a test can say a secret never
 * reached it in any form.
 */
import type pg from 'pg';
import { dataRow, errorFields, fe, RawClient, typed, type Msg } from '../harness/rawclient.js';

export { dataRow, errorFields, fe, RawClient, type Msg };

function cstr(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

/** Frontend messages rawclient.ts does not build. */
export const fe2 = {
  describeStatement: (name = '') => typed('D', Buffer.concat([Buffer.from('S'), cstr(name)])),
  describePortal: (name = '') => typed('D', Buffer.concat([Buffer.from('P'), cstr(name)])),
  closeStatement: (name = '') => typed('C', Buffer.concat([Buffer.from('S'), cstr(name)])),
  password: (pw: string) => typed('p', cstr(pw)),
  /** Parse, Bind, Describe, Execute of one statement (no Sync): one step of a pipeline. */
  step: (sql: string, params: Array<string | null> = [], name = '', portal = '') =>
    Buffer.concat([fe.parse(sql, name), fe.bind(params, portal, name), fe2.describePortal(portal), fe.execute(portal)]),
};

/** A raw client logged in through scopegate; `received` is every message since the TCP connect. */
export class Wire {
  readonly received: Msg[] = [];
  private constructor(readonly c: RawClient) {}

  /**
   * Connects and logs in (cleartext password = the token). `params` are extra startup
   * parameters. Returns the client, or the startup ErrorResponse fields when refused.
   */
  static async login(port: number, user: string, database: string, token: string, params: Record<string, string> = {}): Promise<Wire | { refused: Record<string, string>; received: Msg[] }> {
    const c = await RawClient.connect(port);
    const w = new Wire(c);
    c.write(startup({ user, database, ...params }));
    for (;;) {
      let m: Msg;
      try {
        m = await w.read();
      } catch (err) {
        c.close();
        return { refused: { M: String(err) }, received: w.received };
      }
      if (m.type === 'R' && m.body.readInt32BE(0) === 3) c.write(fe2.password(token));
      else if (m.type === 'R' && m.body.readInt32BE(0) !== 0) throw new Error(`unexpected authentication request ${m.body.readInt32BE(0)}`);
      else if (m.type === 'E') { c.close(); return { refused: errorFields(m.body), received: w.received }; }
      else if (m.type === 'Z') return w;
    }
  }

  /** Logs in or throws. */
  static async open(port: number, user: string, database: string, token: string, params: Record<string, string> = {}): Promise<Wire> {
    const w = await Wire.login(port, user, database, token, params);
    if (!(w instanceof Wire)) throw new Error(`login refused: ${JSON.stringify(w.refused)}`);
    return w;
  }

  async read(timeoutMs = 20_000): Promise<Msg> {
    const m = await this.c.read(timeoutMs);
    this.received.push(m);
    return m;
  }

  write(...parts: Buffer[]): void {
    this.c.write(Buffer.concat(parts));
  }

  /** Reads through `n` ReadyForQuery messages (or until the server closes the connection). */
  async untilReady(n = 1, timeoutMs = 20_000): Promise<{ msgs: Msg[]; closed: boolean }> {
    const msgs: Msg[] = [];
    let seen = 0;
    while (seen < n) {
      let m: Msg;
      try {
        m = await this.read(timeoutMs);
      } catch (err) {
        if (/closed/.test(String(err))) return { msgs, closed: true };
        throw err;
      }
      msgs.push(m);
      if (m.type === 'Z') seen++;
    }
    return { msgs, closed: false };
  }

  /** One simple Query, through its ReadyForQuery. */
  async query(sql: string): Promise<Msg[]> {
    this.write(fe.query(sql));
    return (await this.untilReady()).msgs;
  }

  /** Every text the client has received so far, as one string (secrets must not be in it). */
  text(): string {
    return this.received.map((m) => m.body.toString('utf8')).join('\n');
  }

  close(): void {
    this.write(fe.terminate());
    this.c.close();
  }
}

function startup(params: Record<string, string>): Buffer {
  const parts: Buffer[] = [Buffer.alloc(8)];
  for (const [k, v] of Object.entries(params)) parts.push(cstr(k), cstr(v));
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  out.writeInt32BE(out.length, 0);
  out.writeInt32BE(196608, 4);
  return out;
}

/** Text values of the DataRows among `msgs`. */
export function rowsOf(msgs: Msg[]): Array<Array<string | null>> {
  return msgs.filter((m) => m.type === 'D').map((m) => dataRow(m.body));
}

/** Fields of every ErrorResponse among `msgs`. */
export function errorsOf(msgs: Msg[]): Array<Record<string, string>> {
  return msgs.filter((m) => m.type === 'E').map((m) => errorFields(m.body));
}

/**
 * Keeps every byte a connected pg.Client receives from now on (rows, errors, notices,
 * ParameterStatus), for "the secret never reached this client in any form".
 */
export function tap(c: pg.Client): () => string {
  const chunks: Buffer[] = [];
  const stream = (c as unknown as { connection: { stream: NodeJS.EventEmitter } }).connection.stream;
  stream.on('data', (d: Buffer) => chunks.push(Buffer.from(d)));
  return () => Buffer.concat(chunks).toString('utf8');
}
