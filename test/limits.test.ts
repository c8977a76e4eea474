// Concern: limits on what one client may send (before and after login, statement size and count) end that client's request with a clear error and leave everyone else served.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { countStatements } from '../src/session/limits.js';
import { errorFields, fe, firstError, RawClient, rawLogin, startupPacket, waitFor } from './harness/rawclient.js';
import { DB, errorOf, startFixture, type Fixture } from './scope.fixture.test.js';
import { freePort } from './harness/ports.js';
import { parseConfig } from '../src/config.js';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { parse as parseYaml } from 'yaml';

describe('countStatements (the lexical count behind max_statements_per_query)', () => {
  it('counts statements outside quotes and comments only', () => {
    assert.equal(countStatements('SELECT 1'), 1);
    assert.equal(countStatements('SELECT 1;'), 1);
    assert.equal(countStatements('SELECT 1; SELECT 2;; ;'), 2);
    assert.equal(countStatements("SELECT ';;;', \"a;b\", E'\\';', $$;;$$, $x$;$x$ -- ;;\n; /* ; /* ; */ ; */ SELECT 3"), 2);
    assert.equal(countStatements('SELECT 1;'.repeat(5000), 101), 101, 'stops counting past the limit');
  });
});

describe('limits', () => {
  let fx: Fixture;
  before(async () => {
    fx = await startFixture({ poolSize: 2, config: { pool: { client_login_timeout: '1s', max_login_packet_size: 65536, max_statement_size: 65536, max_statements_per_query: 100 } } });
  });
  after(async () => { await fx?.stop(); });

  /** A bystander's query, run while something else goes on: it must be answered correctly. */
  async function bystanderOk(): Promise<void> {
    const c = await fx.client('orders:read', { sub: 'bystander' });
    assert.equal((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 10);
    await c.end();
  }

  it('a password message larger than max_login_packet_size ends that client with 08P01; others are served', async () => {
    const raw = await RawClient.connect(fx.sg.port);
    raw.write(startupPacket({ user: 'mallory', database: 'app' }));
    assert.equal((await raw.read()).type, 'R'); // the authentication request
    // 8 MB announced: refused as soon as its header arrives, without reading the rest.
    const header = Buffer.alloc(5);
    header.write('p', 0);
    header.writeInt32BE(8 * 1024 * 1024, 1);
    raw.write(Buffer.concat([header, Buffer.alloc(1024 * 1024, 0x41)]));
    const got = await raw.readUntilClosed();
    const err = got.find((m) => m.type === 'E');
    assert.ok(err !== undefined, 'an ErrorResponse before the close');
    const f = errorFields(err.body);
    assert.equal(f.C, '08P01');
    assert.match(f.M ?? '', /exceeds the limit of 65536/);
    await bystanderOk();
  });

  it('a client that does not finish its login within client_login_timeout is closed with 08P01', async () => {
    const silent = await RawClient.connect(fx.sg.port);
    const half = await RawClient.connect(fx.sg.port);
    half.write(startupPacket({ user: 'slow', database: 'app' }));
    const [a, b] = await Promise.all([silent.readUntilClosed(5_000), half.readUntilClosed(5_000)]);
    for (const got of [a, b]) {
      const err = got.find((m) => m.type === 'E');
      assert.ok(err !== undefined);
      assert.match(errorFields(err.body).M ?? '', /client_login_timeout/);
    }
    await bystanderOk();
  });

  it('a statement past max_statement_size gets 54000, simple and extended, and the session goes on', async () => {
    const c = await fx.client('orders:read', { sub: 'big' });
    const text = `SELECT count(*) FROM orders WHERE status <> '${'x'.repeat(70_000)}'`;
    const simple = await errorOf(() => c.query(text));
    assert.equal(simple.code, '54000');
    assert.match(simple.message, /max_statement_size/);
    const ext = await errorOf(() => c.query({ text, values: [] }));
    assert.equal(ext.code, '54000');
    assert.equal((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 10);
    await c.end();
  });

  it('a Query or Parse whose header declares far more than max_statement_size ends the session at once, its body never held', async () => {
    for (const type of ['Q', 'P']) {
      const { raw } = await rawLogin(fx.sg.port, 'hoarder', await fx.token('orders:read', 'hoarder'), DB);
      // 40 MB announced (max_packet_size allows it), 64 KiB sent: nothing more will come.
      const head = Buffer.alloc(5);
      head.write(type, 0);
      head.writeInt32BE(40 * 1024 * 1024, 1);
      raw.write(Buffer.concat([head, Buffer.alloc(64 * 1024, 0x61)]));
      const msgs = await raw.readUntilClosed(30_000);
      const err = msgs.find((m) => m.type === 'E');
      assert.ok(err, `${type}: an ErrorResponse before the close`);
      const f = errorFields(err.body);
      assert.equal(f.C, '54000', `${type}: ${f.M}`);
      assert.equal(f.S, 'FATAL');
      assert.match(f.M!, /max_statement_size/);
    }
    await bystanderOk();
  });

  it('a client that does not read what scopegate answers it is not read either: its pipelined statements wait, then all are answered', async () => {
    const { raw } = await rawLogin(fx.sg.port, 'nonreader', await fx.token('orders:read', 'nonreader'), DB);
    const denied = (): number => fx.audit().filter((l) => l.sub === 'nonreader' && l.decision === 'deny').length;
    // Refused by scopegate itself (no server involved): only the client's socket can push back.
    const N = 60_000;
    const q = fe.query('SELECT value FROM secrets');
    raw.socket.pause(); // reads nothing: the kernel's buffers fill with ~10 MB of answers
    raw.write(Buffer.concat(Array.from({ length: N }, () => q)));
    // While it does not read, scopegate stops once the answers fill the socket: the count of
    // refusals stops growing short of N (each poll is a bystander's round trip meanwhile).
    let last = -1;
    const stalled = await waitFor(async () => {
      await bystanderOk();
      const now = denied();
      const same = now === last && now > 0;
      last = now;
      return same ? now : null;
    }, 'refusals to stop growing while the client does not read', 60_000, 200);
    assert.ok(stalled! < N, `all ${N} statements were worked through for a client that read nothing`);
    // Once it reads, the rest follows, in order, every one refused.
    raw.socket.resume();
    let errors = 0;
    for (let i = 0; i < N; i++) {
      const msgs = await raw.readUntilReady(30_000);
      if (firstError(msgs)?.C === '42501') errors++;
    }
    raw.close();
    assert.equal(errors, N);
    await waitFor(() => denied() === N, 'every refusal audited');
  });

  it('more statements than max_statements_per_query in one Query get 54000; semicolons in literals do not count', async () => {
    const c = await fx.client('orders:read', { sub: 'many' });
    const e = await errorOf(() => c.query('SELECT 1;'.repeat(150)));
    assert.equal(e.code, '54000');
    assert.match(e.message, /max_statements_per_query/);
    const fine = await c.query('SELECT 1;'.repeat(50));
    assert.equal(Array.isArray(fine) ? fine.length : 1, 50);
    const literal = await c.query(`SELECT '${';'.repeat(500)}' AS v`);
    assert.equal(literal.rows[0].v, ';'.repeat(500));
    await c.end();
    await bystanderOk();
  });
});

describe('max_partial_message_bytes (what all clients\' unfinished messages hold together) and max_user_client_connections', () => {
  const KiB = 1024;
  const MiB = 1024 * KiB;
  let fx: Fixture;
  let http: number;
  before(async () => {
    http = await freePort();
    fx = await startFixture({ poolSize: 2, config: {
      pool: { max_packet_size: 2 * MiB, max_partial_message_bytes: 3 * MiB, max_user_client_connections: 2 },
      admin: { scope: 'scopegate:admin', listen_http: `127.0.0.1:${http}` },
    } });
  });
  after(async () => { await fx?.stop(); });

  const held = async (): Promise<number> => {
    const body = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
    return Number(/^scopegate_partial_message_bytes (\d+)$/m.exec(body)?.[1] ?? -1);
  };
  /** A logged-in client that has sent `sent` bytes of a CopyData message of `size` (header included). */
  const partial = async (sub: string, size: number, sent: number): Promise<{ raw: RawClient; rest: Buffer }> => {
    const { raw } = await rawLogin(fx.sg.port, sub, await fx.token('orders:read', sub), DB);
    const m = Buffer.alloc(size, 0x78);
    m.write('d', 0);
    m.writeInt32BE(size - 1, 1);
    raw.write(m.subarray(0, sent));
    return { raw, rest: m.subarray(sent) };
  };
  const countOrders = async (raw: RawClient): Promise<number> => {
    raw.write(fe.query('SELECT count(*)::int AS n FROM orders'));
    const msgs = await raw.readUntilReady(30_000);
    assert.equal(firstError(msgs), undefined);
    const row = msgs.find((m) => m.type === 'D')!;
    return Number(row.body.toString('utf8', 6, 6 + row.body.readInt32BE(2)));
  };

  it('the client that would take the total past it ends with FATAL 53200; the others finish their messages, and a close gives its bytes back', async () => {
    const base = await held();
    const a = await partial('slow-a', 1536 * KiB, 1200 * KiB);
    const b = await partial('slow-b', 1536 * KiB, 1200 * KiB);
    await waitFor(async () => (await held()) === base + 2400 * KiB, 'both unfinished messages held');
    // A third 1200 KiB would make 3600 KiB, past 3 MiB: refused, and only this client goes.
    const c = await partial('slow-c', 1536 * KiB, 1200 * KiB);
    const got = await c.raw.readUntilClosed(30_000);
    const err = got.find((m) => m.type === 'E');
    assert.ok(err !== undefined, 'an ErrorResponse before the close');
    const f = errorFields(err.body);
    assert.equal(f.C, '53200');
    assert.equal(f.S, 'FATAL');
    assert.match(f.M ?? '', /max_partial_message_bytes/);
    assert.equal(await held(), base + 2400 * KiB, 'what the refused client sent is not held');
    // A finishes its message (CopyData outside COPY: ignored) and is served as before.
    a.raw.write(a.rest);
    assert.equal(await countOrders(a.raw), 10);
    // B leaves mid-message: its bytes are given back, so 1900 KiB of D's fit with nothing else held.
    b.raw.close();
    await waitFor(async () => (await held()) === base, 'nothing held once A finished and B left');
    const d = await partial('slow-d', 2 * MiB, 1900 * KiB);
    await waitFor(async () => (await held()) === base + 1900 * KiB, "D's unfinished message held");
    d.raw.write(d.rest);
    assert.equal(await countOrders(d.raw), 10);
    assert.equal(await held(), base);
    a.raw.close();
    d.raw.close();
  });

  it('RELOAD applies a new limit to the next bytes', async () => {
    const cfg = parseYaml(readFileSync(fx.sg.configFile, 'utf8')) as Record<string, unknown> & { pool: Record<string, unknown> };
    const { listen: _listen, ...rest } = cfg;
    fx.sg.writeConfig({ ...rest, pool: { ...cfg.pool, max_partial_message_bytes: 2 * MiB } });
    const admin = new pg.Client({ host: '127.0.0.1', port: fx.sg.port, user: 'ops', password: await fx.token('scopegate:admin', 'ops'), database: 'pgbouncer' });
    await admin.connect();
    assert.equal((await admin.query('RELOAD')).command, 'RELOAD');
    const base = await held();
    const a = await partial('reload-a', 1536 * KiB, 1200 * KiB);
    await waitFor(async () => (await held()) === base + 1200 * KiB, "A's unfinished message held");
    // 2400 KiB would fit under the old 3 MiB, not under the new 2 MiB.
    const b = await partial('reload-b', 1536 * KiB, 1200 * KiB);
    const err = (await b.raw.readUntilClosed(30_000)).find((m) => m.type === 'E');
    assert.equal(err === undefined ? null : errorFields(err.body).C, '53200');
    a.raw.write(a.rest);
    assert.equal(await countOrders(a.raw), 10);
    a.raw.close();
    fx.sg.writeConfig(rest);
    await admin.query('RELOAD');
    await admin.end();
  });

  it('max_user_client_connections: a third connection of one subject gets FATAL 53300, whatever login name it uses; others connect; a close frees a slot', async () => {
    const first = await fx.client('orders:read', { sub: 'crowd' });
    const second = await fx.client('orders:read', { sub: 'crowd' });
    // The same token's subject under another login name counts the same.
    const third = await errorOf(async () => {
      const c = await fx.client('orders:read', { sub: 'crowd', extra: { user: 'not-crowd' } });
      c.on('error', () => undefined);
    });
    assert.equal(third.code, '53300');
    assert.match(third.message, /max_user_client_connections \(2\)/);
    const other = await fx.client('orders:read', { sub: 'someone-else' });
    assert.equal((await other.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 10);
    assert.equal((await second.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 10, 'the ones already in are served');
    await first.end();
    // The server side of the close is seen a moment later: try until the slot is free.
    const again = await waitFor(async () => {
      try {
        return await fx.client('orders:read', { sub: 'crowd' });
      } catch (err) {
        if ((err as { code?: string }).code === '53300') return null;
        throw err;
      }
    }, 'a slot for crowd once a connection closed');
    assert.equal((await again!.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 10);
    await Promise.all([second.end(), other.end(), again!.end()]);
  });

  it('config: less than max_packet_size is an error (one message of the largest size must fit)', () => {
    assert.throws(() => parseConfig({ databases: { app: { url: 'postgres://u:p@127.0.0.1:5432/app' } }, pool: { max_packet_size: 4 * MiB, max_partial_message_bytes: 2 * MiB } }, null), /max_partial_message_bytes: must be at least max_packet_size/);
  });
});
