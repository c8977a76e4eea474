// Concern: defence in depth for the pinned lexical settings: a server connection that reports another value, at login or later, is never used again.
/**
 * The gate refuses every statement that changes standard_conforming_strings or
 * client_encoding. These tests change them behind its back, the way only the database's
 * owner can (a login event trigger, a granted function calling set_config), and check that
 * scopegate stops using that connection: logins are refused, the client that met the change
 * is ended, and the next client gets a connection with the pinned values and its own role.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { errorOf, startFixture, type Fixture } from '../scope.fixture.test.js';
import { readerMayExecute } from './policies.js';

const LAX_FN = `CREATE FUNCTION public.lax() RETURNS text LANGUAGE sql AS $$ SELECT set_config('standard_conforming_strings', 'off', false) $$;
  GRANT EXECUTE ON FUNCTION public.lax() TO app_reader`;


describe('server connections that stop reading text as scopegate does', () => {
  let f2: Fixture;
  before(async () => {
    f2 = await startFixture({ poolSize: 1 });
  });
  after(async () => {
    await f2?.stop();
  });

  it('a login that comes up with standard_conforming_strings off is refused, and service resumes once it is fixed', async () => {
    // Runs after the startup packet's settings, so only the check after login catches it.
    await f2.su(`CREATE FUNCTION public.lax_login() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN IF session_user = 'authenticator' THEN PERFORM set_config('standard_conforming_strings', 'off', false); END IF; END $$;
      CREATE EVENT TRIGGER lax_login ON login EXECUTE FUNCTION public.lax_login()`);
    try {
      // The client meets the refusal at login (scopegate needs a server connection's
      // parameters to answer the startup) or at its first query: either way it is served nothing.
      const e = await errorOf(async () => {
        const c = await f2.client('orders:read', { sub: 'victim' });
        await c.query('SELECT count(*) FROM orders');
      });
      assert.equal(e.code, '0A000');
      assert.match(e.message, /standard_conforming_strings/);
      // scopegate's log is another process's stdout: it arrives when it arrives.
      await f2.sg.waitForLog((l) => /server login refused: server connection reports standard_conforming_strings = "off"/.test(String(l.err ?? "")));
    } finally {
      await f2.su('DROP EVENT TRIGGER lax_login');
    }
    const ok = await f2.client('orders:read', { sub: 'after' });
    const r = await ok.query("SELECT current_setting('standard_conforming_strings') AS scs, current_user AS u, count(*)::int AS n FROM orders");
    assert.deepEqual(r.rows[0], { scs: 'on', u: 'app_reader', n: 10 });
    await ok.end();
  });
});

describe('statements that would pin other values for later sessions', () => {
  let f4: Fixture;
  before(async () => {
    f4 = await startFixture({ poolSize: 1 });
  });
  after(async () => {
    await f4?.stop();
  });

  it('ALTER ROLE / DATABASE / SYSTEM ... SET and function SET clauses of a pinned setting are refused, even with admin', async () => {
    const admin = await f4.client('admin', { sub: 'root' });
    for (const sql of [
      'ALTER ROLE authenticator SET standard_conforming_strings = off',
      "ALTER ROLE app_reader IN DATABASE app SET client_encoding = 'SJIS'",
      'ALTER DATABASE app SET standard_conforming_strings TO false',
      'ALTER SYSTEM SET standard_conforming_strings = off',
      "CREATE FUNCTION public.f_lax() RETURNS int LANGUAGE sql SET client_encoding = 'GBK' AS 'SELECT 1'",
      "ALTER FUNCTION public.place_order(int, numeric) SET standard_conforming_strings = 'off'",
    ]) {
      const e = await errorOf(() => admin.query(sql));
      assert.equal(e.code, '0A000', sql);
      assert.match(e.message, /standard_conforming_strings|client_encoding/, sql);
    }
    const kept = await f4.su("SELECT count(*)::int AS n FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') ~ '(standard_conforming_strings|client_encoding)'");
    assert.equal(kept.rows[0].n, 0, 'no role or database setting was stored');
    const fn = await f4.su("SELECT count(*)::int AS n FROM pg_proc WHERE proname = 'f_lax' OR array_to_string(proconfig, ',') ~ 'standard_conforming_strings'");
    assert.equal(fn.rows[0].n, 0, 'no function with a pinned SET clause exists');
    // Control: the same statements with other settings go through.
    await admin.query("CREATE FUNCTION public.f_ok() RETURNS int LANGUAGE sql SET statement_timeout = '5s' AS 'SELECT 1'");
    assert.equal((await f4.su("SELECT count(*)::int AS n FROM pg_proc WHERE proname = 'f_ok' AND array_to_string(proconfig, ',') ~ 'statement_timeout'")).rows[0].n, 1);
    await admin.end();
  });
});

describe('a pinned setting changed at run time by a granted function', () => {
  let f3: Fixture;
  before(async () => {
    f3 = await startFixture({ poolSize: 1, policy: readerMayExecute('public.lax') });
    await f3.su(LAX_FN);
  });
  after(async () => {
    await f3?.stop();
  });

  it('ends the client with 0A000, closes the server connection, and the next client gets a fresh one with its own role', async () => {
    const attacker = await f3.client('orders:read', { sub: 'attacker' });
    const pid = (await attacker.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
    const e = await errorOf(() => attacker.query('SELECT public.lax()'));
    assert.equal(e.code, '0A000');
    assert.match(e.message, /standard_conforming_strings = "off"/);
    // The text standard strings off would split into three statements never reaches that connection.
    const after = await errorOf(() => attacker.query("SELECT 'x\\'; SET ROLE app_admin; SELECT value FROM secrets; --' AS v"));
    assert.doesNotMatch(JSON.stringify(after), /launch-code/);
    await attacker.end().catch(() => undefined);

    const next = await f3.client('orders:read', { sub: 'next' });
    const r = await next.query("SELECT pg_backend_pid() AS p, current_setting('standard_conforming_strings') AS scs, current_user AS u, current_setting('scopegate.sub', true) AS sub");
    assert.notEqual(r.rows[0].p, pid, 'the server connection that changed was not reused');
    assert.equal(r.rows[0].scs, 'on');
    assert.equal(r.rows[0].u, 'app_reader');
    assert.equal(r.rows[0].sub, 'next');
    const gone = await f3.su(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${pid}`);
    assert.equal(gone.rows[0].n, 0, 'the server connection was closed');
    await f3.sg.waitForLog((l) => JSON.stringify(l).includes('"audit":"server_breach"') && JSON.stringify(l).includes('"sub":"attacker"'));
    await next.end();
  });

  it('control: the same function is harmless when its setting is the pinned one', async () => {
    await f3.su(`CREATE OR REPLACE FUNCTION public.lax() RETURNS text LANGUAGE sql AS $$ SELECT set_config('standard_conforming_strings', 'on', false) $$`);
    const c = await f3.client('orders:read', { sub: 'control' });
    assert.equal((await c.query('SELECT public.lax() AS v')).rows[0].v, 'on');
    assert.equal((await c.query("SELECT 'a\\b' AS v")).rows[0].v, 'a\\b');
    await c.end();
  });
});
