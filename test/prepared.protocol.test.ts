/**
 * Protocol-level prepared statements through scopegate, with a raw wire-protocol client.
 *
 * Most checks use PostgreSQL itself as the oracle: the same bytes go to a direct connection
 * and to a connection through scopegate, and both must answer with the same message types,
 * row descriptions, rows, command tags and SQLSTATEs. Scopegate spreads one client over
 * several server connections, so these sequences also exercise re-preparing statements on
 * a server connection that lacks them.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPostgres, SUPERPASS, SUPERUSER, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { RawClient, dataRow, errorFields, fe, firstError, rows, startupPacket, typed, waitFor, type Msg } from './harness/rawclient.js';
import { ScramClient } from '../src/backend/scram.js';

let db: TestPostgres;
/** pool 2, default max_prepared_statements (200). */
let sg: RunningScopegate;
/** pool 1: every transaction of every client lands on the same server connection. */
let sg1: RunningScopegate;
/** pool 2, max_prepared_statements 5. */
let sgLru: RunningScopegate;
/** pool 2, max_prepared_statements 0: names pass through unchanged. */
let sgOff: RunningScopegate;
/** pool 2, database killdb (its server connections are terminated by a test). */
let sgKill: RunningScopegate;

const opened: Array<{ close(): void }> = [];
const pgClients: pg.Client[] = [];

function cfg(database: string, poolSize: number, pool: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    databases: { app: { url: db.url(database), pool_size: poolSize } },
    pool: { mode: 'transaction', query_wait_timeout: '15s', idle_transaction_timeout: 0, ...pool },
    log: { level: 'info' },
  };
}

before(async () => {
  db = await startPostgres();
  await db.sql(`
    CREATE TABLE pp_items (id int PRIMARY KEY, name text NOT NULL, price numeric(8,2));
    INSERT INTO pp_items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 50) g;
    CREATE TABLE pp_log (id int, note text);
  `);
  await db.sql('CREATE DATABASE killdb');
  [sg, sg1, sgLru, sgOff, sgKill] = await Promise.all([
    startScopegate(cfg('postgres', 2)),
    startScopegate(cfg('postgres', 1)),
    startScopegate(cfg('postgres', 2, { max_prepared_statements: 5 })),
    startScopegate(cfg('postgres', 2, { max_prepared_statements: 0 })),
    startScopegate(cfg('killdb', 2)),
  ]);
});

after(async () => {
  for (const c of opened) c.close();
  for (const c of pgClients) await c.end().catch(() => undefined);
  await Promise.all([sg, sg1, sgLru, sgOff, sgKill].map((s) => s?.stop()));
  if (db) await db.stop();
});

// ---- wire helpers ------------------------------------------------------------------

