// Concern: a SET / RESET / set_config that scopegate refuses (42501) must leave no trace: scopegate must never re-apply it on the client's other server connections.
/**
 * Transaction mode, pool_size 2, through the real scopegate CLI on a real PostgreSQL
 * (test/scope.fixture.test.ts: orders:read runs as app_reader, admin as app_admin).
 *
 * One scopegate; each test connects to a database entry of its own (its own pool of two
 * server connections on database `app`, so a leak in one test cannot fail the next) with
 * three connections: `a` and `b` log in with the SAME orders:read token, `c` with an
 * independent orders:read token. `a` sends a statement scopegate refuses; then a tour moves the three
 * clients round the two server connections (two of them always hold a backend in an open
 * transaction, so the third one's BEGIN can only get the backend just released), every
 * client visits both backends (proved with pg_backend_pid()) and, on each visit, reads back
 * current_user, search_path, scopegate.claims, statement_timeout, its privilege on secrets
 * and `SELECT status FROM orders`. A schema `shadow` holds a table `orders` whose only row's
 * status is a secret: it is reachable only if someone's search_path puts `shadow` first.
 * Every read-back must equal what that client read before the refused statement.
 *
 * The controls: an allowed SET rolled back, an allowed SET that PostgreSQL rejects, and an
 * allowed SET outside a transaction (which IS carried to the client's other backend, and only
 * to that client); an admin's allowed SET search_path through the proxy shows the shadow
 * table is what a leak would read.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { AUTH, AUTH_PASSWORD, DB, EXAMPLE_POLICY, SECRET, errorOf, startFixture, type Fixture } from './scope.fixture.test.js';

const SHADOW_SECRET = `shadow-secret-${randomUUID()}`;
const FORGED_CLAIMS = JSON.stringify({ sub: 'mallory', tenant: `forged-${randomUUID().slice(0, 8)}` });

const SHADOW_SQL = `
CREATE SCHEMA shadow;
CREATE TABLE shadow.orders (id int, customer_id int, total numeric, status text, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO shadow.orders (id, customer_id, total, status) VALUES (1, 1, 0, '${SHADOW_SECRET}');
GRANT USAGE ON SCHEMA shadow TO app_reader, app_writer, app_admin;
GRANT SELECT ON shadow.orders TO app_reader, app_writer, app_admin;
`;

const CONTEXT = `SELECT pg_backend_pid() AS pid, current_user AS u, current_setting('search_path') AS sp,
  current_setting('scopegate.claims', true) AS claims, current_setting('statement_timeout') AS st,
  has_table_privilege('public.secrets', 'select') AS can_secrets`;
const READ_ORDERS = 'SELECT status FROM orders ORDER BY id';

interface Seen {
  pid: number;
  u: string;
  sp: string;
  claims: string | null;
  st: string;
  can_secrets: boolean;
  statuses: string[];
}

type Who = 'a' | 'b' | 'c';
type Protocol = 'simple' | 'extended' | 'named' | 'multi';

let fx: Fixture;
let sg: RunningScopegate;
/** What `SELECT status FROM orders` returns on public.orders, read by the superuser. */
let publicStatuses: string[];
/** Database entries handed out to tests as they are declared: one pool of two per test. */
let entries = 0;

before(async () => {
  fx = await startFixture({ poolSize: 2 });
  await fx.su(SHADOW_SQL);
  publicStatuses = (await fx.su('SELECT status FROM public.orders ORDER BY id')).rows.map((r) => r.status as string);
  assert.ok(!publicStatuses.includes(SHADOW_SECRET));
  // The oracle works: with shadow first in its search_path, app_reader reads the secret.
  const direct = new pg.Client({ connectionString: fx.pg.url(DB) });
  await direct.connect();
  try {
    await direct.query('SET ROLE app_reader');
    await direct.query('SET search_path = shadow, public');
    assert.deepEqual((await direct.query(READ_ORDERS)).rows.map((r) => r.status), [SHADOW_SECRET]);
  } finally {
    await direct.end();
  }
  // One scopegate; every test gets a database entry of its own (all on database `app`), so
  // its two server connections have never served another test's clients.
  const url = fx.pg.url(DB, 'authenticator', AUTH_PASSWORD);
  sg = await startScopegate({
    databases: Object.fromEntries(Array.from({ length: entries }, (_, i) => [`t${i + 1}`, { url, pool_size: 2 }])),
    pool: { mode: 'transaction', query_wait_timeout: '20s' },
    auth: AUTH,
    policy: EXAMPLE_POLICY,
    log: { level: 'info' },
  }, { SG_SECRET: SECRET });
});

