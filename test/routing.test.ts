/**
 * Tenants routed by a token claim (route_by_claim, issue 13 part 3), end to end: a real
 * PostgreSQL with a database per tenant, the real scopegate CLI, real clients (pg, psql).
 * Each tenant's token reaches only its own database on every query path, with its own column
 * catalog; tokens naming no route (or a hostile value) are refused before anything connects;
 * SHOW POOLS has a pool per route; a reload drains a removed route; max_routes evicts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { parseConfig } from '../src/config.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { runProcess } from './harness/process.js';
import { freePort } from './harness/ports.js';
import { AUTH, AUTH_PASSWORD, ROLES_SQL, SECRET, errorOf, mintToken, pollUntil, startLoggedPostgres, type LoggedPostgres } from './scope.fixture.test.js';

const ADMIN = 'scopegate:admin';
const READ = 'items:read';

const POLICY = `
default_schema: public
catalog: read
mode: enforce
scopes:
  "${READ}":
    role: app_reader
    allow:
      - { actions: [select], tables: [items], columns: [id, name, acme_only, globex_only], star: expand }
`;

/** A tenant database: its own rows, and a column only it has (so a wrong catalog breaks `*`). */
function tenantSql(tenant: string): string {
  return `
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO app_reader;
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, ${tenant}_only text);
INSERT INTO items VALUES (1, '${tenant}-one', '${tenant}-x'), (2, '${tenant}-two', '${tenant}-y');
GRANT SELECT ON items TO app_reader;
ALTER ROLE authenticator SET search_path = public;
`;
}

let pgsrv: LoggedPostgres;
let sg: RunningScopegate;
let dir: string;
let cfg: Record<string, unknown>;
let httpPort: number;
const open: pg.Client[] = [];

function routes(names: string[], db: (n: string) => string, sizes: Record<string, number> = {}): Record<string, unknown> {
  return Object.fromEntries(names.map((n) => [n, { url: pgsrv.url(db(n), 'authenticator', AUTH_PASSWORD), ...(sizes[n] !== undefined ? { pool_size: sizes[n] } : {}) }]));
}

function config(appRoutes: string[], sessRoutes: string[]): Record<string, unknown> {
  return {
    databases: {
      app: { route_by_claim: 'tenant', pool_size: 2, routes: routes(appRoutes, (n) => `t_${n}`, { globex: 3 }) },
      sess: { route_by_claim: 'tenant', pool_mode: 'session', routes: routes(sessRoutes, (n) => `t_${n}`) },
      shop: { route_by_claim: 'tenant', url: pgsrv.url('shop_{tenant}', 'authenticator', AUTH_PASSWORD), max_routes: 1 },
    },
    auth: AUTH,
    policy: join(dir, 'policy.yaml'),
    admin: { scope: ADMIN, listen_http: `127.0.0.1:${httpPort}` },
    log: { level: 'info' },
  };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'routing-'));
  writeFileSync(join(dir, 'policy.yaml'), POLICY);
  httpPort = await freePort();
  // The server's log shows every failed connection attempt (a database that does not exist).
  pgsrv = await startLoggedPostgres(['-c', 'log_connections=on']);
  await pgsrv.sql(ROLES_SQL);
  for (const db of ['t_acme', 't_globex', 'shop_acme', 'shop_globex']) {
    await pgsrv.sql(`CREATE DATABASE ${db}`);
    await pgsrv.sql(tenantSql(db.replace(/^(t|shop)_/, '')), db);
  }
  cfg = config(['acme', 'globex'], ['acme', 'globex']);
  sg = await startScopegate(cfg, { SG_SECRET: SECRET });
});

after(async () => {
  await Promise.all(open.map((c) => c.end().catch(() => undefined)));
  await sg?.stop().catch(() => null);
  await pgsrv?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const tokens = new Map<string, Promise<string>>();
function token(scope: string, claims: Record<string, string>): Promise<string> {
  const key = `${scope}\0${JSON.stringify(claims)}`;
  let t = tokens.get(key);
  if (t === undefined) tokens.set(key, (t = mintToken(sg.configFile, scope, 'alice', claims)));
  return t;
}

async function connect(database: string, claims: Record<string, string>, scope = READ): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'alice', password: await token(scope, claims), database });
  c.on('error', () => undefined);
  await c.connect();
  open.push(c);
  return c;
}

async function pools(): Promise<Map<string, string[]>> {
  const c = await connect('scopegate', {}, ADMIN);
  try {
    const r = await c.query<Record<string, string>>('SHOW POOLS');
    return new Map(r.rows.map((row) => [row.database!, [row.cl_active!, row.sv_active!, row.sv_idle!]]));
  } finally {
    await c.end();
  }
}

