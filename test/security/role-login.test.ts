// Concern: the second wall: with server_login: role each server connection logs in as the scope's own role, so Postgres itself refuses what the parser missed.
/**
 * A function granted to the read scope that runs `SET ROLE app_admin` dynamically stands for
 * any text that slips past the parser. With the authenticator login (a member of every scope
 * role) it reaches the admin's secrets; with role logins Postgres refuses the switch. The
 * rest checks what role logins cost the client: transactions of several statements, pipelined
 * transactions of different roles, claims, and a clear refusal when one transaction would
 * need two roles.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { errorOf, pollUntil, startFixture, type Fixture } from '../scope.fixture.test.js';
import { readerMayExecute } from './policies.js';

const ESCALATE = `
CREATE FUNCTION public.escalate() RETURNS text LANGUAGE plpgsql AS $$
  BEGIN EXECUTE 'SET ROLE app_admin'; RETURN (SELECT string_agg(value, ',') FROM public.secrets); END $$;
GRANT EXECUTE ON FUNCTION public.escalate() TO app_reader;
ALTER ROLE app_reader LOGIN PASSWORD 'reader-pw';
ALTER ROLE app_writer LOGIN PASSWORD 'writer-pw';
`;

const ROLES = {
  app_reader: { password: 'reader-pw', pool_size: 1 },
  app_writer: { password: 'writer-pw', pool_size: 1 },
};


describe('authenticator login: what the second wall is for', () => {
  let fx: Fixture;
  before(async () => {
    fx = await startFixture({ poolSize: 1, policy: readerMayExecute('public.escalate'), setupSql: ESCALATE });
  });
  after(async () => {
    await fx?.stop();
  });

  it('a text that slips past the parser can switch to any scope role: the escalation is real', async () => {
    const c = await fx.client('orders:read', { sub: 'attacker' });
    const r = await c.query('SELECT public.escalate() AS v');
    assert.match(String(r.rows[0].v), /the-launch-code/);
    await c.end();
  });
});

describe('server_login: role', () => {
  let fx: Fixture;
  before(async () => {
    fx = await startFixture({ poolSize: 1, policy: readerMayExecute('public.escalate'), setupSql: ESCALATE, database: { server_login: 'role', roles: ROLES } });
  });
  after(async () => {
    await fx?.stop();
  });

  it('Postgres refuses the switch: the secret never reaches the read token, and the next client is itself', async () => {
    const c = await fx.client('orders:read', { sub: 'attacker' });
    const e = await errorOf(() => c.query('SELECT public.escalate() AS v'));
    assert.equal(e.code, '42501');
    assert.match(e.message, /permission denied to set role "app_admin"/);
    assert.doesNotMatch(JSON.stringify(e), /launch-code/);
    const after = await c.query('SELECT current_user AS u, session_user AS s');
    assert.deepEqual(after.rows[0], { u: 'app_reader', s: 'app_reader' });
    await c.end();
    const next = await fx.client('orders:read', { sub: 'next' });
    const r = await next.query("SELECT current_user AS u, session_user AS s, current_setting('scopegate.sub', true) AS sub, count(*)::int AS n FROM orders");
    assert.deepEqual(r.rows[0], { u: 'app_reader', s: 'app_reader', sub: 'next', n: 10 });
    await next.end();
  });

  it('each statement runs on a connection logged in as its scope role, with the token claims set', async () => {
    const c = await fx.client('orders:read orders:write', { sub: 'writer' });
    const read = await c.query("SELECT session_user AS s, current_setting('scopegate.sub', true) AS sub FROM orders LIMIT 1");
    assert.deepEqual(read.rows[0], { s: 'app_reader', sub: 'writer' });
    const write = await c.query("UPDATE orders SET status = 'paid' WHERE id = 1 RETURNING session_user AS s, current_setting('scopegate.sub', true) AS sub");
    assert.deepEqual(write.rows[0], { s: 'app_writer', sub: 'writer' });
    const logged = await fx.su("SELECT by_role FROM write_log WHERE tbl = 'orders' ORDER BY id DESC LIMIT 1");
    assert.equal(logged.rows[0].by_role, 'app_writer/none', 'the write ran as the writer login itself, no SET ROLE');
    await c.end();
  });

  it('BEGIN takes the role of the transaction\'s first statement; a statement needing another role inside it is refused and nothing is written', async () => {
    const c = await fx.client('orders:read orders:write', { sub: 'tx' });
    await c.query('BEGIN');
    const u = await c.query("UPDATE orders SET status = 'shipped' WHERE id = 2 RETURNING session_user AS s");
    assert.equal(u.rows[0].s, 'app_writer');
    await c.query('COMMIT');
    assert.equal((await fx.su('SELECT status FROM orders WHERE id = 2')).rows[0].status, 'shipped');

    const before = (await fx.su('SELECT count(*)::int AS n FROM write_log')).rows[0].n as number;
    await c.query('BEGIN');
    assert.equal((await c.query('SELECT session_user AS s FROM orders LIMIT 1')).rows[0].s, 'app_reader');
    const e = await errorOf(() => c.query("UPDATE orders SET status = 'lost' WHERE id = 3"));
    assert.equal(e.code, '42501');
    assert.match(e.message, /runs as role "app_writer", but the transaction logged in as "app_reader"/);
    const aborted = await errorOf(() => c.query('SELECT 1'));
    assert.equal(aborted.code, '25P02', 'the transaction failed as in Postgres');
    await c.query('ROLLBACK');
    assert.equal((await fx.su('SELECT count(*)::int AS n FROM write_log')).rows[0].n, before);
    assert.notEqual((await fx.su('SELECT status FROM orders WHERE id = 3')).rows[0].status, 'lost');

    // BEGIN ... COMMIT with nothing in between is answered without a server connection.
    await c.query('BEGIN');
    await c.query('COMMIT');
    await c.query('START TRANSACTION READ ONLY');
    assert.equal((await c.query("SELECT current_setting('transaction_read_only') AS ro FROM orders LIMIT 1")).rows[0].ro, 'on');
    await c.query('ROLLBACK');
    await c.end();
  });

  it('pipelined transactions of different roles each get their own login', async () => {
    const c = await fx.client('orders:read orders:write', { sub: 'pipe' });
    const [a, b, d] = await Promise.all([
      c.query('SELECT session_user AS s FROM orders LIMIT 1'),
      c.query("UPDATE orders SET status = 'new' WHERE id = 4 RETURNING session_user AS s"),
      c.query('SELECT session_user AS s, count(*)::int AS n FROM order_items'),
    ]);
    assert.deepEqual([a.rows[0].s, b.rows[0].s, d.rows[0].s], ['app_reader', 'app_writer', 'app_reader']);
    await c.end();
  });

  it('a scope role without a configured login gets a clear refusal', async () => {
    const c = await fx.client('admin', { sub: 'root' });
    const e = await errorOf(() => c.query('SELECT value FROM secrets'));
    assert.equal(e.code, '42501');
    assert.match(e.message, /no server login for role "app_admin"/);
    assert.doesNotMatch(JSON.stringify(e), /launch-code/);
    await c.end();
  });
});

describe('no catalog, no verdicts', () => {
  let fx: Fixture;
  before(async () => {
    // The catalog is read with the url's login; the role logins still work.
    fx = await startFixture({ poolSize: 1, setupSql: ESCALATE, database: { server_login: 'role', roles: ROLES, password: 'not-the-authenticator-pw' } });
  });
  after(async () => {
    await fx?.stop();
  });

  it('statements are refused with 57P03 until the catalog can be read, then judged as usual', async () => {
    const c = await fx.client('orders:read', { sub: 'early' });
    // o.place_order would be a function call if place_order is no column: only the catalog can say.
    const e = await errorOf(() => c.query('SELECT o.id FROM orders o WHERE o.id = 1'));
    assert.equal(e.code, '57P03');
    assert.match(e.message, /has not read the database catalog/);
    await fx.su("ALTER ROLE authenticator PASSWORD 'not-the-authenticator-pw'");
    const r = await pollUntil(async () => {
      try { return await c.query('SELECT o.id FROM orders o WHERE o.id = 1'); } catch (err) {
        if ((err as { code?: string }).code === '57P03') return null;
        throw err;
      }
    }, 'the catalog read on retry');
    assert.deepEqual(r.rows, [{ id: 1 }]);
    await c.end();
  });
});
