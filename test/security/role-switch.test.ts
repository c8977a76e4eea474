// Concern: the role scopegate switched to inside a transaction is not trusted after the server may have undone it (ROLLBACK TO SAVEPOINT, ROLLBACK, COMMIT).
/**
 * Authenticator login, a token with read and write scopes. scopegate switches role inside a
 * transaction with set_config; a ROLLBACK TO SAVEPOINT undoes that switch on the server. The
 * statement after it must still run under the role of the scope that grants it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startFixture, type Fixture } from '../scope.fixture.test.js';

let fx: Fixture;

before(async () => {
  fx = await startFixture({ poolSize: 1 });
});

after(async () => {
  await fx?.stop();
});

describe('role switches undone by the server', () => {
  it('after ROLLBACK TO SAVEPOINT a read runs as the reader again, not as the role the savepoint restored', async () => {
    const c = await fx.client('orders:read orders:write', { sub: 'rw' });
    await c.query('BEGIN');
    assert.equal((await c.query("UPDATE orders SET status = status WHERE id = 1 RETURNING current_user AS u")).rows[0].u, 'app_writer');
    await c.query('SAVEPOINT s');
    assert.equal((await c.query('SELECT current_user AS u FROM orders LIMIT 1')).rows[0].u, 'app_reader');
    await c.query('ROLLBACK TO SAVEPOINT s');
    assert.equal((await c.query('SELECT current_user AS u FROM orders LIMIT 1')).rows[0].u, 'app_reader');
    await c.query('COMMIT');
    await c.end();
  });

  it('the same with the whole sequence in one pipelined message batch', async () => {
    const c = await fx.client('orders:read orders:write', { sub: 'rw2' });
    const results = await Promise.all([
      c.query('BEGIN'),
      c.query({ text: 'UPDATE orders SET status = status WHERE id = $1 RETURNING current_user AS u', values: [1] }),
      c.query('SAVEPOINT s'),
      c.query({ text: 'SELECT current_user AS u FROM orders WHERE id = $1', values: [1] }),
      c.query('ROLLBACK TO SAVEPOINT s'),
      c.query({ text: 'SELECT current_user AS u FROM orders WHERE id = $1', values: [2] }),
      c.query('COMMIT'),
    ]);
    assert.deepEqual([results[1]!.rows[0].u, results[3]!.rows[0].u, results[5]!.rows[0].u], ['app_writer', 'app_reader', 'app_reader']);
    await c.end();
  });
});
