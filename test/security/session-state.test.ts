// Concern: nothing one client leaves in a pooled server session (settings, the PRNG seed, session advisory locks, sequence state, temporary relations) reaches the next client of that server connection.
/**
 * Real PostgreSQL 18 behind the real scopegate CLI (test/scope.fixture.test.ts), transaction
 * mode, pool_size 1: the attacker's server connection is provably (pg_backend_pid()) the
 * victim's next one. The policy is config/policy.yaml plus a `scratch` scope (app_reader, may
 * create temporary relations) and `usage` on orders_id_seq for orders:write (currval).
 *
 * Each attack runs in the forms it has (simple, extended, named, multi-statement, pipelined
 * raw messages, startup parameters); then the victim's session must be its own: its writes
 * succeed and are stored, its settings are the server's defaults, its random() sequence is
 * not the one setseed() fixed, it can take the advisory lock (and pg_locks shows none left),
 * it never receives the attacker's sequence values and `orders` is public.orders. After each
 * test the pool's server connection is replaced, so one leak cannot fail the next test.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { DB, EXAMPLE_POLICY, errorOf, pollUntil, startFixture, type Fixture } from '../scope.fixture.test.js';
import { Wire, fe, fe2, rowsOf, tap } from './wire.js';

const SHADOW = `shadow-${randomUUID()}`;

const POLICY = readFileSync(EXAMPLE_POLICY, 'utf8')
  .replace('      - { actions: [execute], functions: [public.place_order] }', '      - { actions: [execute], functions: [public.place_order] }\n      - { actions: [usage], tables: [orders_id_seq] }')
  .replace(/\s*$/, '\n') + `  "scratch":
    role: app_reader
    allow:
      - { actions: [select], tables: [orders, order_items] }
      - { actions: [ddl, select, insert], tables: [pg_temp.*] }
`;

let fx: Fixture;
let dir: string;
let defaults: { dtro: string; datestyle: string; timeout: string };
/** What `SELECT status FROM orders` reads on public.orders now (superuser, direct). */
async function publicStatuses(): Promise<string[]> {
  return (await fx.su('SELECT status FROM public.orders ORDER BY id')).rows.map((r) => r.status as string);
}
const opened: Array<{ end(): Promise<unknown> }> = [];

before(async () => {
  assert.ok(POLICY.includes('orders_id_seq') && POLICY.includes('"scratch"'), 'the policy edits apply to config/policy.yaml');
  dir = mkdtempSync(join(tmpdir(), 'sec-state-'));
  const policy = join(dir, 'policy.yaml');
  writeFileSync(policy, POLICY);
  fx = await startFixture({ poolSize: 1, policy, config: { pool: { mode: 'transaction', query_wait_timeout: '15s' } } });
  const d = (await fx.su("SELECT current_setting('default_transaction_read_only') AS dtro, current_setting('DateStyle') AS datestyle, current_setting('statement_timeout') AS timeout")).rows[0];
  defaults = d;
  assert.equal(defaults.dtro, 'off');
});

after(async () => {
  await fx?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((c) => c.end().catch(() => undefined)));
  await freshServerConnection();
});

