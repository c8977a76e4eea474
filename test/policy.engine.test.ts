import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../src/errors.js';
import { classifySql, initParser, parseCount, parsePolicyText, PolicyStore, runCheck } from '../src/policy/index.js';
import { examplePolicyPath } from './policy.helpers.js';
import { SessionStateTracker } from '../src/policy/session-effects.js';

const EXAMPLE = (): string => readFileSync(examplePolicyPath(), 'utf8');

before(async () => {
  await initParser();
});

describe('policy file validation', () => {
  const bad = (yaml: string, key: string): void => {
    assert.throws(() => parsePolicyText(yaml), (e: unknown) => e instanceof ConfigError && e.key === key, `expected ConfigError at ${key}`);
  };
  test('the example policy loads as written', () => {
    const { policy } = parsePolicyText(EXAMPLE());
    assert.deepEqual(policy.scopes.map((s) => [s.name, s.role, s.all]), [
      ['orders:read', 'app_reader', false], ['orders:write', 'app_writer', false], ['admin', 'app_admin', true],
    ]);
    assert.equal(policy.defaultSchema, 'public');
    assert.equal(policy.catalog, 'read');
    assert.equal(policy.mode, 'enforce');
    const cust = policy.scopes[0]!.rules[1]!;
    assert.deepEqual([...cust.columns!], ['id', 'name', 'country']);
    assert.deepEqual(cust.tables, [{ schema: 'public', name: 'customers' }]);
  });
  test('errors name the dotted key path', () => {
    bad('scopes: {a: {role: r, allow: [{actions: [select], tables: [t]}]}}\nextra: 1', 'extra');
    bad('catalog: maybe\nscopes: {a: {role: r, allow: [{actions: [all]}]}}', 'catalog');
    bad('mode: 1\nscopes: {a: {role: r, allow: [{actions: [all]}]}}', 'mode');
    bad('default_schema: [x]\nscopes: {a: {role: r, allow: [{actions: [all]}]}}', 'default_schema');
    bad('scopes: {}', 'scopes');
    bad('scopes: {"orders:read": {allow: [{actions: [select], tables: [t]}]}}', 'scopes.orders:read.role');
    bad('scopes: {a: {role: r, allow: [{actions: [select], tables: [t]}], rolez: x}}', 'scopes.a.rolez');
    bad('scopes: {a: {role: r, allow: [{actions: [selec], tables: [t]}]}}', 'scopes.a.allow[0].actions[0]');
    bad('scopes: {a: {role: r, allow: [{actions: select, tables: [t]}]}}', 'scopes.a.allow[0].actions');
    bad('scopes: {a: {role: r, allow: [{actions: [select]}]}}', 'scopes.a.allow[0].tables');
    bad('scopes: {a: {role: r, allow: [{actions: [select], tables: [t], colums: [x]}]}}', 'scopes.a.allow[0].colums');
    bad('scopes: {a: {role: r, allow: [{actions: [delete], tables: [t], columns: [x]}]}}', 'scopes.a.allow[0].columns');
    bad('scopes: {a: {role: r, allow: [{actions: [execute]}]}}', 'scopes.a.allow[0].functions');
    bad('scopes: {a: {role: r, allow: [{actions: [select], tables: [t], functions: [f]}]}}', 'scopes.a.allow[0].functions');
    bad('scopes: {a: {role: r, allow: [{actions: [all], tables: [t]}]}}', 'scopes.a.allow[0].tables');
    bad('scopes: {a: {role: r, allow: [{actions: [all, select]}]}}', 'scopes.a.allow[0].actions');
    bad('scopes: {a: {role: r, allow: [{actions: [select], tables: ["a.b.c"]}]}}', 'scopes.a.allow[0].tables[0]');
    bad('scopes: {a: {role: 5, allow: [{actions: [all]}]}}', 'scopes.a.role');
    bad('scopes: {a: {role: r, allow: []}}', 'scopes.a.allow');
    bad('scopes: {a: {role: r, allow: [{actions: [select], tables: [t]}', '(root)');
  });
});

const MINI = `
scopes:
  reader:
    role: r
    allow:
      - { actions: [select], tables: ["public.*"] }
`;

