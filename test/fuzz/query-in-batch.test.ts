// Concern: a simple Query sent inside an unsynced extended-protocol batch leaves PostgreSQL's transaction state wrong, so scopegate never hands that server connection to anyone again (found by the protocol fuzz suite).
/**
 * Shrunk from a fuzz case (seed 2, run 28791): Parse/Bind/Execute of COPY FROM STDIN, CopyDone,
 * then a simple Query before the Sync. PostgreSQL 18.4 answers it, but the connection's next
 * statement fails with XX000 "StartTransactionCommand: unexpected state STARTED"; the COPY is
 * not needed, any Execute before the Query does it. The first test shows it on PostgreSQL
 * directly, the others that through scopegate the next client, on a pool of one, gets its own
 * answers from a fresh server connection.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres, type TestPostgres } from '../harness/postgres.js';
import { errorFields, fe, rawLogin, rawSuperuserLogin, rows, typed } from '../harness/rawclient.js';
import { startFixture, type Fixture } from '../scope.fixture.test.js';

const errors = (ms: Array<{ type: string; body: Buffer }>): string[] => ms.filter((m) => m.type === 'E').map((m) => errorFields(m.body).C ?? '?');

/** An Execute, then a simple Query before the batch's Sync. */
const batch = (query: string): Buffer => Buffer.concat([fe.parse('SELECT 1'), fe.bind(), fe.execute(), fe.query(query), fe.sync()]);

describe('a simple Query inside an unsynced extended batch', () => {
  describe('PostgreSQL 18.4 directly', () => {
    let db: TestPostgres;
    before(async () => { db = await startPostgres({ authMethod: 'password' }); });
    after(async () => { await db?.stop(); });

    it('fails the connection\'s next statement with XX000 (why scopegate retires the connection)', async () => {
      const raw = await rawSuperuserLogin(db.port);
      raw.write(batch(''));
      // The Query's ReadyForQuery, then the Sync's.
      const got = [...await raw.readUntilReady(), ...await raw.readUntilReady()];
      assert.deepEqual(errors(got), []);
      const next = await raw.query('SELECT 3');
      assert.deepEqual(errors(next), ['XX000']);
      raw.close();
    });
  });

  describe('through scopegate', () => {
    let fx: Fixture;
    before(async () => { fx = await startFixture({ poolSize: 1 }); });
    after(async () => { await fx?.stop(); });

    for (const query of ['', 'SELECT 2']) {
      it(`Query(${JSON.stringify(query)}): the batch is answered, then the client and the next one get a fresh server connection`, async () => {
        const { raw, login } = await rawLogin(fx.sg.port, 'mallory', await fx.token('orders:read', 'mallory'));
        assert.equal(login.find((m) => m.type === 'E'), undefined);
        const before = rows(await raw.query('SELECT pg_backend_pid()::text'))[0]![0];
        raw.write(batch(query));
        const got = [...await raw.readUntilReady(), ...await raw.readUntilReady()];
        assert.deepEqual(errors(got), []);
        // The same client goes on without the XX000, on another server connection.
        const own = await raw.query('SELECT pg_backend_pid()::text');
        assert.deepEqual(errors(own), []);
        assert.notEqual(rows(own)[0]![0], before, 'the server connection the Query went to was not reused');
        raw.close();
        // The next client (pool of one) is served as its own.
        const c = await fx.client('orders:read', { sub: 'next' });
        const r = await c.query("SELECT count(*)::int AS n, current_user AS role, current_setting('scopegate.sub') AS sub FROM orders");
        assert.deepEqual(r.rows[0], { n: 10, role: 'app_reader', sub: 'next' });
      });
    }

    it('a client that leaves mid-COPY after CopyDone and a Query does not pass the broken connection on', async () => {
      const { raw } = await rawLogin(fx.sg.port, 'mallory', await fx.token('admin', 'mallory'));
      await raw.query('CREATE TABLE IF NOT EXISTS batch_sink (t text)');
      raw.write(Buffer.concat([fe.parse('COPY batch_sink FROM STDIN'), fe.bind(), fe.execute(), fe.flush()]));
      const started = [await raw.read(), await raw.read(), await raw.read()];
      assert.deepEqual(started.map((m) => m.type), ['1', '2', 'G']);
      raw.write(Buffer.concat([typed('c'), fe.query('')]));
      // The COPY's CommandComplete, then the Query's answer.
      const got = await raw.readUntilReady();
      assert.deepEqual(errors(got), []);
      raw.close();
      await raw.closed;
      const c = await fx.client('orders:read', { sub: 'next' });
      const r = await c.query("SELECT count(*)::int AS n, current_user AS role FROM orders");
      assert.deepEqual(r.rows[0], { n: 10, role: 'app_reader' });
    });
  });
});
