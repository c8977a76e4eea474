import { readFileSync } from 'node:fs';
import { startPostgres, SUPERPASS } from '/work/main/dist/test/harness/postgres.js';
import { RawClient, startupPacket, typed, fe } from '/work/main/dist/test/harness/rawclient.js';
const pg = await startPostgres({ authMethod: 'password' });
async function conn() { const raw = await RawClient.connect(pg.port); raw.write(startupPacket({ user: 'postgres', database: 'postgres' })); await raw.read(5000); raw.write(typed('p', Buffer.from(SUPERPASS + '\0'))); await raw.readUntilReady(5000); return raw; }
const b = Buffer.from(readFileSync('/tmp/chunk45.hex', 'utf8'), 'hex');
const msgs = []; for (let off = 0; off + 5 <= b.length;) { const n = 1 + b.readInt32BE(off + 1); msgs.push(b.subarray(off, off + n)); off += n; }
for (const drop of process.argv.slice(2)) {
  const d = drop.split(',').map(Number);
  const raw = await conn();
  raw.write(Buffer.concat([fe.query('BEGIN'), ...msgs.filter((_, i) => !d.includes(i))]));
  try { await raw.readUntilClosed(1500); } catch {}
  let ok; try { await pg.sql('SELECT 1'); ok = 'alive'; } catch (e) { ok = 'CRASHED'; }
  console.log('drop', drop, ok);
  raw.close();
  await new Promise(r => setTimeout(r, 2500));
}
await pg.stop();