describe('decisions', () => {
  const store = (): PolicyStore => PolicyStore.load(examplePolicyPath());

  test('denial message and hint format', () => {
    const d = store().check('DELETE FROM orders', ['orders:read']);
    assert.equal(d.allowed, false);
    assert.deepEqual(d.error, { code: '42501', message: 'permission denied: delete on public.orders', hint: 'scope "admin" grants it' });
    const c = store().check('SELECT email FROM customers', ['orders:read']);
    assert.equal(c.error?.message, 'permission denied: select on public.customers.email');
    const f = store().check('SELECT place_order(1, 2)', ['orders:read']);
    assert.equal(f.error?.message, 'permission denied: execute on function place_order');
    // Unqualified names are reported as written: pg_sleep is pg_catalog's, not public's.
    assert.equal(store().check('SELECT pg_sleep(1)', ['orders:read']).error?.message, 'permission denied: execute on function pg_sleep');
    assert.equal(store().check('SELECT public.place_order(1, 2)', ['orders:read']).error?.message, 'permission denied: execute on function public.place_order');
    assert.equal(f.error?.hint, 'scope "orders:write" grants it');
    const l = store().check('SELECT * FROM orders FOR UPDATE', ['orders:read']);
    assert.equal(l.error?.message, 'permission denied: lock on public.orders');
    assert.equal(l.error?.hint, 'scope "orders:write" grants it');
    const none = PolicyStore.fromText(MINI).check('SELECT * FROM other.x', ['reader']);
    assert.equal(none.error?.message, 'permission denied: select on other.x');
    assert.equal(none.error?.hint, 'no scope grants it');
    const sr = store().check('SET ROLE app_admin', ['orders:write']);
    assert.equal(sr.error?.message, 'permission denied: SET ROLE');
    assert.equal(sr.reason, 'forbidden');
  });

  test('ambiguous unqualified column names the candidate and asks to qualify', () => {
    const d = store().check('SELECT email FROM orders o JOIN customers c ON c.id = o.customer_id', ['orders:read']);
    assert.equal(d.error?.message, 'permission denied: select on public.customers.email');
    assert.match(d.error!.hint, /qualify it/);
  });

  test('split grants: hint explains one role per statement', () => {
    const d = store().check('INSERT INTO orders (customer_id) SELECT id FROM customers', ['orders:read', 'orders:write']);
    assert.equal(d.allowed, false);
    assert.equal(d.reason, 'split_scopes');
    assert.match(d.error!.hint, /one role/);
  });

  test('per-statement results in a multi-statement message', () => {
    const d = store().check('SELECT 1; DELETE FROM orders; COMMIT', ['orders:read']);
    assert.equal(d.allowed, false);
    assert.deepEqual(d.statements.map((s) => [s.kind, s.allowed, s.text]), [
      ['select', true, 'SELECT 1'], ['delete', false, 'DELETE FROM orders'], ['transaction', true, 'COMMIT'],
    ]);
  });

  test('audit fields: fingerprint, normalized text, version, summary', () => {
    const s = store();
    const d = s.check("SELECT * FROM orders WHERE tenant_id = 'acme'", ['orders:read']);
    assert.match(d.fingerprint, /^[0-9a-f]{16}$/);
    assert.equal(d.normalized, 'SELECT * FROM orders WHERE tenant_id = $1');
    assert.equal(d.policyVersion, s.version);
    assert.match(d.summary, /select public\.orders/);
    assert.equal(s.check("SELECT * FROM orders WHERE tenant_id = 'globex'", ['orders:read']).fingerprint, d.fingerprint);
  });

  test('unparseable is denied with 42601 even for admin', () => {
    const d = store().check('SELEC 1', ['admin']);
    assert.equal(d.allowed, false);
    assert.equal(d.reason, 'unparseable');
    assert.equal(d.error?.code, '42601');
  });

  test('audit mode: same verdict, not enforced', () => {
    const s = PolicyStore.fromText(EXAMPLE().replace('mode: enforce', 'mode: audit'));
    const d = s.check('DELETE FROM orders', ['orders:read']);
    assert.equal(d.allowed, false);
    assert.equal(d.enforced, false);
    assert.equal(d.error?.message, 'permission denied: delete on public.orders');
    assert.equal(d.role, 'app_reader', 'audit mode runs would-deny statements under the first held scope');
    const ok = s.check('SELECT * FROM orders', ['orders:read']);
    assert.equal(ok.allowed, true);
    assert.equal(ok.enforced, false);
    assert.equal(store().check('SELECT 1', []).enforced, true);
  });

  test('catalog: deny makes pg_catalog need grants', () => {
    const s = PolicyStore.fromText(EXAMPLE().replace('catalog: read ', 'catalog: deny '));
    assert.equal(s.policy.catalog, 'deny');
    assert.equal(s.check('SELECT relname FROM pg_catalog.pg_class', ['orders:read']).allowed, false);
    assert.equal(s.check('SELECT relname FROM pg_catalog.pg_class', ['admin']).allowed, true);
  });

  test('extensions: wildcards, sequences, column-limited writes, channels, ddl', () => {
    const s = PolicyStore.fromText(`
default_schema: app
scopes:
  s:
    role: r
    allow:
      - { actions: [select], tables: ["*"] }
      - { actions: [insert, update], tables: [customers], columns: [name] }
      - { actions: [usage], tables: [orders_id_seq] }
      - { actions: [update], tables: [other_seq] }
      - { actions: [execute], functions: ["util.*", pg_sleep] }
      - { actions: [notify, listen], channels: [jobs] }
      - { actions: [ddl], tables: ["pg_temp.*"] }
`);
    const ok = (sql: string): boolean => s.check(sql, ['s']).allowed;
    assert.equal(ok('SELECT * FROM anything.here'), true);
    assert.equal(ok("INSERT INTO customers (name) VALUES ('x')"), true);
    assert.equal(ok("INSERT INTO customers (name, email) VALUES ('x', 'y')"), false);
    assert.equal(ok("UPDATE customers SET name = 'x' WHERE id = 1"), true);
    assert.equal(ok("UPDATE customers SET email = 'x'"), false);
    assert.equal(ok('INSERT INTO customers VALUES (1)'), false);
    assert.equal(ok("SELECT nextval('orders_id_seq')"), true, 'unqualified sequence resolves to default_schema app');
    assert.equal(ok("SELECT nextval('app.orders_id_seq'::regclass)"), true);
    assert.equal(ok("SELECT setval('orders_id_seq', 5)"), false);
    assert.equal(ok("SELECT nextval('other_seq'), setval('other_seq', 5)"), true, 'update implies usage');
    assert.equal(ok('SELECT util.anything(1)'), true);
    assert.equal(ok('SELECT pg_sleep(0)'), true);
    assert.equal(ok('SELECT public.f()'), false);
    assert.equal(ok('LISTEN jobs'), true);
    assert.equal(ok("SELECT pg_notify('jobs', 'x')"), true);
    assert.equal(ok('NOTIFY other'), false);
    assert.equal(ok('CREATE TEMP TABLE t (a int)'), true);
    assert.equal(ok('CREATE TABLE t (a int)'), false);
    assert.equal(ok('SET ROLE r'), false);
  });

  test('role selection follows policy file order', () => {
    const s = PolicyStore.fromText(`
scopes:
  wide: { role: r_wide, allow: [{ actions: [select], tables: ["*"] }] }
  narrow: { role: r_narrow, allow: [{ actions: [select], tables: [orders] }] }
`);
    assert.equal(s.check('SELECT * FROM orders', ['narrow', 'wide']).role, 'r_wide');
    assert.equal(s.check('SELECT * FROM orders', ['narrow']).role, 'r_narrow');
    assert.equal(s.check('SELECT * FROM orders', ['narrow']).scope, 'narrow');
  });
});

