/**
 * The wire protocol as scopegate speaks it, checked byte by byte with a raw socket:
 * startup variants, malformed input, and the errors a pooler itself raises.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { RawClient, errorFields, fe, firstError, parameterStatus, rows, sslRequest, startupPacket, typed, waitFor, type Msg } from './harness/rawclient.js';

let db: TestPostgres;
let sg: RunningScopegate;
/** Connected before the malformed-input tests; must keep working through all of them. */
let survivor: pg.Client;

async function client(port: number, extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'proto', database: 'app', ...extra });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

async function ready(): Promise<RawClient> {
  const r = await RawClient.connect(sg.port);
  const msgs = await r.startup({ user: 'proto', database: 'app' });
  assert.equal(firstError(msgs), undefined);
  return r;
}

/** Expects a FATAL ErrorResponse with `code` and then the server closing the connection. */
async function expectFatal(r: RawClient, code: string): Promise<Record<string, string>> {
  const msgs = await r.readUntilClosed();
  const errs = msgs.filter((m) => m.type === 'E');
  assert.equal(errs.length, 1, `one ErrorResponse expected, got ${msgs.map((m) => m.type).join('')}`);
  const f = errorFields(errs[0]!.body);
  assert.equal(f.C, code, `SQLSTATE ${code} expected, got ${JSON.stringify(f)}`);
  assert.equal(f.S, 'FATAL');
  await r.closed;
  return f;
}

async function survivorWorks(): Promise<void> {
  assert.equal((await survivor.query('SELECT $1::int + 1 AS n', [1])).rows[0].n, 2);
}

before(async () => {
  db = await startPostgres();
  sg = await startScopegate({
    databases: { app: { url: db.url('postgres'), pool_size: 3 } },
    pool: { mode: 'transaction', query_wait_timeout: '5s', idle_transaction_timeout: 0 },
    log: { level: 'info' },
  });
  survivor = await client(sg.port);
});

after(async () => {
  await survivor?.end().catch(() => undefined);
  try {
    if (sg) await stopBounded(sg);
  } finally {
    if (db) await db.stop();
  }
});

/**
 * SIGTERM and wait for the exit; a scopegate that still has not exited after a generous
 * bound is killed and reported (a stuck server connection keeps its shutdown waiting).
 */
async function stopBounded(s: RunningScopegate, throwIfStuck = true): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<'stuck'>((resolve) => { timer = setTimeout(() => resolve('stuck'), throwIfStuck ? 20_000 : 8_000); });
  const code = await Promise.race([s.stop(), stuck]);
  clearTimeout(timer);
  if (code === 'stuck') {
    s.proc.kill('SIGKILL');
    if (throwIfStuck) throw new Error('scopegate did not exit after SIGTERM (a server connection is still borrowed)');
  }
}

