/**
 * A statement refused inside a transaction: the server raises the refusal (so the
 * transaction aborts as in Postgres), but the client sees scopegate's plain message, code
 * and hint, with no CONTEXT naming the DO block that raised it; the server's own errors keep
 * their CONTEXT.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { runProcess } from './harness/process.js';
import { errorOf, startFixture, type Fixture } from './scope.fixture.test.js';

const DENIED = 'permission denied: select on public.secrets';

describe('refusals inside a transaction', { timeout: 120_000 }, () => {
  let fx: Fixture;
  before(async () => { fx = await startFixture(); });
  after(async () => { await fx?.stop(); });

  for (const extended of [false, true]) {
    test(`${extended ? 'extended' : 'simple'} protocol: the plain message, no CONTEXT, and the transaction is aborted`, async () => {
      const c = await fx.client('orders:read', { sub: `refusal-${extended ? 'x' : 's'}` });
      await c.query('BEGIN');
      await c.query('SELECT id FROM orders');
      const e = await errorOf(() => (extended ? c.query({ text: 'SELECT value FROM secrets WHERE id = $1', values: [1] }) : c.query('SELECT value FROM secrets')));
      assert.equal(e.code, '42501');
      assert.equal(e.message, DENIED);
      assert.equal(e.hint, 'scope "admin" grants it');
      assert.equal(e.where, undefined, `CONTEXT: ${e.where}`);
      assert.equal(e.file, undefined, 'no source location of the RAISE');
      assert.equal(e.routine, undefined);
      // Raised by the server: the transaction is really aborted, as Postgres would have it.
      assert.equal((await errorOf(() => c.query('SELECT id FROM orders'))).code, '25P02');
      await c.query('ROLLBACK');
      assert.equal((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n > 0, true);
    });
  }

  test('psql shows the refusal without CONTEXT', async () => {
    const token = await fx.token('orders:read', 'refusal-psql');
    const r = await runProcess('psql', [
      `host=127.0.0.1 port=${fx.sg.port} dbname=app user=refusal-psql`,
      '-X', '-v', 'VERBOSITY=default', '-c', 'BEGIN', '-c', 'SELECT value FROM secrets', '-c', 'ROLLBACK',
    ], { PGPASSWORD: token });
    assert.match(r.err, /ERROR: {2}permission denied: select on public\.secrets/);
    assert.match(r.err, /HINT: {2}scope "admin" grants it/);
    assert.doesNotMatch(r.err, /CONTEXT|inline_code_block|PL\/pgSQL/);
    assert.doesNotMatch(r.out, /launch-code/);
  });

  test("the server's own errors inside a transaction keep their CONTEXT", async () => {
    const c = await fx.client('orders:write', { sub: 'refusal-own' });
    await c.query('BEGIN');
    // A foreign key violation inside a granted function: Postgres's error, with Postgres's CONTEXT.
    const e = await errorOf(() => c.query('SELECT public.place_order(999999, 1)'));
    assert.equal(e.code, '23503');
    assert.match(String(e.where), /place_order/);
    await c.query('ROLLBACK');
  });
});