describe('caches and reload', () => {
  test('the parser runs once per distinct text; decisions are cached per scope set', () => {
    const s = PolicyStore.load(examplePolicyPath());
    const sql = `SELECT id FROM orders WHERE id = ${Math.floor(Math.random() * 1e9)}`;
    const before = parseCount();
    const a = s.check(sql, ['orders:read']);
    assert.equal(parseCount(), before + 1);
    const b = s.check(sql, ['orders:read']);
    assert.equal(a, b, 'same decision object from the cache');
    const c = s.check(sql, ['orders:write']);
    assert.equal(parseCount(), before + 1, 'another scope set reuses the parse');
    assert.equal(c.role, 'app_writer');
    classifySql(sql);
    assert.equal(parseCount(), before + 1, 'classifySql shares the parse cache');
    assert.equal(s.check(sql, ['orders:write', 'orders:write']).role, 'app_writer');
    assert.ok(s.cacheStats.hits >= 1);
  });

  test('decision cache is bounded', () => {
    const s = PolicyStore.load(examplePolicyPath(), { cacheSize: 3 });
    for (let i = 0; i < 10; i++) s.check(`SELECT ${i}`, ['orders:read']);
    // Never more than the bound; the newest decisions are still there.
    assert.ok(s.cacheStats.size <= 3 && s.cacheStats.size >= 1, `size ${s.cacheStats.size}`);
    const before = s.cacheStats.hits;
    s.check('SELECT 9', ['orders:read']);
    assert.equal(s.cacheStats.hits, before + 1);
  });

  test('reload changes the version; an invalid file keeps the old policy', () => {
    const dir = mkdtempSync(join(tmpdir(), 'scopegate-policy-'));
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, EXAMPLE());
    const s = PolicyStore.load(file);
    const v1 = s.version;
    assert.equal(s.check('DELETE FROM order_items', ['orders:write']).allowed, true);
    writeFileSync(file, EXAMPLE().replace('- { actions: [delete], tables: [order_items] }', '- { actions: [delete], tables: [orders] }'));
    s.reload();
    assert.notEqual(s.version, v1);
    const d = s.check('DELETE FROM order_items', ['orders:write']);
    assert.equal(d.allowed, false);
    assert.equal(d.policyVersion, s.version);
    const v2 = s.version;
    writeFileSync(file, 'scopes: {broken: {allow: []}}');
    assert.throws(() => s.reload(), ConfigError);
    assert.equal(s.version, v2);
    assert.equal(s.check('DELETE FROM orders', ['orders:write']).allowed, true);
    writeFileSync(file, EXAMPLE());
    s.reload();
    assert.equal(s.version, v1, 'same content, same version');
  });
});

