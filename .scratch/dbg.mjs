import { startFixture } from '/work/main/dist/test/scope.fixture.test.js';
const fx = await startFixture({ poolSize: 3, config: { log: { level: 'debug' }, pool: { parser_threads: 2, parser_thread_min_size: 4096 } } });
const pad = (n, s) => ` /* ${s}${'x'.repeat(n)} */`;
const c = await fx.client('orders:read');
await c.query(`SELECT count(*)::int AS n, current_user AS u FROM orders${pad(4096, 'a')}`);
await c.query(`SELECT count(*)::int AS n, current_user AS u FROM orders${pad(4096, 'a')}`);
await c.query('SELECT 1');
await new Promise(r => setTimeout(r, 500));
const n0 = fx.sg.logs.length;
const c2 = await fx.client('orders:read');
try { await c2.query(`SELECT value FROM secrets${pad(4096, 'b')}`); } catch (e) { console.log(e.code); }
await new Promise(r => setTimeout(r, 500));
for (const l of fx.sg.logs.slice(n0)) console.log(JSON.stringify(l).slice(0, 250));
await fx.stop();