function cstr(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

const describeStmt = (name: string): Buffer => typed('D', Buffer.concat([Buffer.from('S'), cstr(name)]));
const closeStmt = (name: string): Buffer => typed('C', Buffer.concat([Buffer.from('S'), cstr(name)]));
/** Bind of statement `stmt` to the unnamed portal. */
const bindS = (stmt: string, params: Array<string | null> = []): Buffer => fe.bind(params, '', stmt);
const exec = (): Buffer => fe.execute();
const sync = (): Buffer => fe.sync();
const q = (sql: string): Buffer => fe.query(sql);
/** Parse + Bind + Execute of `SELECT pg_backend_pid()` (unnamed), to learn the server connection. */
const pidProbe = (): Buffer => Buffer.concat([fe.parse('SELECT pg_backend_pid()'), fe.bind(), fe.execute()]);

/** Number of ReadyForQuery answers the bytes will cause (one per Sync and per Query). */
function readyCount(data: Buffer): number {
  let n = 0;
  for (let off = 0; off < data.length; off += 1 + data.readInt32BE(off + 1)) {
    if (data[off] === 0x53 || data[off] === 0x51) n++;
  }
  return n;
}

async function readReady(c: RawClient, n: number): Promise<Msg[]> {
  const out: Msg[] = [];
  for (let i = 0; i < n; i++) out.push(...(await c.readUntilReady(15_000)));
  return out;
}

/** One line per message, with what must match between PostgreSQL and scopegate. */
function summary(msgs: Msg[]): string[] {
  const out: string[] = [];
  for (const m of msgs) {
    switch (m.type) {
      case 'S': case 'N': break; // ParameterStatus / notices are not part of the comparison
      case 'D': out.push(`D ${JSON.stringify(dataRow(m.body))}`); break;
      case 'E': out.push(`E ${errorFields(m.body).C}`); break;
      case 'C': out.push(`C ${m.body.toString('utf8', 0, m.body.length - 1)}`); break;
      case 'Z': out.push(`Z ${String.fromCharCode(m.body[0]!)}`); break;
      case 'T': case 't': out.push(`${m.type} ${m.body.toString('hex')}`); break;
      default: out.push(m.type);
    }
  }
  return out;
}

function types(msgs: Msg[]): string {
  return msgs.filter((m) => m.type !== 'S' && m.type !== 'N').map((m) => m.type).join('');
}

/** A session straight to PostgreSQL (SCRAM login as the superuser). */
async function directRaw(database = 'postgres'): Promise<RawClient> {
  const r = await RawClient.connect(db.port);
  opened.push(r);
  r.write(startupPacket({ user: SUPERUSER, database }));
  const scram = new ScramClient(SUPERPASS);
  for (;;) {
    const m = await r.read();
    if (m.type === 'E') throw new Error(`direct login failed: ${JSON.stringify(errorFields(m.body))}`);
    if (m.type === 'Z') return r;
    if (m.type !== 'R') continue;
    const code = m.body.readInt32BE(0);
    if (code === 10) {
      const first = Buffer.from(scram.clientFirst());
      const len = Buffer.alloc(4);
      len.writeInt32BE(first.length, 0);
      r.write(typed('p', Buffer.concat([cstr('SCRAM-SHA-256'), len, first])));
    } else if (code === 11) {
      r.write(typed('p', Buffer.from(scram.clientFinal(m.body.toString('utf8', 4)))));
    } else if (code === 12) {
      scram.verifyServerFinal(m.body.toString('utf8', 4));
    }
  }
}

async function proxyRaw(s: RunningScopegate, user = 'prep'): Promise<RawClient> {
  const r = await RawClient.connect(s.port);
  opened.push(r);
  const msgs = await r.startup({ user, database: 'app' });
  assert.equal(firstError(msgs), undefined);
  return r;
}

async function pgClient(s: RunningScopegate, user = 'prep'): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port: s.port, user, database: 'app' });
  c.on('error', () => undefined);
  await c.connect();
  pgClients.push(c);
  return c;
}

/**
 * The same client session twice: straight to PostgreSQL and through scopegate. `step`
 * sends the same bytes to both and asserts the answers match; it returns scopegate's.
 */
class Pair {
  private constructor(readonly direct: RawClient, readonly proxy: RawClient) {}

  static async open(s: RunningScopegate): Promise<Pair> {
    return new Pair(await directRaw(), await proxyRaw(s));
  }

  async step(label: string, ...parts: Buffer[]): Promise<Msg[]> {
    const data = Buffer.concat(parts);
    const n = readyCount(data);
    this.direct.write(data);
    this.proxy.write(data);
    const [d, p] = await Promise.all([readReady(this.direct, n), readReady(this.proxy, n)]);
    assert.deepEqual(summary(p), summary(d), `${label}: scopegate (actual) differs from PostgreSQL (expected)`);
    return p;
  }
}

async function send(c: RawClient, ...parts: Buffer[]): Promise<Msg[]> {
  const data = Buffer.concat(parts);
  c.write(data);
  return readReady(c, readyCount(data));
}