after(async () => {
  await sg?.stop();
  await fx?.stop();
});

interface Proxy {
  /** Same orders:read token. */
  a: pg.Client;
  b: pg.Client;
  /** An independent orders:read token. */
  c: pg.Client;
  connect(scope: string, sub: string): Promise<pg.Client>;
}

/**
 * Declares a test that runs on database entry `t<n>` (transaction mode, pool_size 2) with
 * clients a, b (one token) and c (another), and both server connections already open.
 */
function proxyTest(name: string, fn: (p: Proxy) => Promise<void>): void {
  const database = `t${++entries}`;
  test(name, async () => {
    const clients: pg.Client[] = [];
    const connect = async (scope: string, sub: string): Promise<pg.Client> => {
      const cl = new pg.Client({ host: '127.0.0.1', port: sg.port, user: sub, password: await fx.token(scope, sub), database });
      cl.on('error', () => undefined);
      clients.push(cl);
      await cl.connect();
      return cl;
    };
    try {
      const a = await connect('orders:read', 'reader');
      const b = await connect('orders:read', 'reader');
      const c = await connect('orders:read', 'other-reader');
      // Open both server connections first, so none is being opened while the test moves
      // clients around (a connection opened for a client that meanwhile got a released one
      // sits unused in the pool while the next client waits for query_wait_timeout).
      await a.query('BEGIN');
      await b.query('BEGIN');
      const pa = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
      const pb = (await b.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
      await a.query('COMMIT');
      await b.query('COMMIT');
      assert.notEqual(pa, pb, 'pool_size 2: two server connections');
      await fn({ a, b, c, connect });
    } finally {
      await Promise.all(clients.map((cl) => cl.end().catch(() => undefined)));
    }
  });
}

/** What the client sees of its session right now (simple protocol). */
async function look(cl: pg.Client): Promise<Seen> {
  const ctx = (await cl.query(CONTEXT)).rows[0] as Omit<Seen, 'statuses'>;
  const statuses = (await cl.query(READ_ORDERS)).rows.map((r) => r.status as string);
  return { ...ctx, statuses };
}

/**
 * Moves a, b, c round the two backends: at each step the client that has held a backend
 * longest commits and the next client in turn BEGINs, so it gets exactly that backend (the
 * other one is held), and reads its session inside the transaction. Nine steps visit the
 * backends as P(a) Q(b) P(c) Q(a) P(b) Q(c) P(a) Q(b) P(c): each client sees both, and `a`
 * always follows `b` (same token) on a backend.
 */
async function tour(p: Proxy): Promise<Array<{ who: Who; step: number; seen: Seen }>> {
  const order: Who[] = ['a', 'b', 'c'];
  const holding: pg.Client[] = [];
  const out: Array<{ who: Who; step: number; seen: Seen }> = [];
  try {
    for (let step = 0; step < 9; step++) {
      if (holding.length === 2) await holding.shift()!.query('COMMIT');
      const who = order[step % 3]!;
      const cl = p[who];
      await cl.query('BEGIN');
      holding.push(cl);
      out.push({ who, step, seen: await look(cl) });
    }
  } finally {
    for (const cl of holding) await cl.query('COMMIT').catch(() => undefined);
  }
  const pids = new Set(out.map((x) => x.seen.pid));
  assert.equal(pids.size, 2, `the tour used both server connections and no others: ${[...pids].join(', ')}`);
  for (const who of order) {
    const mine = new Set(out.filter((x) => x.who === who).map((x) => x.seen.pid));
    assert.equal(mine.size, 2, `client ${who} visited both server connections`);
  }
  return out;
}

/** Every visit must look exactly like the client's baseline, and never show the shadow secret. */
function assertUnchanged(visits: Array<{ who: Who; step: number; seen: Seen }>, baseline: Record<Who, Seen>): void {
  const problems: string[] = [];
  for (const { who, step, seen } of visits) {
    const want = baseline[who];
    const at = `client ${who} on backend ${seen.pid} (step ${step})`;
    if (seen.u !== want.u) problems.push(`${at}: current_user ${seen.u}, expected ${want.u}`);
    if (seen.sp !== want.sp) problems.push(`${at}: search_path ${JSON.stringify(seen.sp)}, expected ${JSON.stringify(want.sp)}`);
    if (seen.claims !== want.claims) problems.push(`${at}: scopegate.claims ${seen.claims}, expected ${want.claims}`);
    if (seen.st !== want.st) problems.push(`${at}: statement_timeout ${seen.st}, expected ${want.st}`);
    if (seen.can_secrets !== want.can_secrets) problems.push(`${at}: has_table_privilege(secrets) ${seen.can_secrets}`);
    if (seen.statuses.includes(SHADOW_SECRET)) problems.push(`${at}: read the shadow table's secret from "orders"`);
    else if (JSON.stringify(seen.statuses) !== JSON.stringify(want.statuses)) problems.push(`${at}: orders read ${JSON.stringify(seen.statuses)}`);
  }
  assert.deepEqual(problems, [], problems.join('\n'));
}

/** Each client's view before anything happens; sanity of the fixture. */
async function baselines(p: Proxy): Promise<Record<Who, Seen>> {
  const base = { a: await look(p.a), b: await look(p.b), c: await look(p.c) };
  for (const who of ['a', 'b', 'c'] as const) {
    assert.equal(base[who].u, 'app_reader', `${who}: orders:read runs as the role of config/policy.yaml`);
    assert.equal(base[who].can_secrets, false);
    assert.deepEqual(base[who].statuses, publicStatuses, `${who} reads public.orders`);
    assert.ok(!base[who].sp.includes('shadow'));
  }
  assert.equal(base.a.claims, base.b.claims, 'a and b carry the same token');
  assert.notEqual(base.a.claims, base.c.claims, 'c carries a token of its own');
  assert.ok(!String(base.a.claims).includes(FORGED_CLAIMS));
  return base;
}

function send(cl: pg.Client, sql: string, protocol: Protocol): Promise<pg.QueryResult> {
  switch (protocol) {
    case 'simple': return cl.query(sql);
    case 'multi': return cl.query(`SELECT 1; ${sql}`);
    case 'extended': return cl.query({ text: sql, queryMode: 'extended' } as pg.QueryConfig);
    case 'named': return cl.query({ name: `refused_${randomUUID().slice(0, 8)}`, text: sql });
  }
}

/** The statement is refused by scopegate with 42501. */
async function assertRefused(cl: pg.Client, sql: string, protocol: Protocol): Promise<void> {
  const e = await errorOf(() => send(cl, sql, protocol));
  assert.equal(e.code, '42501', `${protocol} ${sql}: ${e.message}`);
  assert.match(e.message, /^permission denied/, `${protocol} ${sql}`);
  // The client goes on; its session is untouched on the backend it is on now.
  assert.equal((await cl.query('SELECT 1 AS ok')).rows[0].ok, 1);
}

/** Each is sent as a simple Query, an unnamed Parse (extended), a named Parse, and after `SELECT 1;` in one Query. */
const REFUSED: Array<{ form: string; sql: string }> = [
  { form: 'SET search_path', sql: 'SET search_path = shadow, public' },
  { form: 'SET SESSION search_path', sql: 'SET SESSION search_path TO shadow, public' },
  { form: 'SET ROLE', sql: 'SET ROLE app_admin' },
  { form: 'SET SESSION ROLE', sql: 'SET SESSION ROLE app_admin' },
  { form: 'SET scopegate.claims', sql: `SET scopegate.claims = '${FORGED_CLAIMS}'` },
  { form: 'SET SESSION scopegate.claims', sql: `SET SESSION scopegate.claims TO '${FORGED_CLAIMS}'` },
  { form: 'RESET ROLE', sql: 'RESET ROLE' },
  { form: 'RESET search_path', sql: 'RESET search_path' },
  { form: 'RESET scopegate.claims', sql: 'RESET scopegate.claims' },
  { form: 'set_config(search_path)', sql: "SELECT set_config('search_path', 'shadow, public', false)" },
  { form: 'set_config(role)', sql: "SELECT set_config('role', 'app_admin', false)" },
  { form: 'set_config(scopegate.claims)', sql: `SELECT pg_catalog.set_config('scopegate.claims', '${FORGED_CLAIMS}', false)` },
];

describe('refused SET / RESET / set_config is not re-applied on another server connection', { timeout: 240_000 }, () => {
  for (const { form, sql } of REFUSED) {
    for (const protocol of ['simple', 'extended', 'named', 'multi'] as const) {
      proxyTest(`${form} (${protocol}): 42501, and no backend ever shows its effect`, async (p) => {
        const base = await baselines(p);
        await assertRefused(p.a, sql, protocol);
        assertUnchanged(await tour(p), base);
      });
    }
  }

  proxyTest('a refused message carrying an allowed SET (SELECT FROM secrets; SET statement_timeout): the SET is not kept', async (p) => {
    const base = await baselines(p);
    const want = '4321ms';
    assert.ok(Object.values(base).every((s) => s.st !== want));
    await assertRefused(p.a, `SELECT value FROM secrets; SET statement_timeout = '${want}'`, 'simple');
    assertUnchanged(await tour(p), base);
  });

  proxyTest('a refused message carrying an allowed RESET (SELECT FROM secrets; RESET statement_timeout): the client keeps its setting, no other client gets it', async (p) => {
    await p.a.query("SET statement_timeout = '1234ms'");
    const base = await baselines(p);
    assert.equal(base.a.st, (await p.a.query('SHOW statement_timeout')).rows[0].statement_timeout);
    assert.notEqual(base.a.st, base.c.st, 'a set its own statement_timeout');
    await assertRefused(p.a, 'SELECT value FROM secrets; RESET statement_timeout', 'simple');
    assertUnchanged(await tour(p), base);
  });
});

describe('controls: allowed SETs', { timeout: 120_000 }, () => {
  proxyTest('an admin\'s allowed SET search_path = shadow, public reads the shadow table through the proxy (the oracle)', async (p) => {
    const admin = await p.connect('admin', 'admin');
    await admin.query('SET search_path = shadow, public');
    assert.deepEqual((await admin.query(READ_ORDERS)).rows.map((r) => r.status), [SHADOW_SECRET]);
    const base = await baselines(p);
    assertUnchanged(await tour(p), base);
  });

  for (const protocol of ['simple', 'extended'] as const) {
    proxyTest(`(a) an allowed SET statement_timeout inside BEGIN ... ROLLBACK is not replayed (${protocol})`, async (p) => {
      const base = await baselines(p);
      await p.a.query('BEGIN');
      await send(p.a, "SET statement_timeout = '1234ms'", protocol);
      assert.equal((await p.a.query('SHOW statement_timeout')).rows[0].statement_timeout, '1234ms');
      await send(p.a, 'ROLLBACK', protocol);
      assert.equal((await p.a.query('SHOW statement_timeout')).rows[0].statement_timeout, base.a.st);
      assertUnchanged(await tour(p), base);
    });
  }

  for (const protocol of ['simple', 'extended', 'multi'] as const) {
    proxyTest(`(b) an allowed SET that PostgreSQL rejects (statement_timeout = 'banana') is not replayed (${protocol})`, async (p) => {
      const base = await baselines(p);
      const e = await errorOf(() => send(p.a, "SET statement_timeout = 'banana'", protocol));
      assert.equal(e.code, '22023', e.message);
      assert.equal((await p.a.query('SELECT 1 AS ok')).rows[0].ok, 1);
      assertUnchanged(await tour(p), base);
    });
  }

  proxyTest('(c) an allowed SET outside a transaction IS carried to the client\'s other backend, and only for that client', async (p) => {
    const base = await baselines(p);
    await p.a.query("SET statement_timeout = '1234ms'");
    const st = (await p.a.query('SHOW statement_timeout')).rows[0].statement_timeout as string;
    assert.equal(st, '1234ms');
    assert.ok(Object.values(base).every((s) => s.st !== st));
    assertUnchanged(await tour(p), { ...base, a: { ...base.a, st } });
  });
});

describe('an allowed SET undone within one message', { timeout: 60_000 }, () => {
  proxyTest('(a) BEGIN; SET statement_timeout; ROLLBACK in one simple Query message is not replayed', async (p) => {
    const base = await baselines(p);
    await p.a.query("BEGIN; SET statement_timeout = '1234ms'; ROLLBACK");
    assert.equal((await p.a.query('SHOW statement_timeout')).rows[0].statement_timeout, base.a.st, 'PostgreSQL rolled the SET back');
    assertUnchanged(await tour(p), base);
  });
});
