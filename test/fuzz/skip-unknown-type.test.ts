// Concern: An unknown message type is refused with FATAL 08P01 in every phase, also while scopegate skips to Sync after its own refusal, as PostgreSQL does.
/**
 * Found by test/fuzz/protocol.fuzz.test.ts (shrunk: state=ext-error failingParse="SELEC
 * broken", steps: unknown-type(0x0), Close(S, "")).
 *
 * Cause: ClientSession.onMessage returns early in Phase.SkippingToSync for every message but
 * Sync, before the switch whose default case refuses unknown types. PostgreSQL validates the
 * type in SocketBackend before its ignore_till_sync check, so it answers FATAL 08P01
 * "invalid frontend message type" even while skipping. scopegate drops the message and
 * goes on waiting for Sync: the client is neither answered nor closed.
 *
 * Fix (client-session.ts, SkippingToSync branch of onMessage): before dropping,
 * refuse a type that is not one of B C D E F H P Q S X c d f (throw the same SqlError as the
 * default case); Terminate (X) should also end the session there (PostgreSQL resets
 * ignore_till_sync on Terminate).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { errorFields, fe, rawLogin, typed } from '../harness/rawclient.js';
import { startFixture, type Fixture } from '../scope.fixture.test.js';

describe('unknown message types while skipping to Sync', () => {
  let fx: Fixture;
  before(async () => { fx = await startFixture({ poolSize: 1 }); });
  after(async () => { await fx?.stop(); });

  it('Parse refused by scopegate, then an unknown type before Sync: FATAL 08P01 and the close', async () => {
    const { raw, login } = await rawLogin(fx.sg.port, 'alice', await fx.token('orders:read'));
    assert.equal(login.find((m) => m.type === 'E'), undefined);
    raw.write(fe.parse('SELEC broken'));
    assert.equal((await raw.read(5_000)).type, 'E');
    raw.write(Buffer.concat([typed('\u0000'), fe.sync()]));
    const got = await raw.readUntilClosed(5_000);
    const e = got.find((m) => m.type === 'E');
    assert.ok(e !== undefined, `an ErrorResponse, got ${got.map((m) => m.type).join('')}`);
    assert.equal(errorFields(e.body).C, '08P01');
    assert.equal(errorFields(e.body).S, 'FATAL');
  });
});