describe('classifySql', () => {
  test('kinds and transaction control', () => {
    const r = classifySql('BEGIN; SELECT 1; COMMIT; SET TRANSACTION READ ONLY');
    assert.deepEqual(r.map((s) => [s.kind, s.isTransactionControl, s.transaction]), [
      ['transaction', true, 'begin'], ['select', false, null], ['transaction', true, 'commit'], ['transaction', true, null],
    ]);
    assert.equal(classifySql('not sql')[0]!.kind, 'unparseable');
    assert.deepEqual(classifySql('INSERT INTO t VALUES (1); UPDATE t SET a = 1; DELETE FROM t; COPY t FROM STDIN').map((s) => s.kind), ['insert', 'update', 'delete', 'copy']);
  });

  test('session effects', () => {
    const fx = (sql: string): unknown => classifySql(sql).map((s) => s.sessionEffects);
    assert.deepEqual(fx("SET TIME ZONE 'UTC'"), [[{ type: 'set', name: 'timezone', text: "SET TIME ZONE 'UTC'" }]]);
    assert.deepEqual(fx("SELECT 1; SET NAMES 'UTF8'"), [[], [{ type: 'set', name: 'client_encoding', text: "SET NAMES 'UTF8'" }]]);
    assert.deepEqual(fx('SET LOCAL statement_timeout = 0'), [[]]);
    assert.deepEqual(fx('RESET statement_timeout'), [[{ type: 'reset', name: 'statement_timeout' }]]);
    assert.deepEqual(fx('SET work_mem TO DEFAULT'), [[{ type: 'reset', name: 'work_mem' }]]);
    assert.deepEqual(fx('RESET ALL'), [[{ type: 'reset_all' }]]);
    assert.deepEqual(fx('DISCARD ALL'), [[{ type: 'discard', target: 'all' }]]);
    assert.deepEqual(fx('LISTEN jobs'), [[{ type: 'listen', channel: 'jobs' }]]);
    assert.deepEqual(fx('UNLISTEN *'), [[{ type: 'unlisten', channel: null }]]);
    // DDL always resets the connection (objects in pg_temp by any spelling) and may advance sequences.
    const ddl = (what: string): unknown[] => [{ type: 'unclassified', what }, { type: 'sequences' }];
    assert.deepEqual(fx('CREATE TEMP TABLE t (a int)'), [[{ type: 'temp_object', object: 'table', name: 't' }, ...ddl('CreateStmt')]]);
    assert.deepEqual(fx('CREATE TEMPORARY VIEW v AS SELECT 1'), [[{ type: 'temp_object', object: 'view', name: 'v' }, ...ddl('ViewStmt')]]);
    assert.deepEqual(fx('CREATE TEMP SEQUENCE s'), [[{ type: 'temp_object', object: 'sequence', name: 's' }, ...ddl('CreateSeqStmt')]]);
    assert.deepEqual(fx('CREATE TABLE t (a int)'), [ddl('CreateStmt')]);
    assert.deepEqual(fx('CREATE TABLE pg_temp.orders (a int)'), [ddl('CreateStmt')]);
    assert.deepEqual(fx('DO $$ BEGIN END $$'), [[{ type: 'unclassified', what: 'DoStmt' }, { type: 'sequences' }]]);
    // Functions by their decoded names, whatever the spelling.
    assert.deepEqual(fx('SELECT U&"pg_adv\\0069sory_lock"(1)'), [[{ type: 'advisory_lock', function: 'pg_advisory_lock' }]]);
    assert.deepEqual(fx('SELECT pg_catalog."setseed"(0.5)'), [[{ type: 'seed' }]]);
    assert.deepEqual(fx('SET seed = 0.5'), [[{ type: 'seed' }]]);
    assert.deepEqual(fx('SET LOCAL seed TO 0.5'), [[{ type: 'seed' }]]);
    assert.deepEqual(fx("SELECT nextval('s')"), [[{ type: 'sequences' }]]);
    assert.deepEqual(fx('SELECT public.place_order(1, 2)'), [[{ type: 'sequences' }]]);
    assert.deepEqual(fx('INSERT INTO t DEFAULT VALUES'), [[{ type: 'sequences' }]]);
    assert.deepEqual(fx('SELECT lower(name), lastval() FROM t'), [[]]);
    assert.deepEqual(fx('SELECT pg_advisory_lock(1)'), [[{ type: 'advisory_lock', function: 'pg_advisory_lock' }]]);
    assert.deepEqual(fx('SELECT pg_try_advisory_lock_shared(1)'), [[{ type: 'advisory_lock', function: 'pg_try_advisory_lock_shared' }]]);
    assert.deepEqual(fx('SELECT pg_advisory_xact_lock(1)'), [[]]);
    assert.deepEqual(fx('PREPARE p AS SELECT 1'), [[{ type: 'prepare', name: 'p' }]]);
    assert.deepEqual(fx('DEALLOCATE p'), [[{ type: 'deallocate', name: 'p' }]]);
    assert.deepEqual(fx('DEALLOCATE ALL'), [[{ type: 'deallocate', name: null }]]);
    assert.deepEqual(fx('DECLARE c CURSOR WITH HOLD FOR SELECT 1'), [[{ type: 'hold_cursor', name: 'c' }]]);
    assert.deepEqual(fx('DECLARE c CURSOR FOR SELECT 1'), [[]]);
    assert.deepEqual(fx("LOAD 'x'"), [[{ type: 'load' }]]);
    assert.deepEqual(fx("SELECT set_config('a.b', 'x', false)"), [[{ type: 'sequences' }, { type: 'set_config', local: false }]]);
    assert.deepEqual(fx("SELECT set_config('a.b', 'x', true)"), [[{ type: 'sequences' }]]);
    // Tracked as the default_transaction_* settings it sets, so it follows the client.
    assert.deepEqual(fx('SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY'), [[{ type: 'set', name: 'default_transaction_read_only', text: 'SET default_transaction_read_only TO on' }]]);
    assert.deepEqual(fx('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, NOT DEFERRABLE'), [[
      { type: 'set', name: 'default_transaction_isolation', text: "SET default_transaction_isolation TO 'repeatable read'" },
      { type: 'set', name: 'default_transaction_deferrable', text: 'SET default_transaction_deferrable TO off' },
    ]]);
  });

  test('statement text is sliced by byte offsets (non-ASCII safe)', () => {
    const r = classifySql("SELECT 'héllo ✓'; SET application_name = 'ñ'");
    assert.deepEqual(r.map((s) => s.text), ["SELECT 'héllo ✓'", "SET application_name = 'ñ'"]);
  });
});

