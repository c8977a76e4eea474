import { startPostgres, SUPERPASS } from '/work/main/dist/test/harness/postgres.js';
import { RawClient, startupPacket, typed, fe } from '/work/main/dist/test/harness/rawclient.js';
const pg = await startPostgres({ authMethod: 'password' });
async function conn() { const raw = await RawClient.connect(pg.port); raw.write(startupPacket({ user: 'postgres', database: 'postgres' })); await raw.read(5000); raw.write(typed('p', Buffer.from(SUPERPASS + '\0'))); await raw.readUntilReady(5000); return raw; }
const exec = (portal, n) => { const b = Buffer.alloc(portal.length + 5); b.write(portal); b.writeInt32BE(n, portal.length + 1); return typed('E', b); };
const A = typed('d', Buffer.alloc(300, 0x41));
const C45 = Buffer.from((await import('node:fs')).readFileSync('/tmp/chunk45.hex', 'utf8'), 'hex');
const variants = {
  c45: [fe.query('BEGIN'), C45],
  c45b: [fe.query('BEGIN'), C45],
  uafDo: [fe.query('BEGIN'), fe.query("DO $$ BEGIN RAISE EXCEPTION 'x'; END $$"), A, exec('', 0x7fffffff), fe.sync()],
  uafDiv: [fe.query('BEGIN'), fe.query("SELECT 1/0"), A, exec('', 0), fe.sync()],
  uafQ: [fe.query('BEGIN'), fe.query("SELECT 1/0"), fe.query('SELECT ' + "'" + 'A'.repeat(300) + "'"), exec('', 0), fe.sync()],
  full: [fe.query('BEGIN'), fe.query("DO $$ BEGIN RAISE EXCEPTION 'x'; END $$"), typed('d', Buffer.from('AAAA')), exec('', 0x7fffffff), fe.sync()],
  noCopy: [fe.query('BEGIN'), fe.query("DO $$ BEGIN RAISE EXCEPTION 'x'; END $$"), exec('', 0x7fffffff), fe.sync()],
  noTx: [fe.query("DO $$ BEGIN RAISE EXCEPTION 'x'; END $$"), exec('', 0x7fffffff), fe.sync()],
  selectErr: [fe.query('BEGIN'), fe.query("SELECT 1/0"), exec('', 0), fe.sync()],
  plainSel: [fe.query("SELECT 1"), exec('', 0), fe.sync()],
};
for (const [name, parts] of Object.entries(variants)) {
  const raw = await conn();
  raw.write(Buffer.concat(parts));
  let res; try { res = (await raw.readUntilClosed(1500)).map(m => m.type).join(''); } catch (e) { res = 'open: ' + e.message; }
  let alive; try { alive = (await pg.sql('SELECT 1 AS x')).rows[0].x; } catch (e) { alive = e.message; }
  console.log(name, res, 'alive:', alive);
  raw.close();
  await new Promise(r => setTimeout(r, 1500));
}
await pg.stop();
