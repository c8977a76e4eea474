// Concern: what scopegate shares between clients to keep idle clients small (startup settings, token claims) never carries one client's change to another, nor changes what a client sees.
/**
 * Idle clients are cheap because clients with the same startup settings share one read-only
 * copy of them, and a client's settings are copied only when it changes one; token claims
 * are copied property by property (one hidden class for all tokens of one shape). These
 * tests hold that to the behaviour: over one server connection (pool_size 1), a client's
 * SET, RESET and RESET ALL stay its own while others with the same startup settings keep
 * theirs, and a `__proto__` claim is still an ordinary claim in scopegate.claims.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { SignJWT } from 'jose';
import { startPostgres, type TestPostgres } from '../harness/postgres.js';
import { startScopegate, type RunningScopegate } from '../harness/scopegate.js';
import { AUTH, DB, SECRET, startFixture, type Fixture } from '../scope.fixture.test.js';

describe('startup settings shared by clients that sent the same ones', () => {
  let db: TestPostgres;
  let sg: RunningScopegate;
  const clients: pg.Client[] = [];
  before(async () => {
    db = await startPostgres();
    sg = await startScopegate({
      databases: { app: { url: db.url('postgres'), pool_size: 1 } },
      pool: { mode: 'transaction', query_wait_timeout: '10s', idle_transaction_timeout: 0 },
      log: { level: 'info' },
    });
  });
  after(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    await sg?.stop();
    await db?.stop();
  });

  /** A client with the same startup settings as every other one here. */
  async function client(): Promise<pg.Client> {
    const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'shared', database: 'app', application_name: 'same-app', options: '-c statement_timeout=1234 -c work_mem=2MB' });
    c.on('error', () => undefined);
    await c.connect();
    clients.push(c);
    return c;
  }

  async function show(c: pg.Client): Promise<string> {
    const r = await c.query("SELECT current_setting('statement_timeout') AS t, current_setting('work_mem') AS w, current_setting('application_name') AS a, pg_backend_pid() AS pid");
    const row = r.rows[0] as { t: string; w: string; a: string; pid: number };
    return `${row.t} ${row.w} ${row.a}`;
  }

  it("a client's SET, RESET and RESET ALL stay its own; the others keep the startup values", async () => {
    const a = await client();
    const b = await client();
    assert.equal(await show(a), '1234ms 2MB same-app');
    assert.equal(await show(b), '1234ms 2MB same-app');
    // Both share one server connection: what one sets is replayed or undone for the other.
    const pids = await Promise.all([a, b].map(async (c) => ((await c.query('SELECT pg_backend_pid() AS p')).rows[0] as { p: number }).p));
    assert.equal(pids[0], pids[1]);

    await a.query("SET statement_timeout = '999ms'");
    await a.query("SET work_mem = '3MB'");
    assert.equal(await show(a), '999ms 3MB same-app');
    assert.equal(await show(b), '1234ms 2MB same-app');
    // A client that logs in now with the same settings starts from them, not from a's.
    const c = await client();
    assert.equal(await show(c), '1234ms 2MB same-app');

    await a.query('RESET work_mem');
    assert.equal(await show(a), '999ms 2MB same-app', 'RESET goes back to the startup value');
    await b.query("SET application_name = 'b-own'");
    assert.equal(await show(b), '1234ms 2MB b-own');
    assert.equal(await show(c), '1234ms 2MB same-app');

    await a.query('RESET ALL');
    assert.equal(await show(a), '1234ms 2MB same-app', 'RESET ALL goes back to the startup values');
    // After RESET ALL the client shares the startup settings again: its next SET is its own still.
    await a.query("SET statement_timeout = '555ms'");
    assert.equal(await show(a), '555ms 2MB same-app');
    assert.equal(await show(b), '1234ms 2MB b-own');
    assert.equal(await show(c), '1234ms 2MB same-app');
    const d = await client();
    assert.equal(await show(d), '1234ms 2MB same-app');
  });
});

describe('token claims copied for the session', () => {
  let fx: Fixture;
  before(async () => { fx = await startFixture({ poolSize: 1 }); });
  after(async () => { await fx?.stop(); });

  it('a "__proto__" claim is an ordinary claim in scopegate.claims, and changes no other claim', async () => {
    const now = Math.floor(Date.now() / 1000);
    // Built from JSON text, so "__proto__" is an own property as it is in the token.
    const payload = JSON.parse(`{"__proto__":{"tenant":"evil"},"scope":"orders:read","iss":"${AUTH.issuer}","aud":"${AUTH.audience}","sub":"proto","iat":${now},"exp":${now + 600}}`) as Record<string, unknown>;
    const token = await new SignJWT(payload).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(SECRET));
    const c = new pg.Client({ host: '127.0.0.1', port: fx.sg.port, user: 'proto', password: token, database: DB });
    c.on('error', () => undefined);
    await c.connect();
    try {
      const r = await c.query("SELECT current_setting('scopegate.claims', true) AS claims, current_setting('scopegate.sub', true) AS sub FROM orders LIMIT 1");
      const row = r.rows[0] as { claims: string; sub: string };
      assert.equal(row.sub, 'proto');
      const claims = JSON.parse(row.claims) as Record<string, unknown>;
      assert.ok(Object.prototype.hasOwnProperty.call(claims, '__proto__'), row.claims);
      assert.deepEqual(Object.keys(claims).sort(), ['__proto__', 'aud', 'exp', 'iat', 'iss', 'scope', 'sub']);
      assert.equal(Object.prototype.hasOwnProperty.call(claims, 'tenant'), false, row.claims);
    } finally {
      await c.end();
    }
  });
});
