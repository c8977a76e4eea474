import { readFileSync } from 'node:fs';
import { startPostgres, SUPERPASS } from '/work/main/dist/test/harness/postgres.js';
import { RawClient, startupPacket, typed, fe } from '/work/main/dist/test/harness/rawclient.js';
const pg = await startPostgres({ authMethod: 'password' });
async function conn() { const raw = await RawClient.connect(pg.port); raw.write(startupPacket({ user: 'postgres', database: 'postgres' })); await raw.read(5000); raw.write(typed('p', Buffer.from(SUPERPASS + '\0'))); await raw.readUntilReady(5000); return raw; }
const b = Buffer.from(readFileSync('/tmp/chunk45.hex', 'utf8'), 'hex');
const msgs = []; for (let off = 0; off + 5 <= b.length;) { const n = 1 + b.readInt32BE(off + 1); msgs.push(b.subarray(off, off + n)); off += n; }
console.log(msgs.map(m => String.fromCharCode(m[0])).join(''));
async function crashes(sel) {
  const raw = await conn();
  raw.write(Buffer.concat([fe.query('BEGIN'), ...sel.map(i => msgs[i])]));
  await new Promise(r => setTimeout(r, 300));
  let ok; try { await pg.sql('SELECT 1'); ok = true; } catch { ok = false; }
  raw.close();
  if (!ok) await new Promise(r => setTimeout(r, 2500));
  return !ok;
}
let sel = msgs.map((_, i) => i);
console.log('all', await crashes(sel));
for (let i = sel.length - 1; i >= 0; i--) { const t = sel.filter(x => x !== sel[i]); if (await crashes(t)) sel = t; }
console.log('minimal', sel, sel.map(i => [String.fromCharCode(msgs[i][0]), msgs[i].subarray(5, 80).toString('latin1')]));
await pg.stop();