describe('startup', () => {
  it('sends AuthenticationOk, the usual ParameterStatus set, BackendKeyData and ReadyForQuery', async () => {
    const r = await RawClient.connect(sg.port);
    const msgs = await r.startup({ user: 'proto', database: 'app', application_name: 'raw-app', client_encoding: 'UTF8' });
    assert.equal(msgs[0]!.type, 'R');
    assert.equal(msgs[0]!.body.readInt32BE(0), 0, 'AuthenticationOk');
    const params = new Map(msgs.filter((m) => m.type === 'S').map((m) => parameterStatus(m.body)));
    for (const p of ['server_version', 'client_encoding', 'DateStyle', 'TimeZone', 'standard_conforming_strings', 'integer_datetimes', 'application_name']) {
      assert.ok(params.has(p), `ParameterStatus ${p} missing; got ${[...params.keys()].join(', ')}`);
    }
    assert.match(params.get('server_version')!, /^18/);
    assert.equal(params.get('application_name'), 'raw-app');
    assert.equal(params.get('client_encoding'), 'UTF8');
    assert.equal(params.get('integer_datetimes'), 'on');
    assert.equal(params.get('standard_conforming_strings'), 'on');
    assert.equal(msgs.filter((m) => m.type === 'K').length, 1);
    assert.equal(msgs.at(-1)!.type, 'Z');
    assert.equal(msgs.at(-1)!.body.toString(), 'I');
    assert.deepEqual(rows(await r.query("SELECT current_setting('application_name')")), [['raw-app']]);
    assert.deepEqual(rows(await r.extended('SELECT $1::int * 2', ['21'])), [['42']]);
    r.write(fe.terminate());
    await r.closed;
  });

  it('answers SSLRequest with N and then accepts a plain startup', async () => {
    const r = await RawClient.connect(sg.port);
    r.write(sslRequest());
    assert.equal(await r.readByte(), 'N');
    const msgs = await r.startup({ user: 'proto', database: 'app' });
    assert.equal(firstError(msgs), undefined);
    assert.deepEqual(rows(await r.query('SELECT 1')), [['1']]);
    r.close();
  });

  it('answers protocol 3.2 with _pq_ options with NegotiateProtocolVersion (minor 0, listing the option)', async () => {
    const r = await RawClient.connect(sg.port);
    r.write(startupPacket({ user: 'proto', database: 'app', '_pq_.foo': 'bar' }, (3 << 16) | 2));
    const v = await r.read();
    assert.equal(v.type, 'v');
    assert.equal(v.body.readInt32BE(0), 0, 'newest minor version supported');
    assert.equal(v.body.readInt32BE(4), 1, 'one unrecognized option');
    assert.equal(v.body.toString('utf8', 8, v.body.length - 1), '_pq_.foo');
    const auth = await r.read();
    assert.equal(auth.type, 'R');
    assert.equal(auth.body.readInt32BE(0), 0);
    const rest = await r.readUntilReady();
    assert.equal(firstError(rest), undefined);
    // Protocol 3.0 BackendKeyData: a 4-byte secret.
    assert.equal(rest.find((m) => m.type === 'K')!.body.length, 8);
    assert.deepEqual(rows(await r.query('SELECT 7')), [['7']]);
    r.close();
  });

  it('refuses an unknown database with FATAL 3D000', async () => {
    await assert.rejects(client(sg.port, { database: 'no_such_db' }), (e: unknown) => {
      const err = e as { code?: string; severity?: string; message: string };
      return err.code === '3D000' && err.severity === 'FATAL' && /no_such_db/.test(err.message);
    });
  });
});

describe('malformed input', () => {
  it('a negative message length gets 08P01 and the connection closed', async () => {
    const r = await ready();
    const m = Buffer.from([0x51, 0xff, 0xff, 0xff, 0xff]);
    r.write(m);
    await expectFatal(r, '08P01');
    await survivorWorks();
  });

  it('a 2 GB message length gets 08P01 and the connection closed', async () => {
    const r = await ready();
    const m = Buffer.from([0x51, 0x7f, 0xff, 0xff, 0xff, 0x53, 0x45, 0x4c]);
    r.write(m);
    await expectFatal(r, '08P01');
    await survivorWorks();
  });

  it('an unknown message type gets 08P01 and the connection closed', async () => {
    const r = await ready();
    r.write(typed('z', Buffer.from('hello\0')));
    const f = await expectFatal(r, '08P01');
    assert.match(f.M!, /message type/);
    await survivorWorks();
  });

  it('a truncated startup packet followed by close does not disturb the server', async () => {
    const r = await RawClient.connect(sg.port);
    const full = startupPacket({ user: 'proto', database: 'app' });
    r.write(full.subarray(0, 10));
    r.socket.end();
    await r.closed;
    await survivorWorks();
    const again = await ready();
    assert.deepEqual(rows(await again.query('SELECT 2')), [['2']]);
    again.close();
  });

  it('a garbage startup packet (an HTTP request) gets 08P01 and the connection closed', async () => {
    const r = await RawClient.connect(sg.port);
    r.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await expectFatal(r, '08P01');
    await survivorWorks();
  });

  it('a startup packet without its terminator gets 08P01', async () => {
    const r = await RawClient.connect(sg.port);
    const p = startupPacket({ user: 'proto', database: 'app' });
    const bad = Buffer.from(p.subarray(0, p.length - 1));
    bad.writeInt32BE(bad.length, 0);
    r.write(bad);
    await expectFatal(r, '08P01');
    await survivorWorks();
  });

  it('a too short startup length gets 08P01', async () => {
    const r = await RawClient.connect(sg.port);
    r.write(Buffer.from([0, 0, 0, 4, 0, 3, 0, 0]));
    await expectFatal(r, '08P01');
    await survivorWorks();
  });

  it('an unsupported protocol major version gets a FATAL error', async () => {
    const r = await RawClient.connect(sg.port);
    r.write(startupPacket({ user: 'proto' }, 2 << 16));
    await expectFatal(r, '0A000');
    await survivorWorks();
  });
});

