// Concern: with pool_size 1, a client that sends Parse/Bind/Execute without Sync (and then nothing) holds the only server connection: the others get 53300 after query_wait_timeout (an error, not a hang), their sessions stay usable, and they are served once it syncs or leaves.
/**
 * In transaction mode a server connection belongs to a client until the server is idle outside
 * a transaction, and without a Sync it never is. query_wait_timeout is what bounds the others'
 * wait (checked once a second, so a client may wait up to query_wait_timeout + 1 s).
 * idle_transaction_timeout is off here (0, the default); with it set the holder is ended
 * (test/faults/unsynced-idle-timeout.test.ts).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fe, RawClient, waitFor } from '../harness/rawclient.js';
import { hsToken, rawLogin, startFaultFixture, type FaultFixture } from './support.js';

const WAIT_TIMEOUT_MS = 2000;

describe('an extended-protocol batch without Sync on a pool of 1', { timeout: 120_000 }, () => {
  let fx: FaultFixture;
  before(async () => {
    fx = await startFaultFixture({ poolSize: 1, pool: { query_wait_timeout: `${WAIT_TIMEOUT_MS}ms`, idle_transaction_timeout: 0 } });
  });
  after(async () => { await fx?.stop(); });

  /** A raw client that sent Parse/Bind/Execute and no Sync; resolves once it holds the server connection. */
  async function holder(sub: string): Promise<RawClient> {
    const { raw } = await rawLogin(fx.sg.port, sub, await hsToken(sub));
    raw.write(Buffer.concat([fe.parse('SELECT 1 AS one'), fe.bind(), fe.execute()]));
    await waitFor(async () => (await fx.serverConnections()).some((c) => c.xact), 'the batch running on the only server connection');
    return raw;
  }

  it('others get 53300 after query_wait_timeout and are served once the holder sends its Sync', async (t) => {
    const raw = await holder('nosync');
    let holderClosed = false;
    void raw.closed.then(() => { holderClosed = true; });
    const other = await fx.connect('other');
    const t0 = Date.now();
    const err = await other.query('SELECT 1').then(() => null, (e: unknown) => e as { code?: string; message?: string; hint?: string });
    const waited = Date.now() - t0;
    assert.ok(err !== null, 'the other client was served while the only connection was held');
    t.diagnostic(`the other client waited ${waited} ms (query_wait_timeout ${WAIT_TIMEOUT_MS} ms) and got ${err.code}: ${err.message} (hint: ${err.hint}); the holder ${holderClosed ? 'was closed' : 'still holds the connection'}`);
    assert.equal(err.code, '53300');
    assert.match(err.message ?? '', /query_wait_timeout/);
    // The holder's batch completes when it syncs: its results, then the connection is free.
    raw.write(fe.sync());
    const got = await raw.readUntilReady();
    assert.deepEqual(got.map((m) => m.type), ['1', '2', 'D', 'C', 'Z']);
    // The other client's session survived its 53300 and is served now.
    assert.equal((await other.query('SELECT 2 AS v')).rows[0].v, 2);
    raw.close();
    await other.end();
  });

  it('once the holder disconnects, its batch is synced and the connection serves the next client', async (t) => {
    const raw = await holder('nosync-leaves');
    const other = await fx.connect('other-2');
    const waiting = other.query('SELECT 3 AS v');
    const t0 = Date.now();
    raw.close();
    assert.equal((await waiting).rows[0].v, 3);
    t.diagnostic(`served ${Date.now() - t0} ms after the holder left`);
    await other.end();
    await waitFor(async () => (await fx.serverConnections()).every((c) => c.state === 'idle' && !c.xact), 'the connection idle');
  });
});
