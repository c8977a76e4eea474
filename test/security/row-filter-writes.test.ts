// Concern: a write under a row filter is checked on the value the row stores, not on the text before a cast or a re-typed parameter changes it.
/**
 * Real PostgreSQL behind the real scopegate CLI (config/policy-tenants.yaml: orders filtered
 * by `tenant_id = claim('tenant')`), tenants whose names are prefixes of each other ('a',
 * 'ac', 'acme'). The database shows first (as the superuser, rolled back) that each refused
 * statement would store 'ac' or 'a' for an 'acme' token; through scopegate, in simple and
 * extended protocol and postgres.js, it is refused with 42501 and nothing lands in 'a' or
 * 'ac'. Controls: bare literals, parameters and ::text store 'acme'.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { errorOf, startRows, type RowsFixture } from '../rows.fixture.test.js';

interface Attempt {
  what: string;
  text: string;
  values?: unknown[];
  /** The row's total, to find it. */
  total: number;
  /** What the row would store if the statement ran (the database's own verdict, checked first). */
  stores: string;
}

describe('row-filter writes store what was checked', { timeout: 120_000 }, () => {
  let fx: RowsFixture;
  const acme = { tenant: 'acme' };
  let ownId = 0;

  before(async () => {
    fx = await startRows({ poolSize: 1 });
    // Tenants named by prefixes of 'acme': the targets of a truncating cast.
    await fx.su("INSERT INTO orders (tenant_id, total, status) VALUES ('ac', 501, 'new'), ('a', 502, 'new'), ('ac', 503, 'paid')");
    ownId = (await fx.su("SELECT min(id) AS id FROM orders WHERE tenant_id = 'acme'")).rows[0].id as number;
  });
  after(async () => { await fx?.stop(); });

  const snapshot = async (): Promise<string> => JSON.stringify((await fx.su('SELECT id, tenant_id, total::text, status FROM orders ORDER BY id')).rows);
  const prefixTenants = async (): Promise<unknown[]> => (await fx.su("SELECT id, tenant_id, total::text, status FROM orders WHERE tenant_id IN ('a', 'ac') ORDER BY id")).rows;

  /** Runs `a` directly as the superuser in a rolled-back transaction: the tenant_id it stores. */
  const storedDirectly = async (a: Attempt): Promise<string> => {
    const c = new pg.Client({ connectionString: fx.pg.url('app') });
    await c.connect();
    try {
      await c.query('BEGIN');
      await c.query(a.text, a.values ?? []);
      const r = await c.query('SELECT tenant_id FROM orders WHERE total = $1 ORDER BY id DESC LIMIT 1', [a.total]);
      return r.rows[0].tenant_id as string;
    } finally {
      await c.query('ROLLBACK').catch(() => undefined);
      await c.end();
    }
  };

  const attempts = (): Attempt[] => [
    { what: "insert 'acme'::char(2)", text: "INSERT INTO orders (tenant_id, total) VALUES ('acme'::char(2), 7001)", total: 7001, stores: 'ac' },
    { what: "insert 'acme'::\"char\"", text: "INSERT INTO orders (tenant_id, total) VALUES ('acme'::\"char\", 7002)", total: 7002, stores: 'a' },
    { what: "insert CAST('acme' AS character(2))", text: "INSERT INTO orders (tenant_id, total) VALUES (CAST('acme' AS character(2)), 7003)", total: 7003, stores: 'ac' },
    { what: "insert 'acme'::varchar(1)", text: "INSERT INTO orders (tenant_id, total) VALUES ('acme'::varchar(1), 7004)", total: 7004, stores: 'a' },
    { what: "insert 'acme'::text::char(2) in a second row", text: "INSERT INTO orders (tenant_id, total) VALUES ('acme', 7005), ('acme'::text::char(2), 7005)", total: 7005, stores: 'ac' },
    { what: 'insert $1::varchar(1)', text: 'INSERT INTO orders (tenant_id, total) VALUES ($1::varchar(1), $2)', values: ['acme', 7010], total: 7010, stores: 'a' },
    { what: 'insert $1::char(2)', text: 'INSERT INTO orders (tenant_id, total) VALUES ($1::char(2), $2)', values: ['acme', 7011], total: 7011, stores: 'ac' },
    { what: 'insert $1::"char"', text: 'INSERT INTO orders (tenant_id, total) VALUES ($1::"char", $2)', values: ['acme', 7012], total: 7012, stores: 'a' },
    // The first use types the parameter: tenant_id then gets the "char" value.
    { what: 'insert $1 typed "char" by another column', text: 'INSERT INTO orders (status, tenant_id, total) VALUES ($1::"char", $1, $2)', values: ['acme', 7013], total: 7013, stores: 'a' },
    { what: 'insert $1 typed "char" by a CTE', text: 'WITH t AS (SELECT $1::"char" AS x) INSERT INTO orders (tenant_id, total) VALUES ($1, $2)', values: ['acme', 7014], total: 7014, stores: 'a' },
  ];

  test('the database itself stores the prefix: the attack is real', async () => {
    for (const a of attempts()) assert.equal(await storedDirectly(a), a.stores, a.what);
    const upd = { what: 'update', text: `UPDATE orders SET tenant_id = 'acme'::char(2) WHERE id = ${ownId}`, stores: 'ac' };
    const c = new pg.Client({ connectionString: fx.pg.url('app') });
    await c.connect();
    try {
      await c.query('BEGIN');
      await c.query(upd.text);
      assert.equal((await c.query('SELECT tenant_id FROM orders WHERE id = $1', [ownId])).rows[0].tenant_id, 'ac');
      await c.query('ROLLBACK');
      await c.query('BEGIN');
      await c.query('UPDATE orders SET tenant_id = $1 WHERE id = $2 AND status <> $1::"char"', ['acme', ownId]);
      assert.equal((await c.query('SELECT tenant_id FROM orders WHERE id = $1', [ownId])).rows[0].tenant_id, 'a');
      await c.query('ROLLBACK');
    } finally {
      await c.end();
    }
  });

  test('casts and re-typed parameters on the filtered column are refused with 42501, simple and extended; nothing lands in a prefix tenant', async () => {
    const before = await snapshot();
    const prefixBefore = await prefixTenants();
    const w = await fx.client('orders:write', 'alice', acme);
    const m = await fx.client('orders:manage', 'alice', acme);
    const aj = await fx.pgjs('orders:write', 'alice', acme);
    const refused: Array<[string, () => Promise<unknown>]> = attempts().map((a) => [a.what, () => (a.values === undefined ? w.query(a.text) : w.query(a.text, a.values))]);
    refused.push(
      ['insert literal cast, extended protocol', () => w.query({ text: "INSERT INTO orders (tenant_id, total) VALUES ('acme'::char(2), 7020)", values: [] })],
      ['update SET tenant_id = literal::char(2)', () => w.query(`UPDATE orders SET tenant_id = 'acme'::char(2) WHERE id = ${ownId}`)],
      ['update SET tenant_id = $1::"char"', () => w.query('UPDATE orders SET tenant_id = $1::"char" WHERE id = $2', ['acme', ownId])],
      ['update SET tenant_id = $1, $1 typed "char" in WHERE', () => m.query('UPDATE orders SET tenant_id = $1 WHERE id = $2 AND status <> $1::"char"', ['acme', ownId])],
      ['on conflict do update SET tenant_id = literal::"char"', () => w.query(`INSERT INTO orders (id, tenant_id, total) VALUES (${ownId}, 'acme', 7021) ON CONFLICT (id) DO UPDATE SET tenant_id = 'acme'::"char"`)],
      ['postgres.js ${v}::char(2)', () => aj`INSERT INTO orders (tenant_id, total) VALUES (${'acme'}::char(2), ${7022})`],
      ['postgres.js unsafe literal ::varchar(1)', () => aj.unsafe("INSERT INTO orders (tenant_id, total) VALUES ('acme'::varchar(1), 7023)")],
      // A bare $1 declared "char" (oid 18) in Parse: the server stores 'a'.
      ['postgres.js bare parameter declared "char"', () => aj`INSERT INTO orders (tenant_id, total) VALUES (${aj.typed('acme', 18)}, ${7024})`],
      ['postgres.js bare parameter declared name', () => aj`INSERT INTO orders (tenant_id, total) VALUES (${aj.typed('acme', 19)}, ${7025})`],
    );
    for (const [what, fn] of refused) {
      const e = await errorOf(fn);
      assert.equal(e.code, '42501', `${what}: ${e.message}`);
      assert.match(e.message, /^permission denied: (write outside row filter\b|parameter \$1 \(tenant_id\) is declared with type)/, what);
      assert.ok(typeof e.hint === 'string' && e.hint.length > 0, `${what}: a hint says what to do`);
      assert.equal((await w.query('SELECT 1 AS one')).rows[0].one, 1, `${what}: the connection stays usable`);
    }
    assert.equal(await snapshot(), before, 'no row was written or changed');
    assert.deepEqual(await prefixTenants(), prefixBefore, "tenants 'a' and 'ac' are untouched");
    await aj.end();
  });

  test('control: bare literals, parameters and ::text store exactly the own tenant (read back as the superuser)', async () => {
    const w = await fx.client('orders:write', 'alice', acme);
    const aj = await fx.pgjs('orders:write', 'alice', acme);
    const prefixBefore = await prefixTenants();
    await w.query("INSERT INTO orders (tenant_id, total) VALUES ('acme', 7101)");
    await w.query("INSERT INTO orders (tenant_id, total) VALUES ('acme'::text, 7102)");
    await w.query('INSERT INTO orders (tenant_id, total) VALUES ($1, $2)', ['acme', 7103]);
    await w.query('INSERT INTO orders (tenant_id, total) VALUES ($1::text, $2)', ['acme', 7104]);
    await w.query('INSERT INTO orders (tenant_id, total) VALUES ($1, $2), ($3, $4)', ['acme', 7105, 'acme', 7106]);
    await aj`INSERT INTO orders (tenant_id, total) VALUES (${'acme'}, ${7107})`;
    await w.query('UPDATE orders SET tenant_id = $1, status = $2 WHERE id = $3', ['acme', 'paid', ownId]);
    // A bare parameter whose value is another tenant is still caught at Bind.
    const e = await errorOf(() => w.query('INSERT INTO orders (tenant_id, total) VALUES ($1, $2)', ['ac', 7108]));
    assert.equal(e.code, '42501');
    const stored = (await fx.su("SELECT total::int AS total, tenant_id FROM orders WHERE total BETWEEN 7100 AND 7199 ORDER BY total")).rows;
    assert.deepEqual(stored, [7101, 7102, 7103, 7104, 7105, 7106, 7107].map((total) => ({ total, tenant_id: 'acme' })));
    assert.deepEqual((await fx.su('SELECT tenant_id, status FROM orders WHERE id = $1', [ownId])).rows, [{ tenant_id: 'acme', status: 'paid' }]);
    assert.deepEqual(await prefixTenants(), prefixBefore, "tenants 'a' and 'ac' are untouched");
    await aj.end();
  });
});