/** The backend pid from the answer to a pidProbe(). */
function probedPid(msgs: Msg[]): number {
  const r = rows(msgs);
  const last = r[r.length - 1];
  assert.ok(last, `no pid row in ${types(msgs)}`);
  return Number(last[0]);
}

/**
 * Keeps the server connection with pid `pid` busy in an open transaction of another client
 * (pool of 2), so the next transaction of anyone else must use the other one.
 */
async function occupy(s: RunningScopegate, pid: number, poolSize = 2): Promise<() => Promise<void>> {
  const holders: Array<{ c: pg.Client; pid: number }> = [];
  for (let i = 0; i < poolSize; i++) {
    const c = await pgClient(s, 'holder');
    await c.query('BEGIN');
    const p = (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
    holders.push({ c, pid: p });
    if (p === pid) break;
  }
  const keep = holders.find((h) => h.pid === pid);
  assert.ok(keep, `no holder got server connection ${pid}: ${holders.map((h) => h.pid).join(',')}`);
  for (const h of holders) if (h !== keep) await h.c.query('COMMIT');
  return async () => { await keep.c.query('COMMIT'); };
}

// ---- tests -------------------------------------------------------------------------

describe('pipelined extended protocol, compared with PostgreSQL', () => {
  it('Parse/Bind/Describe/Execute of named and unnamed statements before one Sync', async () => {
    const pair = await Pair.open(sg);
    const batch = [
      fe.parse('SELECT $1::int + 1 AS a, $2::text AS b', 'pl_a'),
      bindS('pl_a', ['41', 'x']), fe.describePortal(), exec(),
      fe.parse('SELECT g, g * 2 AS dbl FROM generate_series(1, $1::int) g'),
      fe.bind(['3']), fe.describePortal(), exec(),
      fe.parse('INSERT INTO pp_log VALUES ($1, $2)', 'pl_ins', [23, 25]),
      describeStmt('pl_ins'),
      bindS('pl_ins', ['1', 'pipelined']), fe.describePortal(), exec(),
      fe.parse('SELECT name, price FROM pp_items WHERE id <= $1 ORDER BY id'),
      fe.bind(['2']), fe.describePortal(), exec(),
      // Same text as pl_a under another name: one server statement for both.
      fe.parse('SELECT $1::int + 1 AS a, $2::text AS b', 'pl_a2'),
      describeStmt('pl_a2'),
      bindS('pl_a2', ['1', 'y']), fe.describePortal(), exec(),
      sync(),
    ];
    const got = await pair.step('pipeline', ...batch);
    assert.equal(types(got), '12TDC' + '12TDDDC' + '1tn2nC' + '12TDDC' + '1tT2TDC' + 'Z');
    assert.deepEqual(rows(got), [['42', 'x'], ['1', '2'], ['2', '4'], ['3', '6'], ['item 1', '1.50'], ['item 2', '3.00'], ['2', 'y']]);
    // Then the statements run again, many times, wherever scopegate puts the transaction.
    for (let i = 0; i < 6; i++) {
      await pair.step(`re-run ${i}`,
        bindS('pl_a', [String(i), 'again']), exec(),
        bindS('pl_a2', [String(i * 10), 'again2']), exec(),
        describeStmt('pl_ins'),
        fe.bind(['1']), fe.describePortal(), exec(), // the unnamed statement is the pp_items one
        sync());
    }
  });

  it('a statement prepared in one transaction runs in the next, interleaved with simple queries', async () => {
    const pair = await Pair.open(sg);
    await pair.step('parse', fe.parse('SELECT count(*) FROM pp_items WHERE price > $1', 'il_1'), sync());
    for (let i = 0; i < 5; i++) {
      await pair.step(`simple ${i}`, q(`SELECT ${i} AS i`));
      await pair.step(`bind ${i}`, bindS('il_1', [String(i * 10)]), fe.describePortal(), exec(), sync());
    }
    await pair.step('in a transaction block', q('BEGIN'), bindS('il_1', ['5']), exec(), sync(), q('COMMIT'));
  });
});

describe('statements used on a server connection that never saw their Parse', () => {
  it('Describe of a statement prepared on another server connection', async () => {
    const a = await proxyRaw(sg);
    const text = 'SELECT $1::int AS n, $2::text AS t, now()::date AS d /* other-backend describe */';
    const first = await send(a, fe.parse(text, 'S_1'), pidProbe(), sync());
    assert.equal(types(first), '112DCZ');
    const x = probedPid(first);
    const release = await occupy(sg, x);
    try {
      const got = await send(a, describeStmt('S_1'), pidProbe(), sync());
      assert.equal(types(got), 'tT12DCZ', `got ${summary(got).join(' | ')}`);
      assert.notEqual(probedPid(got), x, 'the Describe must have run on the other server connection');
      const params = got.find((m) => m.type === 't')!.body;
      assert.equal(params.readInt16BE(0), 2);
      assert.deepEqual([params.readInt32BE(2), params.readInt32BE(6)], [23, 25]);
      // The description is the one PostgreSQL gives for the same statement.
      const d = await directRaw();
      const direct = await send(d, fe.parse(text, 'S_1'), describeStmt('S_1'), sync());
      assert.deepEqual(summary(got).slice(0, 2), summary(direct).slice(1, 3));
    } finally {
      await release();
    }
  });

  it('Bind/Execute of a statement prepared on another server connection', async () => {
    const a = await proxyRaw(sg);
    const first = await send(a, fe.parse('SELECT name FROM pp_items WHERE id = $1 /* other-backend bind */', 'S_2'), pidProbe(), sync());
    const x = probedPid(first);
    const release = await occupy(sg, x);
    try {
      const got = await send(a, bindS('S_2', ['7']), fe.describePortal(), exec(), pidProbe(), sync());
      assert.equal(types(got), '2TDC12DCZ', `got ${summary(got).join(' | ')}`);
      assert.deepEqual(rows(got)[0], ['item 7']);
      assert.notEqual(probedPid(got), x);
    } finally {
      await release();
    }
    // And back on the first one (which has it already), in a pipeline with Describe.
    const again = await send(a, describeStmt('S_2'), bindS('S_2', ['8']), exec(), sync());
    assert.equal(types(again), 'tT2DCZ');
    assert.deepEqual(rows(again), [['item 8']]);
  });
});

describe('the unnamed statement', () => {
  it('is never shared between clients on the same server connection', async () => {
    const a = await proxyRaw(sg1);
    const b = await proxyRaw(sg1);
    assert.equal(types(await send(a, fe.parse("SELECT 'A'::text AS who, $1::int AS n"), sync())), '1Z');
    assert.equal(types(await send(b, fe.parse("SELECT 'B'::text AS other, 2 AS two, 3 AS three"), sync())), '1Z');
    const ga = await send(a, fe.bind(['5']), fe.describePortal(), exec(), sync());
    assert.equal(types(ga), '2TDCZ', summary(ga).join(' | '));
    assert.deepEqual(rows(ga), [['A', '5']]);
    const gb = await send(b, fe.bind(), exec(), sync());
    assert.deepEqual(rows(gb), [['B', '2', '3']]);
    // Describe of the unnamed statement is A's too.
    const da = await send(a, describeStmt(''), sync());
    assert.equal(types(da), 'tTZ');
    assert.equal(da[0]!.body.readInt16BE(0), 1);
    const gb2 = await send(b, describeStmt(''), fe.bind(), exec(), sync());
    assert.equal(types(gb2), 'tT2DCZ');
    assert.deepEqual(rows(gb2), [['B', '2', '3']]);
  });
});

describe('errors, compared with PostgreSQL', () => {
  it('Parse of a name that is still open: 42P05, and the connection stays usable', async () => {
    const pair = await Pair.open(sg);
    await pair.step('parse', fe.parse('SELECT 1 AS one', 'dup_1'), sync());
    const got = await pair.step('parse again', fe.parse('SELECT 2 AS two', 'dup_1'), sync());
    assert.equal(firstError(got)?.C, '42P05');
    await pair.step('still the first text', bindS('dup_1'), exec(), sync());
    await pair.step('simple query', q('SELECT 3'));
    // Inside a transaction block the error aborts the transaction, as in PostgreSQL.
    await pair.step('in a transaction', q('BEGIN'), fe.parse('SELECT 4', 'dup_1'), sync(), q('SELECT 5'), q('ROLLBACK'), q('SELECT 6'));
  });

  it('Bind or Describe of an unknown name: 26000', async () => {
    const pair = await Pair.open(sg);
    const got = await pair.step('bind', bindS('nope_1'), exec(), sync());
    assert.equal(firstError(got)?.C, '26000');
    await pair.step('describe', describeStmt('nope_1'), sync());
    await pair.step('then a query', q('SELECT 1'));
    await pair.step('in a transaction', q('BEGIN'), bindS('nope_1'), exec(), sync(), q('ROLLBACK'));
  });

  it('Parse with a syntax error: 42601, no statement kept, the name can be parsed again', async () => {
    const pair = await Pair.open(sg);
    const got = await pair.step('bad parse', fe.parse('SELEC 1', 'syn_1'), sync());
    assert.equal(firstError(got)?.C, '42601');
    const bind = await pair.step('bind after failed parse', bindS('syn_1'), exec(), sync());
    assert.equal(firstError(bind)?.C, '26000');
    const ok = await pair.step('parse again', fe.parse('SELECT 42 AS answer', 'syn_1'), bindS('syn_1'), exec(), sync());
    assert.deepEqual(rows(ok), [['42']]);
    // A failing Parse in the middle of a pipeline: the statements after it are skipped.
    await pair.step('pipeline', fe.parse('SELECT 1', 'syn_2'), fe.parse('SELECT FROM WHERE', 'syn_3'), fe.parse('SELECT 3', 'syn_4'), sync(),
      bindS('syn_2'), exec(), sync(), bindS('syn_3'), exec(), sync(), bindS('syn_4'), exec(), sync());
  });

  it('a failed Parse followed, in the same pipeline, by a Parse of the same name', async () => {
    const pair = await Pair.open(sg);
    await pair.step('pipelined re-parse',
      fe.parse('SELEC 1', 'pipe_1'), sync(),
      fe.parse('SELECT 1 AS fixed', 'pipe_1'), bindS('pipe_1'), exec(), sync());
  });

  it('a Parse answered without a backend reports the server\'s error at its first use', async () => {
    // Documented trade-off (docs/configuration.md): a named Parse + Sync with no backend is
    // answered by scopegate (so PQprepare never waits for a backend), and a statement the
    // server rejects for a reason other than syntax fails at its first Bind instead.
    const client = await proxyRaw(sg);
    const got = await send(client, fe.parse('SELECT * FROM no_such_table_x', 'pipe_2'), sync(), bindS('pipe_2'), exec(), sync());
    assert.equal(types(got), '1ZEZ');
    assert.equal(errorFields(got[2]!.body).C, '42P01');
    const again = await send(client, bindS('pipe_2'), exec(), sync());
    assert.equal(firstError(again)?.C, '42P01');
  });

  it('Close, then Parse of the same name with another text', async () => {
    const pair = await Pair.open(sg);
    await pair.step('parse', fe.parse('SELECT 1 AS v', 'cl_1'), bindS('cl_1'), exec(), sync());
    await pair.step('close', closeStmt('cl_1'), sync());
    const got = await pair.step('reparse', fe.parse("SELECT 'two'::text AS v, 2 AS w", 'cl_1'), bindS('cl_1'), fe.describePortal(), exec(), sync());
    assert.deepEqual(rows(got), [['two', '2']]);
    // Close + Parse + Bind in one pipeline, and Close of a name that does not exist.
    await pair.step('pipelined', closeStmt('cl_1'), fe.parse('SELECT 3 AS v', 'cl_1'), bindS('cl_1'), exec(), closeStmt('never_parsed'), sync());
    await pair.step('back to the first text', closeStmt('cl_1'), fe.parse('SELECT 1 AS v', 'cl_1'), bindS('cl_1'), exec(), sync());
    await pair.step('bind after close', closeStmt('cl_1'), bindS('cl_1'), exec(), sync());
  });

  for (const stmt of ['DEALLOCATE ALL', 'DISCARD ALL']) {
    it(`${stmt} clears the client's statements`, async () => {
      const pair = await Pair.open(sg);
      await pair.step('parse', fe.parse('SELECT 1 AS da', 'da_1'), fe.parse('SELECT 2 AS da', 'da_2'), sync());
      await pair.step(stmt, q(stmt));
      const got = await pair.step('bind', bindS('da_1'), exec(), sync());
      assert.equal(firstError(got)?.C, '26000');
      await pair.step('describe', describeStmt('da_2'), sync());
      await pair.step('parse again', fe.parse('SELECT 3 AS da', 'da_1'), bindS('da_1'), exec(), sync());
    });
  }

  it('DEALLOCATE ALL in the extended protocol leaves other clients\' statements working', async () => {
    const b = await proxyRaw(sg1);
    const a = await proxyRaw(sg1);
    assert.equal(types(await send(b, fe.parse("SELECT 'b-statement'::text", 'dx_b'), sync())), '1Z');
    const da = await send(a, fe.parse('DEALLOCATE ALL'), fe.bind(), exec(), sync());
    assert.equal(types(da), '12CZ', summary(da).join(' | '));
    const got = await send(b, bindS('dx_b'), exec(), sync());
    assert.equal(firstError(got), undefined, `client B's statement broke after client A's DEALLOCATE ALL: ${JSON.stringify(firstError(got))}`);
    assert.deepEqual(rows(got), [['b-statement']]);
  });

  it('SQL-level PREPARE, EXECUTE and DEALLOCATE are refused with 0A000 in transaction mode', async () => {
    const c = await proxyRaw(sg);
    for (const sql of ['PREPARE sqlp AS SELECT 1', 'EXECUTE sqlp', 'DEALLOCATE sqlp', 'DEALLOCATE PREPARE sqlp']) {
      const got = await send(c, q(sql));
      const e = firstError(got);
      assert.equal(e?.C, '0A000', `${sql}: ${JSON.stringify(e)}`);
      assert.match(e!.M!, /transaction (pooling )?mode/i);
      assert.equal(types(got), 'EZ');
    }
    const ext = await send(c, fe.parse('PREPARE sqlp2 AS SELECT 1'), fe.bind(), exec(), sync());
    assert.equal(firstError(ext)?.C, '0A000');
    assert.deepEqual(rows(await send(c, q('SELECT 1'))), [['1']]);
    // Protocol-level statements keep working on the same connection.
    assert.deepEqual(rows(await send(c, fe.parse('SELECT 2', 'sqlp'), bindS('sqlp'), exec(), sync())), [['2']]);
  });
});

describe('max_prepared_statements', () => {
  it('0: statement names pass through unchanged (one transaction)', async () => {
    const c = await proxyRaw(sgOff);
    const got = await send(c, q('BEGIN'),
      fe.parse('SELECT $1::int * 3 AS v', 'off_1'), bindS('off_1', ['14']), exec(),
      fe.parse("SELECT name FROM pg_prepared_statements WHERE name = 'off_1' OR name LIKE 'sg\\_%' ORDER BY 1"), fe.bind(), exec(), sync(),
      q('COMMIT'));
    assert.equal(firstError(got), undefined);
    assert.deepEqual(rows(got), [['42'], ['off_1']]);
    const cl = await send(c, q('BEGIN'), closeStmt('off_1'), sync(), q('COMMIT'));
    assert.equal(firstError(cl), undefined);
  });

  it('5: a client cycling through 20 statements gets correct results; no server connection holds more than 5', async () => {
    const heldSql = "(SELECT count(*)::int FROM pg_prepared_statements WHERE name LIKE 'sg\\_%')";
    const c1 = await pgClient(sgLru);
    const c2 = await pgClient(sgLru);
    let maxHeld = 0;
    const cycle = async (c: pg.Client, tag: string): Promise<void> => {
      for (let round = 0; round < 4; round++) {
        for (let i = 0; i < 20; i++) {
          const r = await c.query({ name: `${tag}_${i}`, text: `SELECT $1::int + ${i} AS v, '${tag}'::text AS tag, ${heldSql} AS held`, values: [round * 100] });
          assert.deepEqual([r.rows[0].v, r.rows[0].tag], [round * 100 + i, tag]);
          maxHeld = Math.max(maxHeld, r.rows[0].held as number);
        }
      }
    };
    await Promise.all([cycle(c1, 'lru_a'), cycle(c2, 'lru_b')]);
    assert.ok(maxHeld <= 5, `a server connection held ${maxHeld} of scopegate's statements`);
    // Both server connections, inspected from inside a transaction through the proxy.
    const h1 = await pgClient(sgLru);
    const h2 = await pgClient(sgLru);
    await h1.query('BEGIN');
    await h2.query('BEGIN');
    const counts = [];
    for (const h of [h1, h2]) counts.push((await h.query(`SELECT pg_backend_pid() AS pid, ${heldSql} AS held`)).rows[0]);
    await h1.query('COMMIT');
    await h2.query('COMMIT');
    assert.notEqual(counts[0].pid, counts[1].pid);
    for (const k of counts) assert.ok(k.held <= 5, `server connection ${k.pid} holds ${k.held}`);
  });

  it('5: an eviction skipped by an error earlier in the same pipeline does not break the evicted statement', async () => {
    const pair = await Pair.open(sgLru);
    await pair.step('begin', q('BEGIN'), q('SAVEPOINT sp'));
    const parses = [1, 2, 3, 4, 5].map((i) => fe.parse(`SELECT ${i} AS ev /* evict-skip */`, `ev_${i}`));
    await pair.step('fill', ...parses, sync());
    // The error makes the server skip everything up to Sync, including the Close scopegate
    // sends to evict ev_1 when ev_6 is parsed.
    const err = await pair.step('error then parse', fe.parse('SELECT 1/0'), fe.bind(), exec(), fe.parse('SELECT 6 AS ev /* evict-skip */', 'ev_6'), sync());
    assert.equal(firstError(err)?.C, '22012');
    await pair.step('rollback to savepoint', q('ROLLBACK TO SAVEPOINT sp'));
    const got = await pair.step('bind the first', bindS('ev_1'), exec(), sync());
    assert.deepEqual(rows(got), [['1']]);
    await pair.step('ev_6 was never created', bindS('ev_6'), exec(), sync());
    await pair.step('end', q('ROLLBACK'));
    await pair.step('all of them again', ...[1, 2, 3, 4, 5].flatMap((i) => [bindS(`ev_${i}`), exec()]), sync());
  });
});

describe('server connections replaced', () => {
  it('a named statement works again after every server connection was terminated', async () => {
    const c = await pgClient(sgKill);
    const raw = await proxyRaw(sgKill);
    const query = { name: 'kill_1', text: 'SELECT $1::int * 2 AS v, current_database() AS d' };
    assert.deepEqual((await c.query({ ...query, values: [21] })).rows, [{ v: 42, d: 'killdb' }]);
    assert.deepEqual(rows(await send(raw, fe.parse('SELECT $1::text AS echo', 'kill_raw'), bindS('kill_raw', ['one']), exec(), sync())), [['one']]);
    // Use both server connections.
    const h = await pgClient(sgKill);
    await h.query('BEGIN');
    assert.deepEqual((await c.query({ ...query, values: [1] })).rows, [{ v: 2, d: 'killdb' }]);
    await h.query('COMMIT');
    const killed = await db.sql("SELECT pg_terminate_backend(pid) AS t FROM pg_stat_activity WHERE datname = 'killdb' AND pid <> pg_backend_pid()");
    assert.ok(killed.rowCount! >= 1);
    await waitFor(async () => (await db.sql("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = 'killdb'")).rows[0].n === 0, 'killdb server connections gone');
    // node-postgres sends only Bind for a name it prepared already: scopegate re-prepares.
    assert.deepEqual((await c.query({ ...query, values: [50] })).rows, [{ v: 100, d: 'killdb' }]);
    assert.deepEqual(rows(await send(raw, bindS('kill_raw', ['two']), exec(), sync())), [['two']]);
    assert.deepEqual(rows(await send(raw, describeStmt('kill_raw'), bindS('kill_raw', ['three']), exec(), sync())), [['three']]);
  });
});

describe('a table dropped and recreated under a prepared statement', () => {
  /** Prepares `SELECT *` of a fresh table on a pair, then replaces the table with another row type. */
  async function staleSetup(table: string): Promise<{ a: Pair; other: Pair; text: string }> {
    await db.sql(`CREATE TABLE ${table} (id int, v int); INSERT INTO ${table} VALUES (1, 10)`);
    const text = `SELECT * FROM ${table} WHERE id = $1`;
    const a = await Pair.open(sg1);
    const other = await Pair.open(sg1);
    await a.step('prepare', fe.parse(text, 'dd_1'), bindS('dd_1', ['1']), exec(), sync());
    await other.step('prepare unrelated', fe.parse('SELECT count(*) FROM pp_items', 'dd_other'), sync());
    await db.sql(`DROP TABLE ${table}; CREATE TABLE ${table} (id int, v text, extra int); INSERT INTO ${table} VALUES (1, 'ten', 3)`);
    const stale = await a.step('bind stale', bindS('dd_1', ['1']), exec(), sync());
    assert.equal(firstError(stale)?.C, '0A000', 'cached plan must not change result type');
    await other.step('other client unaffected', bindS('dd_other'), exec(), sync());
    await a.step('connection keeps working', q('SELECT 1'));
    return { a, other, text };
  }

  it('the stale client gets PostgreSQL\'s 0A000; Close and re-Parse of the same text in one pipeline recovers', async () => {
    const { a, text } = await staleSetup('pp_dd1');
    // What drivers do on this error: close the statement and prepare it again.
    const re = await a.step('close and re-prepare', closeStmt('dd_1'), fe.parse(text, 'dd_1'), bindS('dd_1', ['1']), exec(), sync());
    assert.deepEqual(rows(re), [['1', 'ten', '3']]);
  });

  it('the stale client closes (Close + Sync), then prepares the same text again in its next transaction', async () => {
    const { a, text } = await staleSetup('pp_dd3');
    await a.step('close', closeStmt('dd_1'), sync());
    const re = await a.step('re-prepare', fe.parse(text, 'dd_1'), bindS('dd_1', ['1']), exec(), sync());
    assert.deepEqual(rows(re), [['1', 'ten', '3']]);
  });

  it('another client preparing the same text afterwards gets a working statement', async () => {
    const { other, text } = await staleSetup('pp_dd2');
    const fresh = await other.step('same text, another client', fe.parse(text, 'dd_fresh'), bindS('dd_fresh', ['1']), exec(), sync());
    assert.deepEqual(rows(fresh), [['1', 'ten', '3']]);
  });
});
