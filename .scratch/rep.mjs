import { startFixture } from '/work/main/dist/test/scope.fixture.test.js';
import { RawClient, startupPacket, typed, fe } from '/work/main/dist/test/harness/rawclient.js';
const fx = await startFixture({ poolSize: 1, config: { log: { level: 'debug' } } });
const raw = await RawClient.connect(fx.sg.port);
raw.write(startupPacket({ user: 'fuzz', database: 'app' }));
await raw.read(5000);
raw.write(typed('p', Buffer.from(`${await fx.token('admin')}\0`)));
await raw.readUntilReady(5000);
await raw.query('BEGIN');
const n0 = fx.sg.logs.length;
raw.write(Buffer.concat([Buffer.from('45000000090000000000', 'hex'), Buffer.from('640000000931096f6e650a', 'hex')]));
await new Promise(r => setTimeout(r, 300));
raw.socket?.end?.(); raw.end?.(); raw.close?.();
await new Promise(r => setTimeout(r, 300));
const t0 = Date.now();
const c = await fx.client('orders:read', { sub: 'next', extra: { query_timeout: 8000 } });
try { console.log((await c.query('SELECT 1 AS x')).rows, Date.now() - t0); } catch (e) { console.log('next failed', e.message, Date.now() - t0); }
for (const l of fx.sg.logs.slice(n0)) console.log(JSON.stringify(l).slice(0, 200));
await fx.stop();
