/**
 * Server connections read into one reusable buffer (src/backend/server-reads.ts): bytes a
 * slow client's socket still holds must never be read over, and a message split across two
 * reads is copied before the second. A client that does not read while the server answers
 * with megabytes gets every byte as the server sent it (without the copy of a split
 * message's tail, the framing breaks and these tests fail). The last test is the one that
 * needs lend(): answers that each fill one read from the buffer's start, held by a full
 * client socket while the server connection serves the next transaction (without lend, B's
 * answer reaches A).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import pg from 'pg';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { startupPacket, typed, waitFor } from './harness/rawclient.js';
import { freePort } from './harness/ports.js';

let db: TestPostgres;
let sg: RunningScopegate;
let direct: pg.Client;
let httpPort: number;

before(async () => {
  db = await startPostgres();
  httpPort = await freePort();
  sg = await startScopegate({
    // `one`: a single server connection, so consecutive transactions (anyone's) read into one buffer.
    databases: { app: { url: db.url('postgres'), pool_size: 2 }, one: { url: db.url('postgres'), pool_size: 1 } },
    pool: { mode: 'transaction' },
    admin: { scope: 'scopegate:admin', listen_http: `127.0.0.1:${httpPort}` },
  });
  direct = new pg.Client({ connectionString: db.url('postgres') });
  await direct.connect();
});

after(async () => {
  await direct?.end().catch(() => undefined);
  await sg?.stop();
  await db?.stop();
});

/** A client socket that collects what it reads; `paused` stops reading (the kernel buffers fill). */
class SlowClient {
  private chunks: Buffer[] = [];
  private size = 0;
  private waiters: Array<() => void> = [];
  private constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => { this.chunks.push(c); this.size += c.length; for (const w of this.waiters.splice(0)) w(); });
  }

  static async open(port: number, database = 'app'): Promise<SlowClient> {
    const s = connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject); });
    const c = new SlowClient(s);
    s.write(startupPacket({ user: 'slow', database }));
    await c.untilReady();
    return c;
  }

  /** Takes the whole messages read so far; a partial one stays for later. */
  private take(): { type: string; body: Buffer }[] {
    const buf = Buffer.concat(this.chunks, this.size);
    const out: { type: string; body: Buffer }[] = [];
    let off = 0;
    while (off + 5 <= buf.length) {
      const end = off + 1 + buf.readInt32BE(off + 1);
      if (end > buf.length) break;
      out.push({ type: String.fromCharCode(buf[off]!), body: buf.subarray(off + 5, end) });
      off = end;
    }
    this.chunks = off < buf.length ? [buf.subarray(off)] : [];
    this.size = buf.length - off;
    return out;
  }

  /** Reads until `readies` ReadyForQuery messages have come; returns every message. */
  async untilReady(readies = 1): Promise<{ type: string; body: Buffer }[]> {
    const all: { type: string; body: Buffer }[] = [];
    let seen = 0;
    for (;;) {
      for (const m of this.take()) {
        // A view read over shifts the framing: fail here rather than wait for a length that never comes.
        assert.ok('RSKTDCZ'.includes(m.type), `unexpected message '${m.type}': the stream is not what the server sent`);
        all.push(m);
        if (m.type === 'Z') seen++;
      }
      if (seen >= readies) return all;
      await new Promise<void>((resolve, reject) => {
        this.waiters.push(resolve);
        this.socket.once('close', () => reject(new Error('closed')));
      });
    }
  }
}

/** Row i of the query below, as the server builds it. */
function expectedRow(i: number): string {
  const h = createHash('md5').update(String(i)).digest('hex');
  return `${i}:${h.repeat(40)}`;
}

/** Rows (i, md5(i) repeated `times`) for i = 1..n, each exactly as the server built it, in order. */
function assertRows(msgs: { type: string; body: Buffer }[], n: number, times: number): void {
  let next = 1;
  let bad = 0;
  for (const m of msgs) {
    if (m.type !== 'D') continue;
    const a = m.body.readInt32BE(2);
    const i = Number(m.body.toString('utf8', 6, 6 + a));
    const h = m.body.toString('utf8', 10 + a, 10 + a + m.body.readInt32BE(6 + a));
    if (i !== next || h !== createHash('md5').update(String(i)).digest('hex').repeat(times)) bad++;
    next++;
  }
  assert.equal(next - 1, n);
  assert.equal(bad, 0, `${bad} of ${n} rows differ from what the server sent`);
}

