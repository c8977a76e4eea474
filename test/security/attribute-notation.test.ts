// Concern: attribute notation is a function call: `o.fn`, `(o).fn`, `orders.fn` call fn(orders) when fn is no column, and need an execute grant.
/**
 * Real PostgreSQL behind the real scopegate CLI (example policy plus a `leak:granted` scope
 * that grants execute on public.leak). The superuser creates `public.leak(orders)`, a
 * SECURITY DEFINER function returning a secret, executable by app_reader in the database: the
 * test shows as the superuser that `SELECT o.leak FROM orders o` under app_reader returns the
 * secret; through scopegate an `orders:read` token gets 42501 and never the secret, in simple
 * and extended protocol, while real columns, system columns and catalog introspection work and
 * a scope that grants the function may call it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { EXAMPLE_POLICY, errorOf, pollUntil, startFixture, type Fixture } from '../scope.fixture.test.js';

const SECRET = 'the-launch-code';

const GRANTED_SCOPE = `
  "leak:granted":
    role: app_reader
    allow:
      - { actions: [select], tables: [orders] }
      - { actions: [execute], functions: [public.leak] }
`;

function received(e: pg.DatabaseError): string {
  return JSON.stringify({ message: e.message, hint: e.hint, detail: e.detail, where: e.where });
}

describe('attribute notation is a function call', { timeout: 120_000 }, () => {
  let fx: Fixture;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sg-attr-'));
    const policy = join(dir, 'policy.yaml');
    writeFileSync(policy, readFileSync(EXAMPLE_POLICY, 'utf8') + GRANTED_SCOPE);
    fx = await startFixture({ policy });
    await fx.su(`CREATE FUNCTION public.leak(o orders) RETURNS text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
                   AS $$ SELECT value FROM secrets WHERE id = 1 $$;
                 GRANT EXECUTE ON FUNCTION public.leak(orders) TO app_reader, app_writer`);
    // DDL through scopegate makes it re-read the catalog, which now knows the function leak.
    const admin = await fx.client('admin', { sub: 'root' });
    await admin.query('CREATE TABLE public.catalog_probe (id int)');
    const r = await fx.client('orders:read', { sub: 'probe' });
    await pollUntil(async () => {
      try {
        await r.query('SELECT s.leak FROM (SELECT 1 AS leak) s');
        return false;
      } catch (err) {
        return (err as { code?: string }).code === '42501';
      }
    }, 'the catalog to know function leak');
  });
  after(async () => {
    await fx?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test('the leak is real: PostgreSQL runs leak(o) for app_reader and returns the secret', async () => {
    const r = await fx.su('BEGIN; SET LOCAL ROLE app_reader; SELECT o.leak AS v FROM orders o LIMIT 1; COMMIT') as unknown as pg.QueryResult[];
    assert.deepEqual(r.find((x) => x.command === 'SELECT')!.rows, [{ v: SECRET }]);
  });

  test('every spelling of the call is denied with 42501 and never shows the secret (simple and extended)', async () => {
    const c = await fx.client('orders:read');
    const queries = [
      'SELECT o.leak FROM orders o',
      'SELECT (o).leak FROM orders o',
      'SELECT orders.leak FROM orders',
      'SELECT public.orders.leak FROM public.orders',
      'SELECT leak(o) FROM orders o',
      'SELECT public.leak(o) FROM orders o',
      'SELECT o.id FROM orders o WHERE o.leak IS NOT NULL',
      'SELECT o.id FROM orders o ORDER BY o.leak',
      'SELECT (SELECT o.leak) FROM orders o',
      'WITH x AS (SELECT o.leak AS v FROM orders o) SELECT v FROM x',
      'SELECT j.leak FROM (orders o JOIN order_items i ON i.order_id = o.id) AS j',
      'SELECT s.leak FROM (SELECT * FROM orders) s',
      'SELECT i.id FROM order_items i WHERE EXISTS (SELECT 1 FROM orders o WHERE o.id = i.order_id AND o.leak LIKE \'the%\')',
      'SELECT o.id FROM orders o WHERE (o).leak = \'x\'',
    ];
    for (const q of queries) {
      for (const extended of [false, true]) {
        const e = await errorOf(() => (extended ? c.query({ text: q, values: [] }) : c.query(q)));
        assert.equal(e.code, '42501', `${q}: ${e.message}`);
        // Named as written: qualified only where the query qualified the call.
        assert.equal(e.message, `permission denied: execute on function ${q.includes('public.leak(') ? 'public.' : ''}leak`, q);
        assert.ok(!received(e).includes(SECRET), q);
      }
    }
  });

  test('a write cannot store the call\'s result: UPDATE ... SET status = orders.leak is denied and changes nothing', async () => {
    const w = await fx.client('orders:write');
    const before = (await fx.su('SELECT id, status FROM orders ORDER BY id')).rows;
    for (const q of [
      'UPDATE orders SET status = orders.leak WHERE id = 1',
      'UPDATE orders o SET status = (o).leak WHERE o.id = 1',
      'UPDATE orders SET status = \'x\' WHERE id = 1 RETURNING orders.leak',
      'INSERT INTO orders (customer_id, total) VALUES (1, 1) RETURNING orders.leak',
    ]) {
      const e = await errorOf(() => w.query(q));
      assert.equal(e.code, '42501', `${q}: ${e.message}`);
      assert.ok(!received(e).includes(SECRET), q);
    }
    assert.deepEqual((await fx.su('SELECT id, status FROM orders ORDER BY id')).rows, before);
    assert.equal((await fx.su(`SELECT count(*)::int AS n FROM orders WHERE status = '${SECRET}'`)).rows[0].n, 0);
  });

  test('control: real columns, system columns, field selection on composites and catalog introspection still work', async () => {
    const c = await fx.client('orders:read');
    const r = await c.query('SELECT o.id, o.status, orders_alias.total::int AS total, (o).customer_id, o.ctid::text IS NOT NULL AS has_ctid FROM orders o JOIN orders orders_alias ON orders_alias.id = o.id WHERE o.id = 1');
    assert.deepEqual(r.rows, [{ id: 1, status: 'new', total: 10, customer_id: 2, has_ctid: true }]);
    assert.deepEqual((await c.query({ text: 'SELECT orders.id FROM orders WHERE orders.id = $1', values: [2] })).rows, [{ id: 2 }]);
    assert.deepEqual((await c.query('SELECT c.name FROM customers c WHERE c.id = 1')).rows, [{ name: 'Ada' }]);
    // (row).field on a function result and a subquery's own columns.
    assert.deepEqual((await c.query('SELECT (x).n FROM (SELECT information_schema._pg_expandarray(ARRAY[5, 6]) AS x) s ORDER BY 1')).rows, [{ n: 1 }, { n: 2 }]);
    assert.deepEqual((await c.query('SELECT s.id FROM (SELECT id FROM orders WHERE id = 3) s')).rows, [{ id: 3 }]);
    const cat = await c.query("SELECT c.relname, n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'orders'");
    assert.deepEqual(cat.rows, [{ relname: 'orders', nspname: 'public' }]);
  });

  test('control: a scope that grants public.leak may call it by attribute notation', async () => {
    const g = await fx.client('leak:granted', { sub: 'grace' });
    assert.deepEqual((await g.query('SELECT o.leak AS v FROM orders o WHERE o.id = 1')).rows, [{ v: SECRET }]);
    assert.deepEqual((await g.query({ text: 'SELECT (o).leak AS v FROM orders o WHERE o.id = $1', values: [1] })).rows, [{ v: SECRET }]);
  });
});
