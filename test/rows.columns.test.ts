/**
 * Column rules through the real proxy: `star: expand` reads exactly the rule's columns in
 * catalog order (the catalog the proxy loads from pg_attribute), a column outside the grant is
 * refused naming table and column, masks replace the column under its own name everywhere.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { errorOf, pollUntil, startRows, type RowsFixture } from './rows.fixture.test.js';

describe('column rules: star expansion and masks', { timeout: 120_000 }, () => {
  let fx: RowsFixture;
  const reader = { tenant: 'acme', countries: '["UK","US"]' };

  before(async () => { fx = await startRows({ poolSize: 2 }); });
  after(async () => { await fx?.stop(); });

  test('SELECT * on customers returns exactly id, country, name (catalog order) and only the allowed countries', async () => {
    const c = await fx.client('orders:read', 'alice', reader);
    // The catalog loads asynchronously at startup: poll until * expands.
    const r = await pollUntil(async () => {
      try { return await c.query('SELECT * FROM customers ORDER BY id'); } catch (e) {
        if (/no column catalog/.test((e as Error).message)) return null;
        throw e;
      }
    }, 'column catalog loaded');
    assert.deepEqual(r.fields.map((f) => f.name), ['id', 'country', 'name']);
    assert.deepEqual(r.rows, [{ id: 1, country: 'UK', name: 'Ada' }, { id: 2, country: 'US', name: 'Grace' }]);

    const ext = await c.query({ text: 'SELECT * FROM customers WHERE id = $1', values: [2] });
    assert.deepEqual(ext.fields.map((f) => f.name), ['id', 'country', 'name']);
    assert.deepEqual(ext.rows, [{ id: 2, country: 'US', name: 'Grace' }]);

    const aliased = await c.query('SELECT c.* FROM customers c WHERE c.id = 1');
    assert.deepEqual(aliased.fields.map((f) => f.name), ['id', 'country', 'name']);

    const joined = await c.query({ text: 'SELECT o.id AS order_id, c.* FROM orders o JOIN customers c ON c.id = o.customer_id ORDER BY o.id', rowMode: 'array' });
    assert.deepEqual(joined.fields.map((f) => f.name), ['order_id', 'id', 'country', 'name']);
    // acme's orders whose customer is in UK/US.
    const want = (await fx.su("SELECT o.id, c.id AS cid, c.country, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.tenant_id = 'acme' AND c.country IN ('UK', 'US') ORDER BY o.id", [])).rows;
    assert.deepEqual(joined.rows, want.map((w) => [w.id, w.cid, w.country, w.name]));

    const whole = await c.query('SELECT row_to_json(c) AS j FROM customers c WHERE c.id = 1');
    assert.deepEqual(Object.keys(whole.rows[0].j), ['id', 'country', 'name']);

    const pj = await fx.pgjs('orders:read', 'alice', reader);
    const viaJs = await pj`SELECT * FROM customers WHERE id = ${1}`;
    assert.deepEqual(viaJs.columns.map((col) => col.name), ['id', 'country', 'name']);
    assert.deepEqual([...viaJs], [{ id: 1, country: 'UK', name: 'Ada' }]);
  });

  test('a column outside the grant is refused with 42501 naming table and column', async () => {
    const c = await fx.client('orders:read', 'alice', reader);
    for (const q of ['SELECT email FROM customers', 'SELECT id, email FROM customers', 'SELECT id FROM customers WHERE email LIKE \'a%\'', 'SELECT c.email FROM orders o JOIN customers c ON c.id = o.customer_id']) {
      for (const extended of [false, true]) {
        const e = await errorOf(() => (extended ? c.query({ text: q, values: [] }) : c.query(q)));
        assert.equal(e.code, '42501', `${q}: ${e.message}`);
        assert.match(e.message, /customers/, q);
        assert.match(e.message, /email/, q);
      }
    }
    // orders:write has no select on customers.name.
    const w = await fx.client('orders:write', 'alice', { tenant: 'acme' });
    const e = await errorOf(() => w.query('SELECT name FROM customers'));
    assert.equal(e.code, '42501');
    assert.match(e.message, /customers/);
    assert.match(e.message, /name/);
  });

  test('masked column reads masked (left(email, 2) || \'***\'), keeps its name, and compares masked', async () => {
    const w = await fx.client('orders:write', 'walt', { tenant: 'acme' });
    const r = await w.query('SELECT email FROM customers ORDER BY email');
    assert.deepEqual(r.fields.map((f) => f.name), ['email']);
    assert.deepEqual(r.rows, [{ email: 'ad***' }, { email: 'gr***' }, { email: 'li***' }]);
    const ext = await w.query({ text: 'SELECT email FROM customers WHERE email = $1', values: ['gr***'] });
    assert.deepEqual(ext.rows, [{ email: 'gr***' }]);
    // The raw value is not reachable, not even through WHERE.
    assert.deepEqual((await w.query("SELECT email FROM customers WHERE email = 'grace@example.test'")).rows, []);
    assert.deepEqual((await w.query("SELECT count(*)::int AS n FROM customers WHERE email LIKE '%@%'")).rows, [{ n: 0 }]);
    const aliased = await w.query('SELECT c.email, upper(c.email) AS up FROM customers c ORDER BY 1 LIMIT 1');
    assert.deepEqual(aliased.rows, [{ email: 'ad***', up: 'AD***' }]);
    const pj = await fx.pgjs('orders:write', 'walt', { tenant: 'acme' });
    const viaJs = await pj`SELECT email FROM customers WHERE email = ${'li***'}`;
    assert.deepEqual([...viaJs], [{ email: 'li***' }]);
    // The database is unchanged.
    assert.equal((await fx.su('SELECT email FROM customers WHERE id = 1')).rows[0].email, 'ada@example.test');
  });
});
