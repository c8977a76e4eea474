/**
 * Row filters through the real proxy (config/policy-tenants.yaml, real tokens with tenant
 * claims), on a pool of ONE server connection: two tenants read only their rows across joins,
 * subqueries, CTEs and set operations, interleaved; writes stay inside the tenant (literals,
 * Bind-time parameter checks for node-postgres and postgres.js), checked directly as the
 * superuser; claim values are data, never SQL; a missing claim denies.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { errorOf, startRows, tenantOracle, type RowsFixture } from './rows.fixture.test.js';

const READ_QUERIES: string[] = [
  'SELECT id, tenant_id, total FROM orders ORDER BY id',
  'SELECT o.id, i.sku FROM orders o JOIN order_items i ON i.order_id = o.id ORDER BY i.id',
  'SELECT i.sku, o.tenant_id FROM order_items i LEFT JOIN orders o ON o.id = i.order_id WHERE o.id IS NOT NULL ORDER BY i.id',
  'WITH x AS (SELECT * FROM orders) SELECT id, tenant_id FROM x ORDER BY id',
  'WITH paid AS (SELECT id FROM orders WHERE status = \'paid\') SELECT count(*)::int AS n FROM order_items WHERE order_id IN (SELECT id FROM paid)',
  'SELECT id, tenant_id FROM orders WHERE total > 20 UNION SELECT id, tenant_id FROM orders WHERE status = \'new\' ORDER BY 1',
  'SELECT id FROM orders INTERSECT SELECT order_id FROM order_items ORDER BY 1',
  'SELECT id, sku FROM order_items WHERE order_id IN (SELECT id FROM orders) ORDER BY id',
  'SELECT i.id FROM order_items i WHERE EXISTS (SELECT 1 FROM orders o WHERE o.id = i.order_id AND o.total >= 10) ORDER BY i.id',
  'SELECT (SELECT count(*)::int FROM orders) AS n, (SELECT sum(total)::text FROM orders) AS s',
  'SELECT tenant_id, count(*)::int AS n FROM orders GROUP BY tenant_id ORDER BY 1',
  'SELECT o.id, x.c FROM orders o, LATERAL (SELECT count(*)::int AS c FROM order_items i WHERE i.order_id = o.id) x ORDER BY o.id',
  'SELECT row_to_json(o)->>\'tenant_id\' AS t FROM orders o ORDER BY o.id',
];

describe('row filters: two tenants on one server connection', { timeout: 120_000 }, () => {
  let fx: RowsFixture;
  const READ = 'orders:read';
  const acmeClaims = { tenant: 'acme', countries: '["UK","US"]' };
  const globexClaims = { tenant: 'globex', countries: '["FI"]' };

  before(async () => { fx = await startRows({ poolSize: 1 }); });
  after(async () => { await fx?.stop(); });

  test('reads across joins, subqueries, CTEs and set operations see only the own tenant, interleaved (pg simple/extended, postgres.js)', async () => {
    const a = await fx.client(READ, 'alice', acmeClaims);
    const g = await fx.client(READ, 'gary', globexClaims);
    const aj = await fx.pgjs(READ, 'alice', acmeClaims);
    const gj = await fx.pgjs(READ, 'gary', globexClaims);
    const oracles = { acme: await tenantOracle(fx.pg, 'acme'), globex: await tenantOracle(fx.pg, 'globex') };
    try {
      const expected = new Map<string, { acme: unknown[]; globex: unknown[] }>();
      for (const q of READ_QUERIES) {
        const e = { acme: await oracles.acme.rows(q), globex: await oracles.globex.rows(q) };
        assert.notDeepEqual(e.acme, e.globex, `oracle distinguishes tenants for ${q}`);
        expected.set(q, e);
      }
      const pids = new Set<number>();
      for (let round = 0; round < 6; round++) {
        for (const q of READ_QUERIES) {
          const e = expected.get(q)!;
          // Alternate who goes first and which protocol, all on the one backend.
          const order: Array<['acme' | 'globex', pg.Client]> = round % 2 === 0 ? [['acme', a], ['globex', g]] : [['globex', g], ['acme', a]];
          for (const [tenant, c] of order) {
            const r = round % 3 === 0 ? await c.query(q) : await c.query({ text: q, values: [] });
            assert.deepEqual(r.rows, e[tenant], `round ${round} ${tenant}: ${q}`);
          }
          const [rj, rg] = round % 2 === 0
            ? [await aj.unsafe(q, [], { prepare: round % 3 !== 1 }), await gj.unsafe(q, [], { prepare: round % 3 !== 1 })]
            : await Promise.all([aj.unsafe(q), gj.unsafe(q)]);
          assert.deepEqual([...rj], e.acme, `postgres.js round ${round} acme: ${q}`);
          assert.deepEqual([...rg], e.globex, `postgres.js round ${round} globex: ${q}`);
        }
        pids.add((await a.query('SELECT pg_backend_pid() AS p')).rows[0].p);
        pids.add((await g.query('SELECT pg_backend_pid() AS p')).rows[0].p);
      }
      assert.equal(pids.size, 1, 'both tenants used the one server connection');
      // Concurrent, so the one backend is handed back and forth under load.
      const q = 'SELECT id, tenant_id FROM orders ORDER BY id';
      const e = expected.get('SELECT id, tenant_id, total FROM orders ORDER BY id')!;
      const runs = await Promise.all(Array.from({ length: 40 }, (_, i) => {
        const tenant = i % 2 === 0 ? 'acme' : 'globex';
        const c = i % 2 === 0 ? a : g;
        return (i % 4 < 2 ? c.query(q) : c.query({ text: q, values: [] })).then((r) => [tenant, r.rows] as const);
      }));
      for (const [tenant, rows] of runs) {
        assert.deepEqual(rows, (e[tenant] as Array<{ id: number; tenant_id: string }>).map((r) => ({ id: r.id, tenant_id: r.tenant_id })), `concurrent ${tenant}`);
      }
      // A filter that tries to widen itself is still ANDed with the tenant's.
      const wide = await a.query("SELECT DISTINCT tenant_id FROM orders WHERE tenant_id = 'globex' OR 1 = 1");
      assert.deepEqual(wide.rows, [{ tenant_id: 'acme' }]);
    } finally {
      await oracles.acme.end();
      await oracles.globex.end();
    }
  });

  test('UPDATE and DELETE touch only the own rows (checked directly)', async () => {
    const before = (await fx.su('SELECT id, tenant_id, status FROM orders ORDER BY id')).rows as Array<{ id: number; tenant_id: string; status: string }>;
    const acmeIds = before.filter((r) => r.tenant_id === 'acme').map((r) => r.id);
    const globexIds = before.filter((r) => r.tenant_id === 'globex').map((r) => r.id);
    const aw = await fx.client('orders:write', 'alice', acmeClaims);
    const gw = await fx.client('orders:write', 'gary', globexClaims);

    const up = await aw.query("UPDATE orders SET status = 'touched-by-acme' RETURNING id, tenant_id");
    assert.deepEqual(up.rows.map((r) => r.id).sort((x, y) => x - y), acmeIds);
    assert.ok(up.rows.every((r) => r.tenant_id === 'acme'));
    // globex aims at an acme row by id: nothing matches.
    const miss = await gw.query("UPDATE orders SET status = 'touched-by-globex' WHERE id = $1", [acmeIds[0]]);
    assert.equal(miss.rowCount, 0);
    const missSimple = await gw.query(`UPDATE orders o SET status = 'touched-by-globex' WHERE o.id IN (${acmeIds.join(', ')})`);
    assert.equal(missSimple.rowCount, 0);
    const own = await gw.query("UPDATE orders SET status = 'touched-by-globex' WHERE id = ANY ($1::int[])", [[...acmeIds, globexIds[0]]]);
    assert.equal(own.rowCount, 1);

    let after = (await fx.su('SELECT id, tenant_id, status FROM orders ORDER BY id')).rows as typeof before;
    for (const r of after) {
      if (r.tenant_id === 'acme') assert.equal(r.status, 'touched-by-acme', `acme row ${r.id}`);
      else if (r.id === globexIds[0]) assert.equal(r.status, 'touched-by-globex');
      else assert.equal(r.status, before.find((b) => b.id === r.id)!.status, `row ${r.id} of ${r.tenant_id} untouched`);
    }

    // DELETE (orders:manage): initech deletes "everything", and an acme + a globex id.
    const im = await fx.client('orders:manage', 'ian', { tenant: 'initech' });
    const am = await fx.client('orders:manage', 'alice', { tenant: 'acme' });
    const del = await im.query('DELETE FROM orders RETURNING tenant_id');
    assert.ok(del.rows.length === 2 && del.rows.every((r) => r.tenant_id === 'initech'), JSON.stringify(del.rows));
    const del2 = await am.query('DELETE FROM orders WHERE id = ANY ($1::int[])', [[acmeIds[acmeIds.length - 1], globexIds[1]]]);
    assert.equal(del2.rowCount, 1);
    after = (await fx.su('SELECT id, tenant_id FROM orders ORDER BY id')).rows as typeof before;
    assert.deepEqual(after.filter((r) => r.tenant_id === 'initech'), []);
    assert.deepEqual(after.filter((r) => r.tenant_id === 'globex').map((r) => r.id), globexIds, 'all globex rows still there');
    assert.deepEqual(after.filter((r) => r.tenant_id === 'acme').map((r) => r.id), acmeIds.slice(0, -1));
    assert.ok(after.some((r) => r.tenant_id === "o'brien"));
  });

  test('INSERT and UPDATE into another tenant are refused with 42501 and write nothing (literals, $1 via pg, postgres.js)', async () => {
    const aw = await fx.client('orders:write', 'alice', acmeClaims);
    const aj = await fx.pgjs('orders:write', 'alice', acmeClaims);
    const ajUnprepared = await fx.pgjs('orders:write', 'alice', acmeClaims, { prepare: false });
    const ownId = (await fx.su("SELECT min(id) AS id FROM orders WHERE tenant_id = 'acme'")).rows[0].id as number;
    const countBefore = Number((await fx.su('SELECT count(*) AS n FROM orders')).rows[0].n);
    const writeLog = async () => (await fx.su("SELECT count(*)::int AS n FROM orders WHERE total BETWEEN 9000 AND 9999 OR tenant_id <> ALL (ARRAY['acme', 'globex', 'initech', 'o''brien'])")).rows[0].n as number;

    const refused: Array<[string, () => Promise<unknown>]> = [
      ['literal insert', () => aw.query("INSERT INTO orders (tenant_id, total) VALUES ('globex', 9001)")],
      ['literal insert, cast', () => aw.query("INSERT INTO orders (tenant_id, total) VALUES ('globex'::text, 9002)")],
      ['multi-row literal insert', () => aw.query("INSERT INTO orders (tenant_id, total) VALUES ('acme', 9003), ('globex', 9003)")],
      ['pg extended $1', () => aw.query('INSERT INTO orders (tenant_id, total) VALUES ($1, $2)', ['globex', 9004])],
      ['pg extended $1::text', () => aw.query('INSERT INTO orders (tenant_id, total) VALUES ($1::text, $2)', ['globex', 9005])],
      ['pg named statement $1', () => aw.query({ name: 'ins', text: 'INSERT INTO orders (tenant_id, total) VALUES ($1, $2)', values: ['globex', 9006] })],
      ['postgres.js parameter', () => aj`INSERT INTO orders (tenant_id, total) VALUES (${'globex'}, ${9007})`],
      ['postgres.js unprepared parameter', () => ajUnprepared`INSERT INTO orders (tenant_id, total) VALUES (${'globex'}, ${9008})`],
      ['postgres.js literal', () => aj.unsafe("INSERT INTO orders (tenant_id, total) VALUES ('globex', 9009)")],
      ['literal update of own row', () => aw.query(`UPDATE orders SET tenant_id = 'globex' WHERE id = ${ownId}`)],
      ['pg extended update $1', () => aw.query('UPDATE orders SET tenant_id = $1 WHERE id = $2', ['globex', ownId])],
      ['postgres.js update parameter', () => aj`UPDATE orders SET tenant_id = ${'globex'} WHERE id = ${ownId}`],
      ['expression insert', () => aw.query("INSERT INTO orders (tenant_id, total) VALUES (lower('GLOBEX'), 9010)")],
      ['omitted filter column', () => aw.query('INSERT INTO orders (total) VALUES (9011)')],
    ];
    for (const [what, fn] of refused) {
      const e = await errorOf(fn);
      assert.equal(e.code, '42501', `${what}: ${e.message}`);
      // Literals are refused at Parse ("... on public.orders"), parameters at Bind.
      assert.match(e.message, /^permission denied: write outside row filter\b/, what);
      assert.doesNotMatch(e.message, /\bacme\b/, `${what}: the message names no other tenant's value`);
      // The connection stays usable.
      assert.equal((await aw.query('SELECT 1 AS one')).rows[0].one, 1);
    }
    // The own tenant goes through, by literal, parameter and postgres.js.
    const ok1 = await aw.query("INSERT INTO orders (tenant_id, total) VALUES ('acme', 8001) RETURNING tenant_id");
    const ok2 = await aw.query('INSERT INTO orders (tenant_id, total) VALUES ($1, $2) RETURNING tenant_id', ['acme', 8002]);
    const ok3 = await aw.query({ name: 'ins', text: 'INSERT INTO orders (tenant_id, total) VALUES ($1, $2)', values: ['acme', 8003] });
    const ok4 = await aj`INSERT INTO orders (tenant_id, total) VALUES (${'acme'}, ${8004}) RETURNING tenant_id`;
    assert.deepEqual([ok1.rows, ok2.rows, ok3.rowCount, [...ok4]], [[{ tenant_id: 'acme' }], [{ tenant_id: 'acme' }], 1, [{ tenant_id: 'acme' }]]);

    assert.equal(await writeLog(), 0, 'no refused row was written');
    assert.equal(Number((await fx.su('SELECT count(*) AS n FROM orders')).rows[0].n), countBefore + 4);
    assert.equal((await fx.su('SELECT tenant_id FROM orders WHERE id = $1', [ownId])).rows[0].tenant_id, 'acme');
    assert.deepEqual((await fx.su('SELECT DISTINCT tenant_id FROM orders WHERE total BETWEEN 8000 AND 8999')).rows, [{ tenant_id: 'acme' }]);
  });

  test('claim values are data: injection attempts in the tenant claim see nothing and leak no SQL', async () => {
    const evil = ["x' OR '1'='1", "acme' --", '$$', '\\', '\\\\', "' OR tenant_id = 'acme", "acme'); DROP TABLE orders; --", 'аcme' /* Cyrillic а */, 'acme\u200b', '🦄 ünïcödé ✓', 'acme%', "$1' OR ''='"];
    const countBefore = Number((await fx.su('SELECT count(*) AS n FROM orders')).rows[0].n);
    for (const tenant of evil) {
      const c = await fx.client(READ, 'mallory', { tenant, countries: '["UK"]' });
      const claims = (await c.query("SELECT current_setting('scopegate.claims') AS c")).rows[0].c as string;
      assert.equal(JSON.parse(claims).tenant, tenant, 'the token carries the claim verbatim');
      for (const q of ['SELECT id, tenant_id FROM orders', 'SELECT o.id FROM orders o JOIN order_items i ON i.order_id = o.id', 'WITH x AS (SELECT * FROM orders) SELECT * FROM x UNION ALL SELECT * FROM orders']) {
        assert.deepEqual((await c.query(q)).rows, [], `${JSON.stringify(tenant)}: ${q}`);
        assert.deepEqual((await c.query({ text: q, values: [] })).rows, [], `${JSON.stringify(tenant)} extended: ${q}`);
      }
      const w = await fx.client('orders:write', 'mallory', { tenant });
      const e = await errorOf(() => w.query("INSERT INTO orders (tenant_id, total) VALUES ('acme', 9100)"));
      assert.equal(e.code, '42501');
      assert.doesNotMatch(e.message, /syntax|DROP|OR '1'/i);
      const u = await w.query("UPDATE orders SET status = 'pwned'");
      assert.equal(u.rowCount, 0);
      await c.end();
      await w.end();
    }
    // A tenant whose id really contains a quote gets exactly its own row.
    const ob = await fx.client(READ, 'obrien', { tenant: "o'brien" });
    assert.deepEqual((await ob.query('SELECT tenant_id, total::int FROM orders')).rows, [{ tenant_id: "o'brien", total: 100 }]);
    assert.equal(Number((await fx.su('SELECT count(*) AS n FROM orders')).rows[0].n), countBefore);
    assert.equal(Number((await fx.su("SELECT count(*) AS n FROM orders WHERE status = 'pwned'")).rows[0].n), 0);
  });

  test('a filter needing a claim the token lacks denies the statement (42501 naming the claim)', async () => {
    const noTenant = await fx.client(READ, 'nobody', { countries: '["UK"]' });
    for (const q of ['SELECT id FROM orders', 'SELECT i.sku FROM order_items i WHERE i.order_id IN (SELECT id FROM orders)']) {
      const e = await errorOf(() => noTenant.query(q));
      assert.equal(e.code, '42501', q);
      assert.match(e.message, /claim "tenant"/, q);
      const e2 = await errorOf(() => noTenant.query({ text: q, values: [] }));
      assert.equal(e2.code, '42501');
      assert.match(e2.message, /claim "tenant"/);
    }
    const noCountries = await fx.client(READ, 'nobody2', { tenant: 'acme' });
    const e3 = await errorOf(() => noCountries.query('SELECT name FROM customers'));
    assert.equal(e3.code, '42501');
    assert.match(e3.message, /claim "countries"/);
    // Orders alone only need "tenant".
    assert.ok((await noCountries.query('SELECT id FROM orders')).rows.length > 0);
    const w = await fx.client('orders:write', 'nobody3', {});
    const e4 = await errorOf(() => w.query("UPDATE orders SET status = 'x'"));
    assert.equal(e4.code, '42501');
    assert.match(e4.message, /claim "tenant"/);
    assert.equal(Number((await fx.su("SELECT count(*) AS n FROM orders WHERE status = 'x'")).rows[0].n), 0);
  });
});