describe('runCheck', () => {
  const run = async (args: string[]): Promise<{ code: number; out: string; err: string }> => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCheck(args, { out: (l) => out.push(l), err: (l) => err.push(l) });
    return { code, out: out.join('\n'), err: err.join('\n') };
  };
  const P = examplePolicyPath();

  test('allow prints the role and exits 0', async () => {
    const r = await run(['--policy', P, '--scopes', 'orders:read', 'SELECT * FROM orders']);
    assert.equal(r.code, 0);
    assert.match(r.out, /decision: allow/);
    assert.match(r.out, /role: app_reader/);
  });
  test('deny prints reason and hint and exits 1', async () => {
    const r = await run(['--policy', P, '--scopes', 'orders:read', 'DELETE FROM orders']);
    assert.equal(r.code, 1);
    assert.match(r.out, /decision: deny/);
    assert.match(r.out, /permission denied: delete on public\.orders/);
    assert.match(r.out, /hint: scope "admin" grants it/);
  });
  test('scopes space separated or repeated', async () => {
    assert.equal((await run(['--policy', P, '--scopes', 'orders:read orders:write', 'INSERT INTO orders (total) VALUES (1)'])).code, 0);
    assert.equal((await run(['--policy', P, '--scopes', 'orders:read', '--scopes=orders:write', 'INSERT INTO orders (total) VALUES (1)'])).code, 0);
    assert.equal((await run(['--policy=' + P, '--json', 'SELECT 1'])).code, 0);
  });
  test('usage errors exit 2', async () => {
    assert.equal((await run(['SELECT 1'])).code, 2);
    assert.equal((await run(['--policy', P])).code, 2);
    assert.equal((await run(['--policy', P, '--bogus', 'SELECT 1'])).code, 2);
    assert.equal((await run(['--policy', '/nonexistent/policy.yaml', 'SELECT 1'])).code, 2);
  });
});