async function reload(next: Record<string, unknown>): Promise<void> {
  const seen = sg.logs.filter((l) => l.msg === 'configuration reloaded').length;
  sg.writeConfig(next);
  sg.proc.kill('SIGHUP');
  await pollUntil(async () => sg.logs.filter((l) => l.msg === 'configuration reloaded').length > seen, 'configuration reloaded');
}

test('each tenant sees only its own database on every query path: simple, extended, prepared, star from its own catalog, COPY TO', async () => {
  for (const tenant of ['acme', 'globex']) {
    const other = tenant === 'acme' ? 'globex' : 'acme';
    const c = await connect('app', { tenant });
    const simple = await c.query('SELECT name FROM items ORDER BY id');
    assert.deepEqual(simple.rows.map((r) => r.name), [`${tenant}-one`, `${tenant}-two`]);
    const db = await c.query('SELECT current_database() AS d');
    assert.equal(db.rows[0].d, `t_${tenant}`);
    const extended = await c.query({ text: 'SELECT name FROM items WHERE id = $1', values: [2] });
    assert.deepEqual(extended.rows, [{ name: `${tenant}-two` }]);
    for (let i = 0; i < 3; i++) {
      const prepared = await c.query({ name: 'by_id', text: 'SELECT name FROM items WHERE id = $1', values: [1] });
      assert.deepEqual(prepared.rows, [{ name: `${tenant}-one` }]);
    }
    // `*` expands to the allowed columns this tenant's table has: the other tenant's
    // catalog would name a column that does not exist here (42703).
    const star = await c.query('SELECT * FROM items ORDER BY id');
    assert.deepEqual(star.fields.map((f) => f.name), ['id', 'name', `${tenant}_only`]);
    assert.deepEqual(star.rows.map((r) => r[`${tenant}_only`]), [`${tenant}-x`, `${tenant}-y`]);
    const starExt = await c.query({ text: 'SELECT i.* FROM items i WHERE id = $1', values: [1] });
    assert.deepEqual(starExt.rows, [{ id: 1, name: `${tenant}-one`, [`${tenant}_only`]: `${tenant}-x` }]);
    // A text this long is decided by a parser thread: it gets this route's catalog too.
    const long = await c.query(`SELECT * FROM items WHERE id = 1 /* ${'x'.repeat(2048)} */`);
    assert.deepEqual(long.fields.map((f) => f.name), ['id', 'name', `${tenant}_only`]);
    const absent = await errorOf(() => c.query(`SELECT ${other}_only FROM items`));
    assert.equal(absent.code, '42703');
    await c.end();
    const copy = await runProcess('psql', ['-X', '-At', '-h', '127.0.0.1', '-p', String(sg.port), '-U', 'alice', '-d', 'app', '-c', 'COPY (SELECT id, name FROM items ORDER BY id) TO STDOUT'],
      { PGPASSWORD: await token(READ, { tenant }) });
    assert.equal(copy.code, 0, copy.err);
    assert.equal(copy.out, `1\t${tenant}-one\n2\t${tenant}-two\n`);
  }
});

