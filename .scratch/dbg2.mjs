import { startFixture } from '/work/main/dist/test/scope.fixture.test.js';
const fx = await startFixture({ poolSize: 3, config: { pool: { parser_threads: 2, parser_thread_min_size: 4096 } } });
const c = await fx.client('orders:read');
for (const [name, mk] of [['plus', n => `SELECT ${Array(n).fill('1').join('+')} FROM orders`], ['sub', n => 'SELECT ' + '(SELECT '.repeat(n) + '1' + ')'.repeat(n)]]) for (const n of [1000, 1300, 1600, 2000, 5000, 20000, 50000, 100000]) {
  const t = mk(n);
  try { await c.query(t); console.log(name, n, t.length, 'ok'); } catch (e) { console.log(name, n, t.length, e.code, e.message.slice(0, 80)); }
}
console.log((await c.query('SELECT 1 AS x')).rows);
await fx.stop();
