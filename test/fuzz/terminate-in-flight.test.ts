// Concern: a client that sends a statement and Terminate in one write leaves its server connection to the janitor, which must finish it before anyone else gets it (found by the protocol fuzz suite).
/**
 * Shrunk from a fuzz case (seed 2, run 39821): Query("DISCARD ALL") then Terminate in one
 * write, from an admin token, on a pool of one. The statement needed a role switch in a round
 * trip of its own; the Terminate handed the connection to the janitor while that switch was
 * still in flight, the switch's answer then settled the janitor's count, and the waiting
 * bystander got the connection mid-answer ("internal query while the server is busy"). The
 * root: the messages after the Terminate were still read; the Sync borrowed a second
 * connection for the closed session and the second Terminate handed the first one to the
 * janitor during its preparation, so the bystander also saw another query's results.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fe, rawLogin } from '../harness/rawclient.js';
import { startFixture, type Fixture } from '../scope.fixture.test.js';

describe('a statement and Terminate in one write', () => {
  let fx: Fixture;
  before(async () => { fx = await startFixture({ poolSize: 1 }); });
  after(async () => { await fx?.stop(); });

  it('a statement that needs a role switch of its own, then Terminate: the switch finishes before the janitor takes over', async () => {
    for (let round = 0; round < 3; round++) {
      const { raw } = await rawLogin(fx.sg.port, 'leaver', await fx.token('orders:read admin', 'leaver'));
      // Runs as app_reader (the first scope) inside a transaction block...
      await raw.query('BEGIN');
      await raw.query('SELECT count(*) FROM orders');
      const bystander = fx.client('orders:read', { sub: 'bystander' });
      // ...then a statement only admin grants: a switch to app_admin in its own round trip.
      raw.write(Buffer.concat([fe.query('DELETE FROM secrets WHERE false'), fe.terminate()]));
      const c = await bystander;
      const r = await c.query("SELECT count(*)::int AS n, current_user AS role, current_setting('scopegate.sub') AS sub, now() = statement_timestamp() AS own_tx FROM orders");
      assert.deepEqual(r.rows[0], { n: 10, role: 'app_reader', sub: 'bystander', own_tx: true });
      await raw.closed;
      await c.end();
    }
  });

  for (const sql of ['DISCARD ALL', 'SELECT pg_sleep(0.05)', "SET work_mem = '3MB'", 'BEGIN']) {
    it(`${sql}: the next client on the pool of one is served as its own`, async () => {
      const bystander = await fx.client('orders:read', { sub: 'bystander' });
      const { raw } = await rawLogin(fx.sg.port, 'leaver', await fx.token('admin', 'leaver'));
      // The bystander's query waits for the one connection the leaver is about to hold.
      // The shrunk case's shape: what follows the first Terminate must not be read at all.
      raw.write(Buffer.concat([fe.query(sql), fe.terminate(), fe.sync(), fe.terminate()]));
      const r = await bystander.query("SELECT count(*)::int AS n, current_user AS role, current_setting('work_mem') AS work_mem, current_setting('scopegate.sub') AS sub FROM orders");
      assert.deepEqual(r.rows[0], { n: 10, role: 'app_reader', work_mem: '4MB', sub: 'bystander' });
      await raw.closed;
      const again = await bystander.query('SELECT 1 AS one');
      assert.equal(again.rows[0].one, 1);
      await bystander.end();
    });
  }
});