describe('malformed input inside a transaction (own scopegate, pool_size 1)', () => {
  for (const [what, bad] of [
    ['an unknown message type', typed('z', Buffer.from('x'))],
    ['a negative message length', Buffer.from([0x51, 0xff, 0xff, 0xff, 0xff])],
    ['an unterminated query string', typed('Q', Buffer.from('SELECT 1'))],
  ] as const) {
    it(`${what}: 08P01, the transaction is rolled back and its server connection serves the next client`, async () => {
      const s = await startScopegate({
        databases: { app: { url: db.url('postgres'), pool_size: 1 } },
        pool: { mode: 'transaction', query_wait_timeout: '3s', shutdown_timeout: '2s' },
        log: { level: 'info' },
      });
      try {
        await db.sql('CREATE TABLE IF NOT EXISTS proto_t (x int)');
        const r = await RawClient.connect(s.port);
        assert.equal(firstError(await r.startup({ user: 'proto', database: 'app' })), undefined);
        await r.query('BEGIN');
        await r.query('INSERT INTO proto_t VALUES (1)');
        await r.query('LOCK TABLE proto_t IN ACCESS EXCLUSIVE MODE');
        r.write(bad);
        await expectFatal(r, '08P01');
        // The only server connection must come back: rolled back, unlocked, usable.
        const next = await client(s.port);
        const row = (await next.query("SELECT txid_current_if_assigned() AS t, (SELECT count(*)::int FROM pg_locks WHERE relation = 'proto_t'::regclass AND mode = 'AccessExclusiveLock') AS locks, (SELECT count(*)::int FROM proto_t) AS n")).rows[0];
        assert.deepEqual(row, { t: null, locks: 0, n: 0 });
        await next.end();
      } finally {
        await stopBounded(s, false);
      }
    });
  }
});

describe('pool limits', () => {
  it('a client waiting past query_wait_timeout gets 53300 and can retry on the same connection', async () => {
    const s = await startScopegate({
      databases: { app: { url: db.url('postgres'), pool_size: 1 } },
      pool: { mode: 'transaction', query_wait_timeout: '1s', idle_transaction_timeout: 0 },
      log: { level: 'info' },
    });
    try {
      const holder = await client(s.port);
      const waiter = await client(s.port);
      await holder.query('BEGIN');
      await holder.query('SELECT 1');
      await assert.rejects(waiter.query('SELECT 1'), (e: unknown) => {
        const err = e as { code?: string; message: string };
        return err.code === '53300' && /query_wait_timeout/.test(err.message);
      });
      // Extended protocol too.
      await assert.rejects(waiter.query('SELECT $1::int', [1]), (e: unknown) => (e as { code?: string }).code === '53300');
      await holder.query('COMMIT');
      assert.equal((await waiter.query('SELECT 3 AS n')).rows[0].n, 3);
      assert.equal((await waiter.query('SELECT $1::int AS n', [4])).rows[0].n, 4);
      await holder.end();
      await waiter.end();
    } finally {
      await s.stop();
    }
  });

  it('max_client_conn reached: the next client gets 53300 too many connections', async () => {
    const s = await startScopegate({
      databases: { app: { url: db.url('postgres'), pool_size: 2 } },
      pool: { mode: 'transaction', max_client_conn: 2 },
      log: { level: 'info' },
    });
    try {
      const a = await client(s.port);
      const b = await client(s.port);
      await assert.rejects(client(s.port), (e: unknown) => {
        const err = e as { code?: string; message: string };
        return err.code === '53300' && /too many connections/.test(err.message);
      });
      // The raw view: a FATAL ErrorResponse, then close.
      const r = await RawClient.connect(s.port);
      r.write(startupPacket({ user: 'x', database: 'app' }));
      const msgs: Msg[] = await r.readUntilClosed();
      assert.equal(firstError(msgs)?.C, '53300');
      assert.equal((await a.query('SELECT 1 AS n')).rows[0].n, 1);
      await b.end();
      // A slot freed by a leaving client can be used again.
      const c = await waitFor(async () => client(s.port), 'a free client slot');
      assert.equal((await c.query('SELECT 2 AS n')).rows[0].n, 2);
      await a.end();
      await c.end();
    } finally {
      await s.stop();
    }
  });
});