test('SHOW POOLS lists a pool per route as entry/route; tenants never share a server connection', async () => {
  const a = await connect('app', { tenant: 'acme' });
  const g = await connect('app', { tenant: 'globex' });
  await a.query('BEGIN');
  await g.query('BEGIN');
  const pa = (await a.query('SELECT pg_backend_pid() AS p, current_database() AS d')).rows[0];
  const pg2 = (await g.query('SELECT pg_backend_pid() AS p, current_database() AS d')).rows[0];
  assert.notEqual(pa.p, pg2.p);
  assert.equal(pa.d, 't_acme');
  assert.equal(pg2.d, 't_globex');
  const p = await pools();
  assert.ok(p.has('app/acme') && p.has('app/globex'), JSON.stringify([...p.keys()]));
  assert.ok(!p.has('app'), 'a routed entry has no pool of its own');
  assert.equal(p.get('app/acme')![1], '1', 'sv_active of app/acme');
  assert.equal(p.get('app/globex')![1], '1', 'sv_active of app/globex');
  await a.query('COMMIT');
  await g.query('COMMIT');
  await a.end();
  await g.end();
  // Sizes per route, or the entry's: SHOW DATABASES has a row per route with its own server database.
  const adm = await connect('scopegate', {}, ADMIN);
  const dbs = new Map((await adm.query<Record<string, string>>('SHOW DATABASES')).rows.map((r) => [r.name!, r]));
  assert.equal(dbs.get('app/acme')?.pool_size, '2');
  assert.equal(dbs.get('app/globex')?.pool_size, '3');
  assert.equal(dbs.get('app/acme')?.database, 't_acme');
  // KILL of one route closes that tenant's clients only.
  const victim = await connect('app', { tenant: 'acme' });
  const bystander = await connect('app', { tenant: 'globex' });
  const clientsNow = new Map((await adm.query<Record<string, string>>('SHOW DATABASES')).rows.map((r) => [r.name!, r.current_client_connections]));
  assert.equal(clientsNow.get('app/acme'), '1', 'the acme client counts on its route row');
  assert.equal(clientsNow.get('app/globex'), '1');
  await adm.query('KILL app/acme');
  assert.equal((await errorOf(() => victim.query('SELECT 1'))).message.length > 0, true);
  await adm.query('RESUME app/acme');
  assert.equal((await bystander.query('SELECT name FROM items WHERE id = 1')).rows[0].name, 'globex-one');
  await adm.end();
  await bystander.end();
  // Routes nobody has logged in to yet (sess/*) do not hold readiness back.
  assert.equal((await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status, 200);
  const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  assert.match(metrics, /scopegate_transactions_total\{database="app",user="authenticator",route="acme"\} [1-9]/);
  assert.match(metrics, /scopegate_transactions_total\{database="app",user="authenticator",route="globex"\} [1-9]/);
});

test('a token whose claim is missing or names no route is refused with 28000 naming the claim and the database', async () => {
  const missing = await errorOf(() => connect('app', {}));
  assert.equal(missing.code, '28000');
  assert.match(missing.message, /no "tenant" claim, which database "app" routes by/);
  const unknown = await errorOf(() => connect('app', { tenant: 'initech' }));
  assert.equal(unknown.code, '28000');
  assert.match(unknown.message, /"tenant" claim of the access token \("initech"\) names no route of database "app"/);
  const p = await pools();
  assert.ok(![...p.keys()].some((k) => k.includes('initech')));
});

test('hostile claim values never reach a url template: refused with 28000, no route opened, nothing connected', async () => {
  const before = await pools();
  const opened = sg.logs.filter((l) => l.msg === 'route opened').length;
  for (const value of ['acme/../x', 'a b', 'x?host=evil', 'ACME', 'a'.repeat(64), 'acme&user=postgres', 'a'.repeat(63)]) {
    const e = await errorOf(() => connect('shop', { tenant: value }));
    assert.equal(e.code, '28000', value);
    assert.match(e.message, /"tenant" claim .*database "shop"/, value);
  }
  assert.equal(sg.logs.filter((l) => l.msg === 'route opened').length, opened, 'no route was opened');
  assert.deepEqual([...(await pools()).keys()].sort(), [...before.keys()].sort());
  // Nothing reached Postgres for them either: every connection it saw was to a tenant's database.
  const authorized = [...pgsrv.serverLog().matchAll(/connection authorized: user=\S+ database=(\S+)/g)].map((m) => m[1]!);
  assert.ok(authorized.length > 0, 'log_connections works');
  for (const d of authorized) assert.match(d, /^(t|shop)_(acme|globex)$|^postgres$/, d);
  assert.doesNotMatch(pgsrv.serverLog(), /FATAL:\s+database ".*" does not exist|connection received: .*evil/);
});

test('template routes: each tenant its own database; max_routes bounds them (53300 while all are in use, LRU eviction of idle ones)', async () => {
  const a = await connect('shop', { tenant: 'acme' });
  assert.deepEqual((await a.query('SELECT current_database() AS d, name FROM items WHERE id = 1')).rows, [{ d: 'shop_acme', name: 'acme-one' }]);
  const star = await a.query('SELECT * FROM items WHERE id = 1');
  assert.deepEqual(star.fields.map((f) => f.name), ['id', 'name', 'acme_only']);
  const full = await errorOf(() => connect('shop', { tenant: 'globex' }));
  assert.equal(full.code, '53300');
  assert.match(full.message, /max_routes \(1\)/);
  await a.end();
  // Once acme's client has left its route is idle and gives way.
  const g = await pollUntil(async () => connect('shop', { tenant: 'globex' }).catch(() => null), 'shop/globex login');
  assert.deepEqual((await g.query({ text: 'SELECT current_database() AS d, name FROM items WHERE id = $1', values: [1] })).rows, [{ d: 'shop_globex', name: 'globex-one' }]);
  const gstar = await g.query('SELECT * FROM items WHERE id = 1');
  assert.deepEqual(gstar.fields.map((f) => f.name), ['id', 'name', 'globex_only']);
  const p = await pools();
  assert.ok(p.has('shop/globex'));
  assert.ok(!p.has('shop/acme'), 'the idle route was evicted');
  await g.end();
});

for (const mode of ['transaction', 'session'] as const) {
  test(`reload removing a route drains it (${mode} mode): the open transaction finishes, then its client is closed and new logins are refused`, async () => {
    const entry = mode === 'transaction' ? 'app' : 'sess';
    const c = await connect(entry, { tenant: 'acme' });
    const idle = await connect(entry, { tenant: 'acme' });
    const other = await connect(entry, { tenant: 'globex' });
    // In session mode this client now holds its server connection, between transactions.
    assert.equal((await idle.query('SELECT 1 AS one')).rows[0].one, 1);
    await c.query('BEGIN');
    assert.equal((await c.query('SELECT name FROM items WHERE id = 1')).rows[0].name, 'acme-one');
    const ended = new Promise<void>((resolve) => c.once('end', () => resolve()));
    const next = mode === 'transaction' ? config(['globex'], ['acme', 'globex']) : config(['acme', 'globex'], ['globex']);
    await reload(next);
    // The transaction in flight goes on.
    assert.equal((await c.query('SELECT name FROM items WHERE id = 2')).rows[0].name, 'acme-two');
    // A client between transactions is closed at once (in session mode it gives its server back).
    const gone = await errorOf(() => idle.query('SELECT 1'));
    assert.ok(gone.message.length > 0);
    await c.query('COMMIT');
    await ended;
    const after = await errorOf(() => c.query('SELECT 1'));
    assert.ok(after.message.length > 0);
    const refused = await errorOf(() => connect(entry, { tenant: 'acme' }));
    assert.equal(refused.code, '28000');
    // The other tenant is untouched.
    assert.equal((await other.query('SELECT name FROM items WHERE id = 1')).rows[0].name, 'globex-one');
    await pollUntil(async () => !(await pools()).has(`${entry}/acme`), `${entry}/acme gone from SHOW POOLS`);
    await other.end();
    await idle.end().catch(() => undefined);
    await reload(config(['acme', 'globex'], ['acme', 'globex']));
    const back = await connect(entry, { tenant: 'acme' });
    assert.equal((await back.query('SELECT name FROM items WHERE id = 1')).rows[0].name, 'acme-one');
    await back.end();
  });
}

test('a url template with {tenant} outside the database name is refused at startup, naming the key', async () => {
  const bad = { ...cfg, databases: { x: { route_by_claim: 'tenant', url: 'postgres://u:p@{tenant}.db:5432/x' } } };
  const r = await startScopegate(bad, { SG_SECRET: SECRET }).then(async (s) => { await s.stop(); return 'started'; }, (e: Error) => e.message);
  assert.notEqual(r, 'started');
  assert.match(r, /databases\.x\.url/);
});

test('config: route_by_claim is validated key by key', () => {
  const parse = (entry: Record<string, unknown>): string => {
    try {
      parseConfig({ databases: { shop: { route_by_claim: 'tenant', ...entry } } }, null);
      return 'ok';
    } catch (err) {
      return (err as Error).message;
    }
  };
  assert.equal(parse({ url: 'postgres://u:p@db:5432/shop_{tenant}' }), 'ok');
  assert.equal(parse({ routes: { acme: { url: 'postgres://u:p@db/acme', pool_size: 3 } }, pool_size: 7 }), 'ok');
  for (const url of ['postgres://u:p@{tenant}.db/shop', 'postgres://{tenant}:p@db/shop', 'postgres://u:{tenant}@db/shop', 'postgres://u:p@db/shop?options={tenant}']) {
    assert.match(parse({ url }), /databases\.shop\.url/, url);
  }
  assert.match(parse({ url: `postgres://u:p@db/${'s'.repeat(63)}_{tenant}` }), /longer than 63 bytes/);
  assert.match(parse({ url: 'postgres://u:p@db/shop' }), /must contain \{tenant\}/);
  // A claim value alone would be the whole database name: `postgres`, another application's.
  assert.match(parse({ url: 'postgres://u:p@db/{tenant}' }), /databases\.shop\.url: the database name needs a fixed part/);
  assert.equal(parse({ url: 'postgres://u:p@db/{tenant}_shop' }), 'ok');
  assert.match(parse({ url: 'postgres://u:p@db/shop_{tenant}', routes: { a: { url: 'postgres://u@db/a' } } }), /exactly one of/);
  assert.match(parse({ routes: { ACME: { url: 'postgres://u@db/a' } } }), /databases\.shop\.routes\.ACME/);
  assert.match(parse({ routes: { a: { url: 'postgres://u@db/a', pool_mode: 'session' } } }), /routes\.a\.pool_mode/);
  assert.match(parse({ routes: { a: { url: 'postgres://u@db/a' } }, max_routes: 5 }), /max_routes/);
  assert.match(parse({ url: 'postgres://u:p@db/shop_{tenant}', max_routes: 0 }), /max_routes/);
  assert.match(parse({ url: 'postgres://u:p@db/shop_{tenant}', server_login: 'role' }), /server_login/);
});
