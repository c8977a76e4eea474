import { startPostgres, SUPERPASS } from '/work/main/dist/test/harness/postgres.js';
import { RawClient, startupPacket, typed, fe } from '/work/main/dist/test/harness/rawclient.js';
const pg = await startPostgres({ authMethod: 'password' });
const raw = await RawClient.connect(pg.port);
raw.write(startupPacket({ user: 'postgres', database: 'postgres' }));
console.log((await raw.read(5000)).type);
raw.write(typed('p', Buffer.from(SUPERPASS + '\0')));
await raw.readUntilReady(5000);
await raw.query('BEGIN');
const hex = ['5300000004', '450000000d667a5f63007fffffff'];
const p1 = Buffer.concat([Buffer.from('P'), Buffer.alloc(4), Buffer.from('\0DECLARE fz_c2 CURSOR FOR SELECT 1\0'), Buffer.from([0,3, 0,0,0,25, 0,0,0,25, 0,0,0,16])]); p1.writeInt32BE(p1.length - 1, 1);
const p2 = Buffer.concat([Buffer.from('P'), Buffer.alloc(4), Buffer.from('\0PREPARE fz_p AS SELECT 1\0'), Buffer.from([0,2, 0,0,0,16, 0,0,0,25])]); p2.writeInt32BE(p2.length - 1, 1);
raw.write(Buffer.concat([...hex.map(h => Buffer.from(h, 'hex')), p1, p2, fe.sync()]));
try { const m = await raw.readUntilReady(5000); console.log(m.map(x => x.type).join('')); } catch (e) { console.log('read', e.message); }
try { console.log((await pg.sql('SELECT 1 AS x')).rows); } catch (e) { console.log('after:', e.message); }
await pg.stop();
