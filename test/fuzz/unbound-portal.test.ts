// Concern: Execute or Describe of an unnamed portal the client never bound is answered by scopegate (34000), because PostgreSQL 18.4 runs the freed portal a failed simple Query left behind and crashes (found by the protocol fuzz suite).
/**
 * Shrunk from a fuzz case (seed 2, run 2597) whose server connection died with signal 11. The
 * core showed PostgresMain (exec_execute_message inlined) reading a List whose element pointer
 * was 0x4141414141414141: the bytes of the CopyData just before. In a transaction block a
 * failed simple Query leaves its unnamed portal behind, but its statements lived in the
 * Query's own memory, since reset; the next message's buffer reuses it, and Execute("") walks
 * it. The first test shows the crash on PostgreSQL directly (no scopegate), the second that
 * through scopegate the same client bytes get 34000 and the server lives.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres, type TestPostgres } from '../harness/postgres.js';
import { errorFields, fe, rawLogin, rawSuperuserLogin, typed, waitFor } from '../harness/rawclient.js';
import { startFixture, type Fixture } from '../scope.fixture.test.js';

/** The shrunk message sequence after BEGIN, with `failing` the Query that fails. */
function sequence(failing: string): Buffer {
  const exec = Buffer.alloc(5 + 5);
  exec.write('E', 0);
  exec.writeInt32BE(9, 1);
  exec.writeInt32BE(0x7fffffff, 6); // portal "", max rows
  return Buffer.concat([fe.query(failing), typed('d', Buffer.alloc(3175, 0x41)), exec, fe.sync()]);
}

// What scopegate sends Postgres for a refused statement inside a transaction block.
const REFUSAL = `DO $scopegate$ BEGIN RAISE EXCEPTION USING ERRCODE = '42601', MESSAGE = 'unparseable statement: syntax error at or near "\u{2A157}"', HINT = 'scopegate only forwards statements the PostgreSQL parser accepts'; END $scopegate$`;

describe('an unnamed portal the client never bound', () => {
  describe('PostgreSQL 18.4 directly', () => {
    let db: TestPostgres;
    before(async () => { db = await startPostgres({ authMethod: 'password' }); });
    after(async () => { await db?.stop(); });

    it('crashes on Execute("") after a failed simple Query in a transaction block (why scopegate answers it)', async () => {
      const raw = await rawSuperuserLogin(db.port);
      await raw.query('BEGIN');
      raw.write(sequence(REFUSAL));
      await raw.readUntilClosed(10_000);
      // The postmaster restarts every backend after a crash: a new login fails or is refused for a while.
      const down = await db.sql('SELECT 1').then(() => false, () => true);
      assert.equal(down, true, 'the server went through crash recovery');
      await waitFor(() => db.sql('SELECT 1').then(() => true, () => false), 'the server back after recovery', 30_000);
    });
  });

  describe('through scopegate', () => {
    let fx: Fixture;
    before(async () => { fx = await startFixture({ poolSize: 1 }); });
    after(async () => { await fx?.stop(); });

    it('refuses the same client bytes (25P02 in the aborted transaction), and the server and the next client are fine', async () => {
      const { raw, login } = await rawLogin(fx.sg.port, 'mallory', await fx.token('orders:read', 'mallory'));
      assert.equal(login.find((m) => m.type === 'E'), undefined);
      await raw.query('BEGIN');
      // An unparseable text: scopegate refuses it with the DO block above, inside the transaction.
      raw.write(sequence('\u{2A157}'));
      // Two answers: the refused Query's ReadyForQuery, then the Sync's.
      const got = [...await raw.readUntilReady(10_000), ...await raw.readUntilReady(10_000)];
      const errors = got.filter((m) => m.type === 'E').map((m) => errorFields(m.body).C);
      // In the aborted transaction the refusal is Postgres's own answer there (what it says to
      // an Execute in that state: the walk that crashes is the one deciding it).
      assert.deepEqual(errors, ['42601', '25P02']);
      assert.equal((await raw.query('ROLLBACK')).find((m) => m.type === 'E'), undefined);
      raw.close();
      // The same server connection (pool of one) serves the next client.
      const c = await fx.client('orders:read', { sub: 'next' });
      assert.equal((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 10);
      assert.equal((await fx.su("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend'")).rows[0].n >= 1, true);
    });

    it('answers Execute("") outside a transaction block with 34000, as Postgres does', async () => {
      const { raw, login } = await rawLogin(fx.sg.port, 'mallory', await fx.token('orders:read', 'mallory'));
      assert.equal(login.find((m) => m.type === 'E'), undefined);
      raw.write(Buffer.concat([fe.execute(), fe.sync()]));
      const got = await raw.readUntilReady(10_000);
      assert.deepEqual(got.filter((m) => m.type === 'E').map((m) => errorFields(m.body).C), ['34000']);
      raw.close();
    });

    it('still runs a portal the client bound, in every driver shape (Bind, Describe, Execute)', async () => {
      const c = await fx.client('orders:read', { sub: 'driver' });
      assert.equal((await c.query({ text: 'SELECT total::int AS t FROM orders WHERE id = $1', values: [2] })).rows[0].t, 20);
      await c.query('BEGIN');
      assert.equal((await c.query({ text: 'SELECT $1::int AS v', values: [7] })).rows[0].v, 7);
      await c.query('COMMIT');
    });
  });
});
