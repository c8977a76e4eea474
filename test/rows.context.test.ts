/**
 * Per-client context on a pool of ONE server connection: scopegate.claims / scopegate.sub are
 * each client's own (PostgreSQL RLS written against them isolates tenants by itself), never
 * leak to the next client, cannot be set by clients; prepared statements with the same text
 * from two tenants stay apart (pg named statements, postgres.js); the audit line of a rewritten
 * statement carries `rewritten`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startScopegate, type LogLine, type RunningScopegate } from './harness/scopegate.js';
import { AUTH_PASSWORD, DB, errorOf, pollUntil, startRows, type RowsFixture } from './rows.fixture.test.js';

const CTX = "SELECT current_setting('scopegate.claims', true) AS claims, current_setting('scopegate.sub', true) AS sub, pg_backend_pid() AS pid";

describe('per-client claims on one server connection', { timeout: 120_000 }, () => {
  let fx: RowsFixture;
  let plain: RunningScopegate | null = null;
  const acme = { tenant: 'acme', countries: '["UK"]' };
  const globex = { tenant: 'globex', countries: '["FI"]' };

  before(async () => { fx = await startRows({ poolSize: 1 }); });
  after(async () => {
    await plain?.stop().catch(() => null);
    await fx?.stop();
  });

  test('PostgreSQL RLS over scopegate.claims isolates tenants on a table without row_filters', async () => {
    const a = await fx.client('ledger:read', 'alice', acme);
    const g = await fx.client('ledger:read', 'gary', globex);
    const n = await fx.client('ledger:read', 'nora', {});
    const q = 'SELECT id, tenant_id, amount FROM ledger ORDER BY id';
    for (let i = 0; i < 10; i++) {
      const ra = i % 2 === 0 ? await a.query(q) : await a.query({ text: q, values: [] });
      const rg = i % 2 === 1 ? await g.query(q) : await g.query({ text: q, values: [] });
      const rn = await n.query(q);
      assert.deepEqual(ra.rows, [{ id: 1, tenant_id: 'acme', amount: 100 }, { id: 3, tenant_id: 'acme', amount: 300 }], `round ${i}`);
      assert.deepEqual(rg.rows, [{ id: 2, tenant_id: 'globex', amount: 200 }, { id: 5, tenant_id: 'globex', amount: 500 }], `round ${i}`);
      assert.deepEqual(rn.rows, [], `round ${i}: a token without tenant sees nothing`);
    }
    // The same on postgres.js, prepared.
    const aj = await fx.pgjs('ledger:read', 'alice', acme);
    const gj = await fx.pgjs('ledger:read', 'gary', globex);
    for (let i = 0; i < 5; i++) {
      const [x, y] = await Promise.all([aj`SELECT id FROM ledger WHERE amount > ${0} ORDER BY id`, gj`SELECT id FROM ledger WHERE amount > ${0} ORDER BY id`]);
      assert.deepEqual([...x].map((r) => r.id), [1, 3]);
      assert.deepEqual([...y].map((r) => r.id), [2, 5]);
    }
    assert.equal((await fx.su('SELECT count(*)::int AS n FROM ledger')).rows[0].n, 5, 'the superuser sees all rows');
  });

  test('claims never leak to the next client on the same backend', async () => {
    const a = await fx.client('orders:read', 'alice', acme);
    const b = await fx.client('orders:read', 'bob', globex);
    const c = await fx.client('orders:read', 'carol', {});
    const who: Array<[pg.Client, string, string | undefined]> = [[a, 'alice', 'acme'], [b, 'bob', 'globex'], [c, 'carol', undefined]];
    const pids = new Set<number>();
    for (let round = 0; round < 4; round++) {
      const order = round % 2 === 0 ? who : [...who].reverse();
      for (const [client, sub, tenant] of order) {
        const r = round < 2 ? await client.query(CTX) : await client.query({ text: CTX, values: [] });
        const row = r.rows[0] as { claims: string; sub: string; pid: number };
        pids.add(row.pid);
        assert.equal(row.sub, sub, `round ${round}: scopegate.sub of ${sub}`);
        const claims = JSON.parse(row.claims) as Record<string, unknown>;
        assert.equal(claims.sub, sub);
        assert.equal(claims.tenant, tenant, `round ${round}: tenant claim of ${sub}`);
        if (tenant === undefined) assert.ok(!('tenant' in claims), 'no tenant key left behind');
      }
    }
    // Inside a transaction too, and after a client went away.
    await a.query('BEGIN');
    assert.equal(JSON.parse((await a.query(CTX)).rows[0].claims).tenant, 'acme');
    await a.query('COMMIT');
    await a.end();
    const r = (await c.query(CTX)).rows[0];
    assert.equal(r.sub, 'carol');
    assert.equal(JSON.parse(r.claims).tenant, undefined);
    pids.add(r.pid);
    assert.equal(pids.size, 1, 'all clients shared the one backend');

    // A plain pooler (trust, no policy) on the same database: nothing is set for its clients.
    plain = await startScopegate({
      databases: { [DB]: { url: fx.pg.url(DB, 'authenticator', AUTH_PASSWORD), pool_size: 1 } },
      auth: { method: 'trust' },
      log: { level: 'info' },
    });
    const p = new pg.Client({ host: '127.0.0.1', port: plain.port, user: 'plain', database: DB });
    await p.connect();
    try {
      for (const q of [CTX, { text: CTX, values: [] }]) {
        const row = (await p.query(q)).rows[0];
        assert.ok(row.claims === null || row.claims === '', `claims for a plain client: ${JSON.stringify(row.claims)}`);
        assert.ok(row.sub === null || row.sub === '', `sub for a plain client: ${JSON.stringify(row.sub)}`);
      }
    } finally {
      await p.end();
    }
  });

  test('clients cannot set scopegate.claims / scopegate.sub (42501), and keep their own', async () => {
    const a = await fx.client('orders:read', 'alice', acme);
    const attempts = [
      `SET scopegate.claims = '{"tenant":"globex"}'`,
      `SET SESSION scopegate.claims TO '{"tenant":"globex"}'`,
      `SET scopegate.sub = 'bob'`,
      'RESET scopegate.claims',
      `SELECT set_config('scopegate.claims', '{"tenant":"globex"}', false)`,
      `SELECT pg_catalog.set_config('scopegate.sub', 'bob', false)`,
      `SELECT id FROM orders WHERE set_config('scopegate.claims', '{"tenant":"globex"}', true) IS NOT NULL`,
    ];
    for (const q of attempts) {
      for (const extended of [false, true]) {
        const e = await errorOf(() => (extended ? a.query({ text: q, values: [] }) : a.query(q)));
        assert.equal(e.code, '42501', `${q}: ${e.message}`);
      }
    }
    await a.query('BEGIN');
    const e = await errorOf(() => a.query(`SET LOCAL scopegate.claims = '{"tenant":"globex"}'`));
    assert.equal(e.code, '42501');
    await a.query('ROLLBACK');
    const r = (await a.query(CTX)).rows[0];
    assert.equal(r.sub, 'alice');
    assert.equal(JSON.parse(r.claims).tenant, 'acme');
    const ledger = await fx.client('ledger:read', 'alice', acme);
    assert.deepEqual((await ledger.query('SELECT DISTINCT tenant_id FROM ledger')).rows, [{ tenant_id: 'acme' }]);
  });

  test('prepared statements with the same text from two tenants return each its own rows (pg named, postgres.js)', async () => {
    const own = async (tenant: string) => (await fx.su('SELECT id FROM orders WHERE tenant_id = $1 ORDER BY id', [tenant])).rows.map((r) => r.id as number);
    const wantA = await own('acme');
    const wantG = await own('globex');
    assert.notDeepEqual(wantA, wantG);
    const a = await fx.client('orders:read', 'alice', acme);
    const g = await fx.client('orders:read', 'gary', globex);
    for (let i = 0; i < 10; i++) {
      const first = i % 2 === 0 ? a : g;
      const second = first === a ? g : a;
      const r1 = await first.query({ name: 'q', text: 'select id from orders order by id' });
      const r2 = await second.query({ name: 'q', text: 'select id from orders order by id' });
      assert.deepEqual((first === a ? r1 : r2).rows.map((r) => r.id), wantA, `round ${i} acme`);
      assert.deepEqual((first === a ? r2 : r1).rows.map((r) => r.id), wantG, `round ${i} globex`);
      const p1 = await a.query({ name: 'qp', text: 'select id from orders where total > $1 order by id', values: [0] });
      const p2 = await g.query({ name: 'qp', text: 'select id from orders where total > $1 order by id', values: [0] });
      assert.deepEqual(p1.rows.map((r) => r.id), wantA);
      assert.deepEqual(p2.rows.map((r) => r.id), wantG);
    }
    // Concurrently on the one backend.
    const conc = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : g).query({ name: 'q', text: 'select id from orders order by id' }).then((r) => [i % 2, r.rows.map((x) => x.id)] as const)));
    for (const [w, ids] of conc) assert.deepEqual(ids, w === 0 ? wantA : wantG);

    // postgres.js: default prepared statements (same generated name for the same text).
    const aj = await fx.pgjs('orders:read', 'alice', acme);
    const gj = await fx.pgjs('orders:read', 'gary', globex);
    for (let i = 0; i < 10; i++) {
      const [x, y] = i % 2 === 0
        ? await Promise.all([aj`select id from orders where total > ${0} order by id`, gj`select id from orders where total > ${0} order by id`])
        : [await gj`select id from orders where total > ${0} order by id`, await aj`select id from orders where total > ${0} order by id`].reverse();
      assert.deepEqual([...x!].map((r) => r.id), wantA, `postgres.js round ${i} acme`);
      assert.deepEqual([...y!].map((r) => r.id), wantG, `postgres.js round ${i} globex`);
    }
    // A third client of the first tenant, prepared after the others, on the same backend.
    const a2 = await fx.client('orders:read', 'alice2', acme);
    assert.deepEqual((await a2.query({ name: 'q', text: 'select id from orders order by id' })).rows.map((r) => r.id), wantA);
    assert.deepEqual((await g.query({ name: 'q', text: 'select id from orders order by id' })).rows.map((r) => r.id), wantG);
  });

  test('the audit line of a rewritten statement carries rewritten and the original statement', async () => {
    const a = await fx.client('orders:read', 'auditor', acme);
    await a.query("SELECT id AS audit_marker_simple FROM orders WHERE status = 'paid'");
    await a.query({ text: 'SELECT id AS audit_marker_ext FROM orders WHERE total > $1', values: [5] });
    const isAudit = (marker: string) => (l: LogLine) => l.stream === 'audit' && String(l.statement).includes(marker);
    const simple = await pollUntil(async () => fx.audit().find(isAudit('audit_marker_simple')), 'audit line (simple)');
    const ext = await pollUntil(async () => fx.audit().find(isAudit('audit_marker_ext')), 'audit line (extended)');
    for (const l of [simple, ext]) {
      assert.equal(l.decision, 'allow');
      assert.equal(l.sub, 'auditor');
      assert.equal(l.role, 'app_reader');
      assert.equal(typeof l.fingerprint, 'string');
      assert.ok(String(l.fingerprint).length > 0);
      assert.equal(typeof l.rewritten, 'string', JSON.stringify(l));
      assert.match(String(l.rewritten), /tenant_id = 'acme'/);
      // `statement` is the client's text (normalized), not the rewritten one.
      assert.doesNotMatch(String(l.statement), /tenant_id/);
      assert.match(String(l.statement), /FROM orders/i);
    }
    assert.doesNotMatch(String(simple.statement), /'paid'/, 'literals removed from the statement');
    // An unfiltered statement carries no rewritten field.
    await a.query('SELECT sku AS audit_marker_plain FROM order_items LIMIT 1');
    const plainLine = await pollUntil(async () => fx.audit().find(isAudit('audit_marker_plain')), 'audit line (plain)');
    assert.ok(!('rewritten' in plainLine), JSON.stringify(plainLine));
  });
});
