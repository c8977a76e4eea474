// Concern: a row filter is a barrier: the client's own conditions never run on a row before the filter has passed it (error oracles through leaky functions).
/**
 * config/policy-tenants.yaml: orders filtered by tenant. Postgres orders the conditions of a
 * WHERE by cost, so `has_schema_privilege(tenant_id, 'usage')` next to the filter could run
 * on other tenants' rows and raise `schema "<their tenant>" does not exist`. Each attack is
 * run first directly as app_reader with the filter written in by hand, to show the oracle is
 * real; through scopegate, no error or row carries another tenant's value, on the inline
 * filter, the wrapped (joined) form, UPDATE, DELETE and ON CONFLICT.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startRows, type RowsFixture } from '../rows.fixture.test.js';

const OTHERS = /globex|initech|brien/;

describe('row filters hold against error oracles', { timeout: 120_000 }, () => {
  let fx: RowsFixture;
  let foreignIds: number[] = [];
  before(async () => {
    fx = await startRows({ poolSize: 1 });
    foreignIds = (await fx.su("SELECT id FROM orders WHERE tenant_id <> 'acme' ORDER BY id")).rows.map((r) => r.id as number);
  });
  after(async () => { await fx?.stop(); });

  /** What the client receives for `sql`: its rows or its error, as one string. */
  const outcome = async (c: pg.Client, sql: string, values?: unknown[]): Promise<string> => {
    try {
      const r = await c.query(sql, values);
      return JSON.stringify(r.rows);
    } catch (e) {
      const err = e as pg.DatabaseError;
      return JSON.stringify({ message: err.message, detail: err.detail, hint: err.hint, where: err.where });
    }
  };

  test('the oracle is real: with the filter merely ANDed, Postgres runs the leaky condition on other tenants\' rows', async () => {
    const c = new pg.Client({ connectionString: fx.pg.url('app') });
    await c.connect();
    try {
      await c.query('SET ROLE app_reader');
      const id = foreignIds[0]!;
      const leaked = await outcome(c, `SELECT id FROM public.orders WHERE (id >= ${id} AND id <= ${id} AND has_schema_privilege(tenant_id, 'usage')) AND orders.tenant_id = 'acme'`);
      assert.match(leaked, OTHERS, 'Postgres evaluated the condition on a row outside the filter');
    } finally {
      await c.end();
    }
  });

  test('reads, inline and wrapped, simple and extended: no other tenant\'s value reaches the reader', async () => {
    const c = await fx.client('orders:read', 'alice', { tenant: 'acme', countries: '["UK"]' });
    for (const id of foreignIds) {
      const attacks: Array<[string, unknown[]?]> = [
        [`SELECT id FROM orders WHERE id >= ${id} AND id <= ${id} AND has_schema_privilege(tenant_id, 'usage')`],
        [`SELECT id FROM orders WHERE id BETWEEN ${id} AND ${id} AND (tenant_id)::int > 0`],
        [`SELECT id FROM orders o WHERE o.id >= $1 AND o.id <= $1 AND has_schema_privilege(o.tenant_id || '', 'usage')`, [id]],
        [`SELECT id FROM orders WHERE id >= ${id} AND id <= ${id} AND 1 / (CASE WHEN tenant_id = 'globex' THEN 0 ELSE 1 END) = 1`],
        [`SELECT o.id FROM orders o JOIN order_items i ON i.order_id = o.id WHERE o.id >= ${id} AND o.id <= ${id} AND has_schema_privilege(o.tenant_id, 'usage')`],
        [`SELECT id FROM orders WHERE id >= ${id} AND id <= ${id} AND EXISTS (SELECT 1 WHERE has_schema_privilege(orders.tenant_id, 'usage'))`],
      ];
      for (const [sql, values] of attacks) {
        const got = await outcome(c, sql, values);
        assert.doesNotMatch(got, OTHERS, `${sql} -> ${got}`);
      }
    }
    // Control: the same conditions on the reader's own rows still work.
    const own = await c.query("SELECT count(*)::int AS n FROM orders WHERE id >= 1 AND status IN ('new', 'paid') AND length(status) > 0");
    assert.equal(own.rows[0].n, 4);
    await c.end();
  });

  test('writes: UPDATE, DELETE and ON CONFLICT conditions see only rows inside the filter, and change nothing outside it', async () => {
    const before = JSON.stringify((await fx.su("SELECT id, tenant_id, total::text, status FROM orders WHERE tenant_id <> 'acme' ORDER BY id")).rows);
    const w = await fx.client('orders:write', 'carol', { tenant: 'acme' });
    const m = await fx.client('orders:manage', 'mallory', { tenant: 'acme' });
    for (const id of foreignIds) {
      for (const [c, sql] of [
        [w, `UPDATE orders SET status = status WHERE id >= ${id} AND id <= ${id} AND has_schema_privilege(tenant_id, 'usage')`],
        [m, `DELETE FROM orders WHERE id >= ${id} AND id <= ${id} AND has_schema_privilege(tenant_id, 'usage')`],
        [w, `INSERT INTO orders (id, tenant_id, total) VALUES (${id}, 'acme', 1) ON CONFLICT (id) DO UPDATE SET status = 'x' WHERE has_schema_privilege(orders.tenant_id, 'usage')`],
      ] as const) {
        const got = await outcome(c, sql);
        assert.doesNotMatch(got, OTHERS, `${sql} -> ${got}`);
      }
    }
    assert.equal(JSON.stringify((await fx.su("SELECT id, tenant_id, total::text, status FROM orders WHERE tenant_id <> 'acme' ORDER BY id")).rows), before);
    await w.end();
    await m.end();
  });

  test('MERGE: whether another tenant\'s row matches the join condition cannot be observed', async () => {
    const w = await fx.client('orders:write', 'carol', { tenant: 'acme' });
    const own = (await fx.su("SELECT min(id) AS id FROM orders WHERE tenant_id = 'acme'")).rows[0].id as number;
    const merged = async (id: number): Promise<number | null> => {
      await w.query('BEGIN');
      try {
        const r = await w.query(`MERGE INTO orders t USING (SELECT ${id} AS id) s ON t.id = s.id AND t.total >= 0 WHEN NOT MATCHED THEN INSERT (tenant_id, total) VALUES ('acme', 1)`);
        return r.rowCount;
      } finally {
        await w.query('ROLLBACK');
      }
    };
    const absent = await merged(999_999);
    assert.equal(absent, 1, 'no row matches: the insert happens');
    for (const id of foreignIds) assert.equal(await merged(id), absent, `another tenant's row ${id} looks absent`);
    assert.equal(await merged(own), 0, 'the own row matches (control)');
    await w.end();
  });

  test('a scope that only masks a column does not lift another scope\'s row filter', async () => {
    // orders:write masks customers.email; orders:read filters customers by country.
    const c = await fx.client('orders:read orders:write', 'dave', { tenant: 'acme', countries: '["UK"]' });
    const r = await c.query('SELECT id, name, country FROM customers ORDER BY id');
    assert.deepEqual(r.rows.map((x) => x.country), ['UK']);
    const ext = await c.query({ text: 'SELECT name FROM customers WHERE id > $1 ORDER BY id', values: [0] });
    assert.deepEqual(ext.rows.map((x) => x.name), ['Ada']);
    await c.end();
  });

  test('a function call in attribute notation (`orders.row_to_json`) waits for the filter like any call', async () => {
    const c = await fx.client('orders:read', 'alice', { tenant: 'acme', countries: '["UK"]' });
    await c.query("SELECT id FROM orders WHERE orders.row_to_json IS NOT NULL AND id > 0");
    const line = await fx.sg.waitForLog((l) => typeof l.rewritten === 'string' && l.rewritten.includes('row_to_json'));
    assert.match(String(line.rewritten), /CASE WHEN .*THEN .*row_to_json/);
    await c.end();
  });

  test('a rewrite the deparser would print differently (`x AS name` inside UPDATE) is refused, never sent altered', async () => {
    const w = await fx.client('orders:write', 'carol', { tenant: 'acme' });
    const own = (await fx.su("SELECT min(id) AS id FROM orders WHERE tenant_id = 'acme'")).rows[0].id as number;
    const before = (await fx.su('SELECT status FROM orders WHERE id = $1', [own])).rows[0].status as string;
    let code = 'ok';
    try {
      await w.query(`UPDATE orders SET status = (SELECT x.t FROM (SELECT 'shipped' AS t) AS x) WHERE id = ${own}`);
    } catch (e) {
      code = (e as pg.DatabaseError).code ?? '';
      assert.match((e as Error).message, /cannot send this statement with its row rules applied exactly/);
    }
    const after = (await fx.su('SELECT status FROM orders WHERE id = $1', [own])).rows[0].status as string;
    // Either refused (nothing changed) or run as written (status 'shipped'): never a statement
    // Postgres reads otherwise (42703: column "t" does not exist).
    if (code === 'ok') assert.equal(after, 'shipped');
    else { assert.equal(code, '42501'); assert.equal(after, before); }
    await w.end();
  });

  test('plans: comparisons of columns with constants stay usable by indexes; only the rest waits for the filter', async () => {
    const c = await fx.client('orders:read', 'alice', { tenant: 'acme', countries: '["UK"]' });
    const sql = "SELECT id FROM orders WHERE id = 1 AND has_schema_privilege(tenant_id, 'usage')";
    await c.query(sql).catch(() => undefined);
    // EXPLAIN through scopegate is refused on filtered tables (its estimates describe other
    // tenants' rows): the superuser explains the text scopegate sent instead.
    const e = await c.query(`EXPLAIN ${sql}`).then(() => null, (err: pg.DatabaseError) => err);
    assert.equal(e?.code, '42501');
    const line = await fx.sg.waitForLog((l) => typeof l.rewritten === 'string' && l.rewritten.includes('has_schema_privilege') && l.rewritten.includes('id = 1'));
    const plan = (await fx.su(`EXPLAIN ${String(line.rewritten)}`)).rows.map((r) => r['QUERY PLAN']).join('\n');
    assert.match(plan, /Index Cond: \(id = 1\)/);
    assert.match(plan, /CASE WHEN \(tenant_id = 'acme'::text\) THEN has_schema_privilege/);
    await c.end();
  });
});