describe('SessionStateTracker', () => {
  test('texts differing only in numbers share "no effects", and nothing else', () => {
    const t = new SessionStateTracker();
    const before = parseCount();
    assert.equal(t.effects('SELECT abalance FROM pgbench_accounts WHERE aid = 1').tracked, false);
    for (let i = 2; i < 50; i++) assert.equal(t.effects(`SELECT abalance FROM pgbench_accounts WHERE aid = ${i}`).tracked, false);
    assert.ok(parseCount() - before <= 1, 'parsed once for the shape');
    // Writes are tracked (they may advance sequences) and still parse once per shape.
    const w0 = parseCount();
    for (let i = 1; i < 50; i++) assert.equal(t.effects(`UPDATE pgbench_accounts SET abalance = abalance + -${i} WHERE aid = ${i * 7}`).sequences, true);
    assert.ok(parseCount() - w0 <= 1, 'the write parsed once for the shape');
    // A pinned setting with an allowed value must not make its shape "no effects".
    assert.equal(t.effects('SET standard_conforming_strings = 1').pinned, null);
    assert.equal(t.effects('SET standard_conforming_strings = 0').pinned?.code, '0A000');
    // Nor may a text that does not parse (`1__0`) vouch for one that does.
    t.effects('SET statement_timeout = 1__0');
    assert.deepEqual(t.effects('SET statement_timeout = 100').settings, [['statement_timeout', 'SET statement_timeout = 100']]);
    t.effects('SELECT pg_advisory_lock(1__0)');
    assert.equal(t.effects('SELECT pg_advisory_lock(7)').needsReset, true);
  });
});
