// Concern: When scopegate ends a session while reading a chunk, the messages of that chunk already accounted for must still reach the server, or the server connection waits 30 s for answers that never come.
/**
 * Found by test/fuzz/protocol.fuzz.test.ts (shrunk: state=tx, steps Query("SELECT 1") then
 * an unknown message type in the same write; also Query + Terminate, Query + a malformed
 * message, Query + a bad length field).
 *
 * Cause: ClientSession.onData -> framer.push -> onMessage -> dispatch calls b.noteSent()
 * (one ReadyForQuery owed) and appends the message to the run buffer; the next message
 * of the chunk throws (FATAL 08P01) or is Terminate, and the run is never flushed (onData's
 * catch calls fatal() without flushRun(); terminate() abandons the backend before the
 * flushRun() after framer.push, which then finds this.backend === null and drops the run).
 * The janitor (drainAndRelease) then waits for a ReadyForQuery that the server will never
 * send, until DRAIN_TIMEOUT_MS (30 s) closes the connection: with pool_size 1 every other
 * client waits 30 s.
 *
 * Fix (client-session.ts): write what was accounted for before giving the backend
 * up: in onData's catch, and in terminate()/closeWith() before abandonBackend(), call
 * this.flushRun() while this.backend is still set (the bytes are whole messages: the
 * server answers them, and the janitor's wait ends normally).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { errorFields, fe, rawLogin, typed } from '../harness/rawclient.js';
import { startFixture, type Fixture } from '../scope.fixture.test.js';

describe('a chunk ending the session still sends what was accounted for', () => {
  let fx: Fixture;
  before(async () => { fx = await startFixture({ poolSize: 1 }); });
  after(async () => { await fx?.stop(); });

  for (const [what, tail] of [
    ['an unknown message type', typed('\u0000')],
    ['Terminate', fe.terminate()],
    ['a length field below 4', Buffer.from([0x51, 0, 0, 0, 1])],
  ] as const) {
    it(`BEGIN, then Query + ${what} in one write: the next client is served at once`, async () => {
      const { raw, login } = await rawLogin(fx.sg.port, 'alice', await fx.token('orders:read'));
      assert.equal(login.find((m) => m.type === 'E'), undefined);
      await raw.query('BEGIN');
      raw.write(Buffer.concat([fe.query('SELECT 1'), tail]));
      const got = await raw.readUntilClosed(5_000);
      const e = got.find((m) => m.type === 'E');
      if (e !== undefined) assert.equal(errorFields(e.body).S, 'FATAL');
      const t0 = Date.now();
      const c = await fx.client('orders:read', { sub: 'next', extra: { query_timeout: 5_000 } });
      assert.equal((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 10);
      await c.end();
      console.log(`next client served after ${Date.now() - t0} ms`);
    });
  }

  // Found by the fuzz at full size (seed 2, run 3750): the COPY reached the server, its
  // CopyInResponse came after the janitor had taken over, and nothing ended it.
  it('BEGIN, then COPY FROM STDIN + a message past max_packet_size in one write: the COPY is ended and the next client served', async () => {
    const { raw, login } = await rawLogin(fx.sg.port, 'alice', await fx.token('admin'));
    assert.equal(login.find((m) => m.type === 'E'), undefined);
    await raw.query('BEGIN');
    const oversized = Buffer.from([0x51, 0x7f, 0, 0, 0]); // a Query announcing ~2 GB
    raw.write(Buffer.concat([fe.query('COPY customers (name) FROM STDIN'), oversized]));
    const got = await raw.readUntilClosed(5_000);
    assert.equal(errorFields(got.find((m) => m.type === 'E')!.body).C, '08P01');
    const c = await fx.client('orders:read', { sub: 'after-copy', extra: { query_timeout: 5_000 } });
    assert.equal((await c.query('SELECT count(*)::int AS n FROM customers')).rows[0].n, 3, 'the COPY was ended and rolled back');
    await c.end();
  });

  // Found by the fuzz at full size (seed 2, run 14198): a Sync inside a COPY begun by Execute
  // is ignored by the server, which then skips to the next Sync once the COPY fails; counted as
  // the batch's end, the next answers were misread and the session hung.
  it('a Sync inside COPY FROM STDIN begun by Execute closes that client and connection; the next client is served', async () => {
    const { raw, login } = await rawLogin(fx.sg.port, 'alice', await fx.token('admin'));
    assert.equal(login.find((m) => m.type === 'E'), undefined);
    raw.write(Buffer.concat([fe.parse('COPY customers (name) FROM STDIN'), fe.bind(), fe.execute()]));
    for (let m = await raw.read(5_000); m.type !== 'G'; m = await raw.read(5_000)) assert.notEqual(m.type, 'E'); // until CopyInResponse
    raw.write(Buffer.concat([fe.sync(), typed('f', Buffer.alloc(0)), fe.sync()]));
    const got = await raw.readUntilClosed(5_000);
    assert.equal(errorFields(got.filter((m) => m.type === 'E').at(-1)!.body).S, 'FATAL');
    const c = await fx.client('orders:read', { sub: 'after-sync', extra: { query_timeout: 5_000 } });
    assert.equal((await c.query('SELECT count(*)::int AS n FROM customers')).rows[0].n, 3);
    await c.end();
  });
});