describe('reusable server reads', () => {
  it('a client that reads nothing while megabytes arrive gets every row intact', async () => {
    const n = 12_000; // ~15.5 MB: more than the loopback socket buffers hold
    const c = await SlowClient.open(sg.port);
    c.socket.pause();
    const marker = `slow-reader-${process.pid}`;
    const sql = `SELECT i || ':' || repeat(md5(i::text), 40) AS r /* ${marker} */ FROM generate_series(1, ${n}) i`;
    c.socket.write(typed('Q', Buffer.from(`${sql}\0`)));
    // The server is blocked writing to scopegate: scopegate stopped reading it because the
    // client's socket is full, so views of earlier reads are held in that socket's buffer.
    await waitFor(async () => {
      const r = await direct.query(`SELECT 1 FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' AND wait_event = 'ClientWrite' AND pid <> pg_backend_pid()`, [marker]);
      return r.rowCount === 1;
    }, 'the server blocked writing the result');
    c.socket.resume();
    const msgs = await c.untilReady();
    const rows = msgs.filter((m) => m.type === 'D');
    assert.equal(rows.length, n);
    let bad = 0;
    rows.forEach((m, k) => {
      const len = m.body.readInt32BE(2);
      if (m.body.toString('utf8', 6, 6 + len) !== expectedRow(k + 1)) bad++;
    });
    assert.equal(bad, 0, `${bad} of ${n} rows differ from what the server sent`);
    const tag = msgs.find((m) => m.type === 'C')?.body;
    assert.equal(tag?.toString('utf8', 0, tag.length - 1), `SELECT ${n}`);
    c.socket.destroy();
  });

  it('a late reader of many small rows gets them all, whole and in order', async () => {
    const n = 300_000; // small DataRows, many to a read: ~13 MB
    const c = await SlowClient.open(sg.port);
    c.socket.pause();
    const marker = `slow-small-${process.pid}`;
    c.socket.write(typed('Q', Buffer.from(`SELECT i, md5(i::text) AS h /* ${marker} */ FROM generate_series(1, ${n}) i\0`)));
    await waitFor(async () => {
      const r = await direct.query(`SELECT 1 FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' AND wait_event = 'ClientWrite' AND pid <> pg_backend_pid()`, [marker]);
      return r.rowCount === 1;
    }, 'the server blocked writing the result');
    c.socket.resume();
    assertRows(await c.untilReady(), n, 1);
    c.socket.destroy();
  });

  it('answers of a slow producer, each in a small read, survive a client whose socket is full', async () => {
    // The server flushes one 8 KB packet at a time (a row a fraction of a millisecond), so
    // reads are small and many end inside a row: the unfinished tail must be copied before
    // the next read overwrites the buffer, and what the client's full socket still holds
    // must not be read over (lend).
    const n = 6_000;
    const c = await SlowClient.open(sg.port);
    c.socket.pause();
    const marker = `slow-producer-${process.pid}`;
    c.socket.write(typed('Q', Buffer.from(`SELECT i, repeat(md5(i::text), 60) AS h, pg_sleep(0.0002) /* ${marker} */ FROM generate_series(1, ${n}) i\0`)));
    await waitFor(async () => {
      const r = await direct.query(`SELECT 1 FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' AND wait_event = 'ClientWrite' AND pid <> pg_backend_pid()`, [marker]);
      return r.rowCount === 1;
    }, 'the server blocked writing the result', 60_000);
    c.socket.resume();
    assertRows(await c.untilReady(), n, 60);
    c.socket.destroy();
  });
  it("answers a full client socket still holds are not read over: not by its next answer, not by another client's", async () => {
    // Each answer is one read at the start of the server connection's buffer. Once the kernel
    // buffers towards A are full, A's socket keeps views of its answers while the connection
    // goes back to the pool: the next read (A's own next answer, then B's) must go elsewhere.
    const counters = async (): Promise<{ xacts: number; stalls: number }> => {
      const body = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
      const read = (name: string): number => Number(new RegExp(`^${name}\\{database="one"[^}]*\\} (\\d+)$`, 'm').exec(body)?.[1] ?? 0);
      return { xacts: read('scopegate_transactions_total'), stalls: read('scopegate_client_output_stalls_total') };
    };
    const a = await SlowClient.open(sg.port, 'one');
    a.socket.pause();
    const start = await counters();
    const times = 250; // 8 KB answers: under the 16 KiB at which scopegate stops reading A
    // One query at a time, each answered and its connection released before the next, until
    // scopegate sets A's input aside (A's socket holds >= 16 KiB the kernel would not take).
    let sent = 0;
    for (;;) {
      sent++;
      a.socket.write(typed('Q', Buffer.from(`SELECT lpad('${sent}', 6, '0') AS i, repeat(md5('${sent}'), ${times}) AS h\0`)));
      const c = await waitFor(async () => {
        const now = await counters();
        return now.xacts >= start.xacts + sent || now.stalls > start.stalls ? now : null;
      }, `answer ${sent} or the stall`, 30_000, 0);
      if (c!.stalls > start.stalls) break;
      assert.ok(sent < 20_000, 'scopegate never stopped reading a client that reads nothing');
    }
    // B takes the one server connection; its answer (the same size as A's) is read from it now.
    const b = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'slow', database: 'one' });
    await b.connect();
    const secret = 'B-secret';
    const r = await b.query(`SELECT '999999' AS i, repeat('${secret}', ${times * 4}) AS h`);
    assert.equal(r.rows[0].h, secret.repeat(times * 4));
    await b.end();
    a.socket.resume();
    const msgs = await a.untilReady(sent);
    assert.equal(msgs.filter((m) => m.body.includes(secret)).length, 0, "another client's answer reached A");
    assertRows(msgs, sent, times);
    a.socket.destroy();
  });
});
