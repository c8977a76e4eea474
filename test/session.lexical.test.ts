// Concern: the server reads every text as scopegate checked it (pinned lexical settings), and SQL scopegate writes itself cannot be bent by client text.
/**
 * Transaction mode, pool_size 1: every client shares one server connection, so whatever one
 * client leaves on it, the next one meets. Real scopegate CLI, real PostgreSQL, node-postgres.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { errorOf, startFixture, type Fixture } from './scope.fixture.test.js';

let fx: Fixture;

before(async () => {
  fx = await startFixture({ poolSize: 1 });
});

after(async () => {
  await fx?.stop();
});

async function reader(extra?: pg.ClientConfig): Promise<pg.Client> {
  return fx.client('orders:read', { sub: 'reader', extra });
}

/** What the shared server connection looks like to a fresh client of another token. */
async function bystander(): Promise<{ scs: string; enc: string; u: string; sub: string }> {
  const c = await fx.client('orders:read', { sub: 'bystander' });
  try {
    const r = await c.query(`SELECT current_setting('standard_conforming_strings') AS scs, current_setting('client_encoding') AS enc,
      current_user AS u, current_setting('scopegate.sub', true) AS sub`);
    return r.rows[0];
  } finally {
    await c.end();
  }
}

describe('the lexical environment is pinned', () => {
  it('SET standard_conforming_strings = off is refused in every form, and the server keeps it on', async () => {
    const c = await reader();
    try {
      for (const sql of ['SET standard_conforming_strings = off', 'SET SESSION standard_conforming_strings TO false', 'SELECT 1; SET standard_conforming_strings = off', 'set "standard_conforming_strings" = 0']) {
        const e = await errorOf(() => c.query(sql));
        assert.equal(e.code, '0A000', sql);
        assert.match(e.message, /standard_conforming_strings/);
      }
      const ext = await errorOf(() => c.query({ text: 'SET standard_conforming_strings = off', values: [] , queryMode: 'extended' } as pg.QueryConfig));
      assert.equal(ext.code, '0A000');
      await c.query('BEGIN');
      const local = await errorOf(() => c.query('SET LOCAL standard_conforming_strings = off'));
      assert.equal(local.code, '0A000');
      await c.query('ROLLBACK');
      assert.equal((await c.query("SELECT current_setting('standard_conforming_strings') AS v")).rows[0].v, 'on');
    } finally {
      await c.end();
    }
    assert.equal((await bystander()).scs, 'on');
  });

  it('client encodings other than UTF8 are refused, by SET and at startup; UTF8 works', async () => {
    const c = await reader();
    try {
      for (const sql of ["SET client_encoding = 'SJIS'", "SET NAMES 'GBK'", "SET client_encoding TO 'BIG5'"]) {
        const e = await errorOf(() => c.query(sql));
        assert.equal(e.code, '0A000', sql);
        assert.match(e.message, /client_encoding/);
        assert.match(e.hint ?? '', /UTF8/);
      }
      await c.query("SET NAMES 'UTF8'");
      assert.equal((await c.query("SELECT current_setting('client_encoding') AS v")).rows[0].v, 'UTF8');
    } finally {
      await c.end();
    }
    const startup = await errorOf(() => reader({ options: '-c client_encoding=SJIS' }));
    assert.equal(startup.code, '0A000');
    const scs = await errorOf(() => reader({ options: '-c standard_conforming_strings=off' }));
    assert.equal(scs.code, '0A000');
    const seen = await bystander();
    assert.equal(seen.enc, 'UTF8');
    assert.equal(seen.scs, 'on');
  });
});

describe('SQL that scopegate writes itself', () => {
  it('a startup value with quotes and backslashes is replayed as the value, not as SQL', async () => {
    // Under 64 bytes: Postgres truncates application_name to NAMEDATALEN - 1.
    const payload = "x\\', false); SET ROLE app_admin; --";
    const a = await reader({ application_name: payload });
    const b = await fx.client('admin', { sub: 'admin', extra: { application_name: 'admin-app' } });
    try {
      // b's transaction runs in between, so a's settings are replayed on the shared connection.
      for (let i = 0; i < 2; i++) {
        assert.equal((await b.query("SELECT current_setting('application_name') AS v")).rows[0].v, 'admin-app');
        const r = (await a.query("SELECT current_user AS u, current_setting('application_name') AS app, current_setting('scopegate.sub') AS sub")).rows[0];
        assert.equal(r.u, 'app_reader');
        assert.equal(r.app, payload);
        assert.equal(r.sub, 'reader');
      }
    } finally {
      await a.end();
      await b.end();
    }
  });

  it('a recorded SET ending in a -- comment cannot swallow the role and claims switch that follows it', async () => {
    const a = await reader();
    const admin = await fx.client('admin', { sub: 'root' });
    try {
      await a.query("SET application_name = 'a' --");
      await admin.query('SELECT 1');
      const r = (await a.query("SELECT current_user AS u, current_setting('scopegate.sub') AS sub, current_setting('application_name') AS app")).rows[0];
      assert.deepEqual(r, { u: 'app_reader', sub: 'reader', app: 'a' });
      const e = await errorOf(() => a.query('SELECT * FROM secrets'));
      assert.equal(e.code, '42501');
    } finally {
      await a.end();
      await admin.end();
    }
  });

  it('a refusal inside a transaction cannot break out of its DO block', async () => {
    const a = await reader();
    try {
      await a.query('BEGIN');
      const e = await errorOf(() => a.query('SET scopegate."x$scopegate$ || (select string_agg(value, $q$,$q$) from public.secrets) $scopegate$" = 1'));
      assert.equal(e.code, '42501');
      assert.ok(!/launch-code|another-secret/.test(`${e.message} ${e.detail ?? ''} ${e.hint ?? ''}`), 'no secret in the error');
      await a.query('ROLLBACK');
      assert.equal((await a.query('SELECT current_user AS u')).rows[0].u, 'app_reader');
    } finally {
      await a.end();
    }
  });

  it('RESET ALL empties the claims on the server; scopegate sets them again for the next statement', async () => {
    const a = await reader();
    try {
      await a.query('RESET ALL');
      const r = (await a.query("SELECT current_user AS u, current_setting('scopegate.sub') AS sub, current_setting('scopegate.claims') <> '' AS has_claims")).rows[0];
      assert.deepEqual(r, { u: 'app_reader', sub: 'reader', has_claims: true });
    } finally {
      await a.end();
    }
  });

  it('SET seed and SET transaction_isolation are not replayed: other clients keep being served', async () => {
    const a = await reader();
    try {
      await a.query('SET seed = 0.5');
      await a.query("SET transaction_isolation = 'serializable'");
      const seen = await bystander();
      assert.equal(seen.u, 'app_reader');
      assert.equal(seen.sub, 'bystander');
      const admin = await fx.client('admin', { sub: 'root' });
      try {
        assert.equal((await admin.query('SELECT count(*)::int AS n FROM orders')).rows[0].n > 0, true);
      } finally {
        await admin.end();
      }
      assert.equal((await a.query('SELECT 1 AS one')).rows[0].one, 1);
    } finally {
      await a.end();
    }
  });

  it('seed and transaction_* as startup parameters are refused: they cannot follow the client', async () => {
    for (const options of ['-c seed=0.5', '-c SEED=0.5', '-c transaction_read_only=on']) {
      const e = await errorOf(() => reader({ options }));
      assert.equal(e.code, '0A000', options);
    }
    const seen = await bystander();
    assert.equal(seen.u, 'app_reader');
    assert.equal(seen.sub, 'bystander');
  });
});
