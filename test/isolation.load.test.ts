// Concern: isolation under load: many clients with different scopes and tenants over a small pool each see only their own role, claims and rows, in every transaction.
/**
 * 100 clients, 5 scope sets and 4 tenants, over a pool of 10 in transaction mode, each running
 * 15 transactions (1,500 in all) of simple and extended statements. Every transaction checks
 * what it ran as: current_user, scopegate.sub and scopegate.claims, and that the orders it
 * sees all belong to its tenant. The count is fixed, not timed, so the suite ends by itself.
 * `SG_ISOLATION_CLIENTS` / `SG_ISOLATION_TX` run it bigger.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { startRows, type RowsFixture } from './rows.fixture.test.js';

const CLIENTS = Number(process.env.SG_ISOLATION_CLIENTS ?? 100);
const TXNS = Number(process.env.SG_ISOLATION_TX ?? 15);

interface Persona { scope: string; tenant: string; role: string }
const PERSONAS: Persona[] = [
  { scope: 'orders:read', tenant: 'acme', role: 'app_reader' },
  { scope: 'orders:read', tenant: 'globex', role: 'app_reader' },
  { scope: 'orders:write', tenant: 'initech', role: 'app_writer' },
  { scope: 'orders:manage', tenant: 'acme', role: 'app_manager' },
  { scope: 'orders:write', tenant: "o'brien", role: 'app_writer' },
];

describe('isolation under load', { timeout: 240_000 }, () => {
  let fx: RowsFixture;
  before(async () => { fx = await startRows({ poolSize: 10 }); });
  after(async () => { await fx?.stop(); });

  it(`${CLIENTS} clients x ${TXNS} transactions: every transaction runs as its own scope, with its own claims, and sees only its tenant`, async () => {
    const violations: string[] = [];
    let done = 0;
    // Each client's token is minted by the CLI, four at a time (not hundreds of processes at
    // once); all clients are connected before the first transaction, so they all overlap.
    const clients: pg.Client[] = new Array(CLIENTS);
    let nextClient = 0;
    const connector = async (): Promise<void> => {
      for (let i = nextClient++; i < CLIENTS; i = nextClient++) {
        const p = PERSONAS[i % PERSONAS.length]!;
        clients[i] = await fx.client(p.scope, `client-${i}`, { tenant: p.tenant, countries: '["UK"]' });
      }
    };
    await Promise.all([connector(), connector(), connector(), connector()]);
    const run = async (i: number): Promise<void> => {
      const p = PERSONAS[i % PERSONAS.length]!;
      const sub = `client-${i}`;
      const c = clients[i]!;
      try {
        for (let t = 0; t < TXNS; t++) {
          await c.query('BEGIN');
          const who = await c.query("SELECT current_user AS u, current_setting('scopegate.sub', true) AS sub, current_setting('scopegate.claims', true)::jsonb ->> 'tenant' AS tenant FROM orders LIMIT 1");
          const seen = t % 2 === 0
            ? await c.query('SELECT DISTINCT tenant_id FROM orders')
            : await c.query({ text: 'SELECT DISTINCT tenant_id FROM orders WHERE id > $1', values: [0] });
          await c.query('COMMIT');
          const w = who.rows[0] as { u: string; sub: string; tenant: string } | undefined;
          if (w !== undefined && (w.u !== p.role || w.sub !== sub || w.tenant !== p.tenant)) violations.push(`${sub}: ran as ${JSON.stringify(w)}`);
          for (const r of seen.rows as Array<{ tenant_id: string }>) if (r.tenant_id !== p.tenant) violations.push(`${sub} (${p.tenant}) saw ${r.tenant_id}`);
          done++;
        }
      } finally {
        await c.end();
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, (_, i) => run(i)));
    assert.deepEqual(violations, []);
    assert.equal(done, CLIENTS * TXNS);
    // The pool stayed within its size the whole time.
    const servers = await fx.su("SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = 'authenticator'");
    assert.ok(servers.rows[0].n <= 10, `server connections: ${servers.rows[0].n}`);
  });
});