/** Replaces the pool's server connection(s) with new ones, so the next test starts clean. */
async function freshServerConnection(): Promise<void> {
  const old = (await fx.su("SELECT pid FROM pg_stat_activity WHERE usename = 'authenticator'")).rows.map((r) => r.pid as number);
  if (old.length === 0) return;
  await fx.su("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'authenticator'");
  await pollUntil(async () => (await fx.su(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = 'authenticator' AND pid IN (${old.join(', ')})`)).rows[0].n === 0, 'old server connections gone');
  // scopegate has noticed: a client is served on a new server connection.
  await pollUntil(async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: fx.sg.port, user: 'probe', password: await fx.token('orders:read', 'probe'), database: DB });
    c.on('error', () => undefined);
    try {
      await c.connect();
      const pid = (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
      return !old.includes(pid);
    } catch {
      return false;
    } finally {
      await c.end().catch(() => undefined);
    }
  }, 'a new server connection serves clients');
}

async function client(scope: string, sub: string, options?: string): Promise<{ c: pg.Client; seen: () => string }> {
  const c = new pg.Client({ host: '127.0.0.1', port: fx.sg.port, user: sub, password: await fx.token(scope, sub), database: DB, ...(options ? { options } : {}) });
  c.on('error', () => undefined);
  c.on('notice', () => undefined);
  opened.push(c);
  await c.connect();
  return { c, seen: tap(c) };
}

async function wire(scope: string, sub: string): Promise<Wire> {
  const w = await Wire.open(fx.sg.port, sub, DB, await fx.token(scope, sub));
  opened.push({ end: async () => w.close() });
  return w;
}

/**
 * The victim is on the attacker's server connection (pool_size 1), or scopegate closed that
 * one before anyone else got it (then it is gone from pg_stat_activity).
 */
async function assertSameOrClosed(victimPid: number, attackerPid: number): Promise<void> {
  if (victimPid === attackerPid) return;
  const n = (await fx.su(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${attackerPid}`)).rows[0].n as number;
  assert.equal(n, 0, `the victim got server connection ${victimPid}, while the attacker's ${attackerPid} is still open`);
}

async function pidOf(c: pg.Client): Promise<number> {
  return (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
}

/** The pid of the pool's one server connection, as a client sees it now. */
async function sharedPid(): Promise<number> {
  const { c } = await client('orders:read', 'pid-probe');
  try { return await pidOf(c); } finally { await c.end(); }
}

type Send = (scope: string, sub: string) => Promise<void>;

/** An attack as a pg simple Query / extended / named statement; errors are the attack's business. */
const viaPg = (sql: string, mode: 'simple' | 'extended' | 'named'): Send => async (scope, sub) => {
  const { c } = await client(scope, sub);
  try {
    if (mode === 'simple') await c.query(sql);
    else if (mode === 'extended') await c.query({ text: sql, queryMode: 'extended' } as pg.QueryConfig);
    else await c.query({ name: `a_${randomUUID().slice(0, 8)}`, text: sql });
  } catch { /* refused is fine: the effect is what is checked */ } finally {
    await c.end();
  }
};

/** An attack as raw messages written at once; reads `readies` ReadyForQuery. */
const viaWire = (readies: number, ...msgs: Buffer[]): Send => async (scope, sub) => {
  const w = await wire(scope, sub);
  try {
    w.write(...msgs);
    await w.untilReady(readies);
  } finally {
    w.close();
  }
};

const forms = (sql: string): Array<[string, Send]> => [
  ['simple', viaPg(sql, 'simple')],
  ['extended', viaPg(sql, 'extended')],
  ['named', viaPg(sql, 'named')],
  ['multi-statement', viaPg(`SELECT 1; ${sql}`, 'simple')],
  ['in a committed transaction', viaPg(`BEGIN; ${sql}; COMMIT`, 'simple')],
  ['pipelined extended batch', viaWire(2, fe2.step('SELECT 1'), fe2.step(sql), fe.sync(), fe.query('SELECT 1'))],
];

describe('a setting cannot outlive a rolled-back transaction, a prepared SET or the client that made it', { timeout: 240_000 }, () => {
  /** The victim, a writer on the attacker's server connection: its write succeeds and its settings are the defaults. */
  async function assertVictimWrites(pid: number, what: string): Promise<void> {
    const { c } = await client('orders:write', 'victim');
    const marker = randomInt(1_000_000, 9_000_000);
    try {
      await assertSameOrClosed(await pidOf(c), pid);
      const s = (await c.query("SELECT current_user AS u, current_setting('default_transaction_read_only') AS dtro, current_setting('DateStyle') AS datestyle, current_setting('statement_timeout') AS timeout")).rows[0];
      assert.deepEqual(s, { u: 'app_writer', ...defaults }, `${what}: the victim's session`);
      const w = await c.query('INSERT INTO orders (customer_id, total) VALUES (1, $1) RETURNING id', [marker]).catch((e: { code?: string; message: string }) => e);
      assert.ok(!(w instanceof Error), `${what}: the victim's write failed: ${(w as { code?: string }).code} ${(w as Error).message}`);
      const w2 = await c.query(`INSERT INTO orders (customer_id, total) VALUES (2, ${marker}) RETURNING id`).catch((e: Error) => e);
      assert.ok(!(w2 instanceof Error), `${what}: the victim's simple write failed: ${(w2 as { code?: string }).code} ${(w2 as Error).message}`);
      assert.equal((await fx.su(`SELECT count(*)::int AS n FROM orders WHERE total = ${marker}`)).rows[0].n, 2, `${what}: both writes are stored`);
    } finally {
      await c.end();
    }
  }

  const ATTACKS: Array<[string, Send]> = [
    ['BEGIN; SELECT 1; ROLLBACK; SET default_transaction_read_only = on (one Query)', viaPg('BEGIN; SELECT 1; ROLLBACK; SET default_transaction_read_only = on', 'simple')],
    ['BEGIN; SET ... = on; ROLLBACK; then SET ... = on on its own', async (scope, sub) => {
      const { c } = await client(scope, sub);
      await c.query('BEGIN');
      await c.query('SET default_transaction_read_only = on');
      await c.query('ROLLBACK');
      await c.query('SET default_transaction_read_only = on');
      await c.end();
    }],
    ['a failed transaction, then ROLLBACK; SET ... = on in one Query', async (scope, sub) => {
      const { c } = await client(scope, sub);
      await c.query('BEGIN');
      await errorOf(() => c.query('SELECT 1/0'));
      await c.query('ROLLBACK; SET default_transaction_read_only = on');
      await c.end();
    }],
    ['ROLLBACK TO SAVEPOINT, then SET ... = on, COMMIT', viaPg('BEGIN; SAVEPOINT s; SELECT 1; ROLLBACK TO SAVEPOINT s; SET default_transaction_read_only = on; COMMIT', 'simple')],
    ['pipelined: ROLLBACK and SET ... = on executed in one extended batch', viaWire(2, fe.query('BEGIN'), fe2.step('ROLLBACK'), fe2.step('SET default_transaction_read_only = on'), fe.sync())],
    ['pipelined: BEGIN, SET, ROLLBACK, SET as four Queries in one write', viaWire(4, fe.query('BEGIN'), fe.query("SET DateStyle = 'SQL, DMY'"), fe.query('ROLLBACK'), fe.query('SET default_transaction_read_only = on'))],
    ['SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY after a ROLLBACK', viaPg('BEGIN; ROLLBACK; SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY', 'simple')],
    ['startup options -c default_transaction_read_only=on -c DateStyle=SQL,DMY', async (scope, sub) => {
      const { c } = await client(scope, sub, '-c default_transaction_read_only=on -c DateStyle=SQL,DMY');
      await c.query('SELECT 1');
      await c.end();
    }],
    ['a named statement whose text is SET, executed in a rolled-back transaction and again outside one (pg)', async (scope, sub) => {
      const { c } = await client(scope, sub);
      const q = { name: 'set_ro', text: 'SET default_transaction_read_only = on' };
      await c.query('BEGIN');
      await c.query(q);
      await c.query('ROLLBACK');
      await c.query(q);
      await c.query({ name: 'set_ds', text: "SET DateStyle = 'SQL, DMY'" });
      await c.end();
    }],
    ['raw: Parse named SET + Sync, then Bind/Execute it to a named portal in a later transaction', viaWire(3,
      fe.parse('SET default_transaction_read_only = on', 'set_ro'), fe.sync(),
      fe.parse("SET DateStyle = 'SQL, DMY'", 'set_ds'), fe.sync(),
      fe.bind([], 'p1', 'set_ro'), fe.execute('p1'), fe.bind([], 'p2', 'set_ds'), fe.execute('p2'), fe.sync())],
    ['raw: the unnamed statement SET, executed again by Bind/Execute without a new Parse', viaWire(2,
      fe.parse('SET default_transaction_read_only = on'), fe.bind(), fe.execute(), fe.sync(),
      fe.bind(), fe.execute(), fe.sync())],
    ['raw: a named SET executed in a batch that later fails (the implicit transaction rolls back), then executed in a Query\'s transaction', viaWire(2,
      fe.parse('SET default_transaction_read_only = on', 'set_ro'), fe.bind([], '', 'set_ro'), fe.execute(), fe2.step('SELECT 1/0'), fe.sync(),
      fe.query('BEGIN; SELECT 1; ROLLBACK'))],
  ];

  for (const [what, attack] of ATTACKS) {
    test(`${what}: the next client's writes succeed and its settings are the server's`, async () => {
      const pid = await sharedPid();
      await attack('orders:read', 'mallory');
      await assertVictimWrites(pid, what);
    });
  }
});

describe('setseed() and SET seed do not make the next client\'s random() predictable', { timeout: 240_000 }, () => {
  let seeded: number[];
  before(async () => {
    const c = new pg.Client({ connectionString: fx.pg.url(DB) });
    await c.connect();
    try {
      await c.query('SELECT setseed(0.5)');
      seeded = (await c.query('SELECT random() AS r FROM generate_series(1, 5)')).rows.map((r) => r.r as number);
    } finally {
      await c.end();
    }
  });

  const ATTACKS: Array<[string, Send]> = [
    ...forms('SELECT setseed(0.5)'),
    ['pg_catalog-qualified, quoted', viaPg('SELECT pg_catalog."setseed"(0.5)', 'simple')],
    ['U& identifier', viaPg('SELECT U&"\\0073etseed"(0.5)', 'simple')],
    ['inside a FROM subquery', viaPg('SELECT 1 FROM (SELECT setseed(0.5)) s', 'extended')],
    ['SET seed = 0.5', viaPg('SET seed = 0.5', 'simple')],
    ['SET seed TO 0.5 in a committed transaction, extended', viaPg('SET seed TO 0.5', 'extended')],
  ];

  for (const [what, attack] of ATTACKS) {
    test(`${what}: the next client's random() is not the sequence setseed(0.5) fixes`, async () => {
      const pid = await sharedPid();
      await attack('orders:read', 'mallory');
      const { c } = await client('orders:read', 'victim');
      await assertSameOrClosed(await pidOf(c), pid);
      const got = (await c.query('SELECT random() AS r FROM generate_series(1, 5)')).rows.map((r) => r.r as number);
      assert.notDeepEqual(got, seeded, `the victim's random() is the attacker's seeded sequence: ${JSON.stringify(got)}`);
      assert.notEqual(got[0], seeded[0], 'not even its first value');
    });
  }
});

describe('a session advisory lock, however its function is spelled, does not stay on the server connection', { timeout: 240_000 }, () => {
  const SPELLINGS: Array<[string, (k: number) => string, (k: number) => string]> = [
    ['pg_advisory_lock', (k) => `SELECT pg_advisory_lock(${k})`, (k) => `pg_try_advisory_lock(${k})`],
    ['U&"pg_adv\\0069sory_lock" (no "advisory" in the text)', (k) => `SELECT U&"pg_adv\\0069sory_lock"(${k})`, (k) => `pg_try_advisory_lock(${k})`],
    ['U&"\\0070g_advisory_lock"', (k) => `SELECT U&"\\0070g_advisory_lock"(${k})`, (k) => `pg_try_advisory_lock(${k})`],
    ['U&"pg_advi!0073ory_lock" UESCAPE \'!\'', (k) => `SELECT U&"pg_advi!0073ory_lock" UESCAPE '!' (${k})`, (k) => `pg_try_advisory_lock(${k})`],
    ['"pg_advisory_lock" quoted, pg_catalog-qualified', (k) => `SELECT pg_catalog."pg_advisory_lock"(${k})`, (k) => `pg_try_advisory_lock(${k})`],
    ['U&"pg_try_adv\\0069sory_lock"', (k) => `SELECT U&"pg_try_adv\\0069sory_lock"(${k})`, (k) => `pg_try_advisory_lock(${k})`],
    ['U&"pg_adv\\0069sory_lock_shared" (the victim wants it exclusive)', (k) => `SELECT U&"pg_adv\\0069sory_lock_shared"(${k})`, (k) => `pg_try_advisory_lock(${k})`],
    ['two-key U&"pg_adv\\0069sory_lock"(int, int)', (k) => `SELECT U&"pg_adv\\0069sory_lock"(${k}, 7)`, (k) => `pg_try_advisory_lock(${k}, 7)`],
    ['in a FROM subquery', (k) => `SELECT 1 FROM (SELECT U&"pg_adv\\0069sory_lock"(${k})) s`, (k) => `pg_try_advisory_lock(${k})`],
  ];

  for (const [what, lock, tryLock] of SPELLINGS) {
    const variants: Array<[string, (sql: string) => Send]> = [
      ['simple', (sql) => viaPg(sql, 'simple')],
      ['extended', (sql) => viaPg(sql, 'extended')],
      ['pipelined', (sql) => viaWire(2, fe2.step(sql), fe.sync(), fe.query('SELECT 1'))],
    ];
    for (const [form, send] of variants) {
      test(`${what} (${form}): the next client and another session can take the lock; pg_locks shows none left`, async () => {
        const key = randomInt(100_000, 2_000_000_000);
        const pid = await sharedPid();
        await send(lock(key))('orders:read', 'mallory');
        const { c } = await client('orders:read', 'victim');
        await c.query('BEGIN');
        const v = (await c.query(`SELECT pg_backend_pid() AS pid, ${tryLock(key).replace('pg_try_advisory_lock', 'pg_try_advisory_xact_lock')} AS got`)).rows[0];
        await c.query('COMMIT');
        await assertSameOrClosed(v.pid as number, pid);
        assert.equal(v.got, true, 'the victim takes the lock');
        const held = (await fx.su(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = ${pid}`)).rows[0].n as number;
        const other = new pg.Client({ connectionString: fx.pg.url(DB) });
        await other.connect();
        try {
          const got = (await other.query(`SELECT ${tryLock(key)} AS got`)).rows[0].got as boolean;
          assert.equal(held, 0, `pg_locks: ${held} advisory lock(s) still held by server connection ${pid}`);
          assert.equal(got, true, 'another session cannot take the lock: the server connection still holds it');
        } finally {
          await other.end();
        }
      });
    }
  }
});

describe('lastval() and currval() never show another client\'s sequence values', { timeout: 240_000 }, () => {
  const READS = ['SELECT lastval() AS v', "SELECT currval('orders_id_seq') AS v", "SELECT currval('public.orders_id_seq'::regclass) AS v", "SELECT pg_catalog.currval('orders_id_seq') AS v"];

  for (const sql of READS) {
    const variants: Array<[string, (w: { c: pg.Client }) => Promise<unknown>]> = [
      ['simple', ({ c }) => c.query(sql)],
      ['extended', ({ c }) => c.query({ text: sql, queryMode: 'extended' } as pg.QueryConfig)],
      ['multi-statement', ({ c }) => c.query(`SELECT 1; ${sql}`)],
    ];
    for (const [form, read] of variants) {
      test(`${sql} (${form}) after another client's INSERT: the attacker never receives the victim's id`, async () => {
        const base = randomInt(100_000_000, 900_000_000);
        await fx.su(`SELECT setval('orders_id_seq', ${base})`);
        const victim = await client('orders:write', 'victim');
        const id = (await victim.c.query('INSERT INTO orders (customer_id, total) VALUES (1, 1) RETURNING id')).rows[0].id as number;
        const pid = await pidOf(victim.c);
        await victim.c.end();
        assert.ok(id > base);
        const attacker = await client('orders:write', 'mallory');
        await read(attacker).catch(() => undefined);
        await assertSameOrClosed(await pidOf(attacker.c), pid);
        assert.ok(!attacker.seen().includes(String(id)), `the attacker received the victim's order id ${id}`);
      });
    }
  }

  test('pipelined raw: lastval() and currval() in one batch right after another client\'s INSERT', async () => {
    const base = randomInt(100_000_000, 900_000_000);
    await fx.su(`SELECT setval('orders_id_seq', ${base})`);
    const victim = await client('orders:write', 'victim');
    const id = (await victim.c.query("SELECT place_order(1, 2) AS id")).rows[0].id as number;
    await victim.c.end();
    const w = await wire('orders:write', 'mallory');
    w.write(fe2.step('SELECT lastval()'), fe.sync(), fe2.step("SELECT currval('orders_id_seq')"), fe.sync(), fe.query('SELECT lastval(); SELECT 1'));
    await w.untilReady(3);
    assert.ok(!w.text().includes(String(id)), `the attacker received the victim's order id ${id}: ${JSON.stringify(rowsOf(w.received))}`);
    w.close();
  });
});

describe('temporary relations never shadow a table for the next client', { timeout: 240_000 }, () => {
  const AS = `SELECT 1 AS id, '${SHADOW}'::text AS status`;
  const ATTACKS: Array<[string, string, Send]> = [
    ['CREATE TEMP TABLE orders AS ...', 'scratch', viaPg(`CREATE TEMP TABLE orders AS ${AS}`, 'simple')],
    ['CREATE TEMP TABLE orders AS ... (extended)', 'scratch', viaPg(`CREATE TEMP TABLE orders AS ${AS}`, 'extended')],
    ['CREATE TABLE pg_temp.orders AS ... (no TEMP keyword)', 'scratch', viaPg(`CREATE TABLE pg_temp.orders AS ${AS}`, 'simple')],
    ['CREATE TABLE pg_temp.orders (...); INSERT INTO pg_temp.orders', 'scratch', viaPg(`CREATE TABLE pg_temp.orders (id int, status text); INSERT INTO pg_temp.orders VALUES (1, '${SHADOW}')`, 'simple')],
    ['CREATE TEMP VIEW orders AS ...', 'scratch', viaPg(`CREATE TEMP VIEW orders AS ${AS}`, 'simple')],
    ['CREATE VIEW pg_temp.orders AS ... (extended)', 'scratch', viaPg(`CREATE VIEW pg_temp.orders AS ${AS}`, 'extended')],
    ['SELECT ... INTO TEMP orders', 'scratch', viaPg(`${AS} INTO TEMP orders`, 'simple')],
    ['SELECT ... INTO pg_temp.orders (named statement)', 'scratch', viaPg(`${AS} INTO pg_temp.orders`, 'named')],
    ['EXPLAIN ANALYZE CREATE TEMP TABLE orders AS ...', 'scratch', viaPg(`EXPLAIN ANALYZE CREATE TEMP TABLE orders AS ${AS}`, 'simple')],
    ['pipelined: CREATE TABLE pg_temp.orders AS ... in an extended batch', 'scratch', viaWire(2, fe2.step('SELECT 1'), fe2.step(`CREATE TABLE pg_temp.orders AS ${AS}`), fe.sync(), fe.query('SELECT 1'))],
    ['admin: SET search_path = pg_temp, public; CREATE TABLE orders AS ... (separate messages)', 'admin', async (scope, sub) => {
      const { c } = await client(scope, sub);
      await c.query('SET search_path = pg_temp, public');
      await c.query(`CREATE TABLE orders AS ${AS}`);
      await c.end();
    }],
    ['admin: startup options -c search_path=pg_temp,public; CREATE TABLE orders AS ...', 'admin', async (scope, sub) => {
      const { c } = await client(scope, sub, '-c search_path=pg_temp,public');
      await c.query(`CREATE TABLE orders AS ${AS}`);
      await c.end();
    }],
  ];

  for (const [what, scope, attack] of ATTACKS) {
    test(`${what} (${scope}): the next client reads public.orders, and no temporary orders is left`, async () => {
      const pid = await sharedPid();
      await attack(scope, 'mallory');
      const { c, seen } = await client('orders:read', 'victim');
      const r = (await c.query("SELECT pg_backend_pid() AS pid, to_regclass('pg_temp.orders') IS NULL AS none")).rows[0];
      await assertSameOrClosed(r.pid as number, pid);
      const read = async (q: pg.QueryConfig | string): Promise<string[]> => {
        try {
          return (await c.query(q)).rows.map((x) => x.status as string);
        } catch (err) {
          // A temporary orders of another role: the victim's "orders" is not public.orders.
          assert.fail(`the victim's "orders" is not public.orders: ${(err as Error).message} (temporary orders visible: ${!r.none})`);
        }
      };
      const statuses = await read('SELECT status FROM orders ORDER BY id');
      const extended = await read({ text: 'SELECT status FROM orders ORDER BY id', values: [] });
      assert.ok(!seen().includes(SHADOW), `the victim read the attacker's shadow "orders": ${JSON.stringify(statuses)}`);
      const want = await publicStatuses();
      assert.deepEqual(statuses, want);
      assert.deepEqual(extended, want);
      assert.equal(r.none, true, 'a temporary orders is visible to the victim');
      const left = (await fx.su("SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname LIKE 'pg_temp%' AND c.relname = 'orders'")).rows[0].n as number;
      assert.equal(left, 0, 'a temporary orders still exists on the server');
    });
  }
});

describe('controls', { timeout: 60_000 }, () => {
  test('the scratch scope really creates a temporary orders that shadows public.orders within its own transaction', async () => {
    const { c } = await client('scratch', 'mallory');
    await c.query('BEGIN');
    await c.query(`CREATE TEMP TABLE orders ON COMMIT DROP AS SELECT 1 AS id, '${SHADOW}'::text AS status`);
    assert.deepEqual((await c.query('SELECT status FROM orders')).rows, [{ status: SHADOW }]);
    await c.query('COMMIT');
    assert.deepEqual((await c.query('SELECT status FROM orders ORDER BY id')).rows.map((x) => x.status), await publicStatuses());
  });

  test('an attacker\'s own SET outside a transaction stays its own: it keeps it, the victim does not get it', async () => {
    const a = await client('orders:read', 'mallory');
    await a.c.query("SET DateStyle = 'SQL, DMY'");
    const b = await client('orders:read', 'victim');
    assert.equal(await pidOf(b.c), await pidOf(a.c));
    assert.equal((await b.c.query('SHOW DateStyle')).rows[0].DateStyle, defaults.datestyle);
    assert.equal((await a.c.query('SHOW DateStyle')).rows[0].DateStyle, 'SQL, DMY');
    assert.notEqual(defaults.datestyle, 'SQL, DMY');
  });
});
