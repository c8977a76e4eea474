// Concern: idle_transaction_timeout also ends a client that holds a server connection with an unsynced extended-protocol batch and then sends nothing.
/**
 * ClientSession arms idle_transaction_timeout at a ReadyForQuery with status T or E; a client that
 * sends Parse/Bind/Execute (or a pipeline ending in Flush) and then nothing never gets one. So a
 * batch without Sync arms the same timer when the client's input has been handled, refreshed by
 * every message the server sends the client; on expiry 25P03 FATAL, and the janitor syncs and
 * rolls back.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { errorFields, fe, waitFor } from '../harness/rawclient.js';
import { hsToken, rawLogin, startFaultFixture, type FaultFixture } from './support.js';

describe('idle_transaction_timeout for an unsynced batch', { timeout: 120_000 }, () => {
  let fx: FaultFixture;
  before(async () => {
    fx = await startFaultFixture({ poolSize: 1, pool: { query_wait_timeout: '20s', idle_transaction_timeout: '1s' } });
  });
  after(async () => { await fx?.stop(); });

  it('the holder is closed with 25P03 after idle_transaction_timeout and the waiting client is served', async () => {
    const { raw } = await rawLogin(fx.sg.port, 'nosync', await hsToken('nosync'));
    raw.write(Buffer.concat([fe.parse('SELECT 1 AS one'), fe.bind(), fe.execute()]));
    await waitFor(async () => (await fx.serverConnections()).some((c) => c.xact), 'the batch running');
    const other = await fx.connect('other');
    const waiting = other.query('SELECT 2 AS v');
    const got = await raw.readUntilClosed(10_000);
    const err = got.find((m) => m.type === 'E');
    assert.ok(err !== undefined, 'the holder got an ErrorResponse before the close');
    assert.equal(errorFields(err.body).C, '25P03');
    assert.equal((await waiting).rows[0].v, 2);
    await other.end();
  });
});
