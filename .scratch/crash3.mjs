import { startPostgres, SUPERPASS } from '/work/main/dist/test/harness/postgres.js';
import { RawClient, startupPacket, typed, fe } from '/work/main/dist/test/harness/rawclient.js';
const pg = await startPostgres({ authMethod: 'password' });
async function conn() { const raw = await RawClient.connect(pg.port); raw.write(startupPacket({ user: 'postgres', database: 'postgres' })); await raw.read(5000); raw.write(typed('p', Buffer.from(SUPERPASS + '\0'))); await raw.readUntilReady(5000); return raw; }
const D = `DO $scopegate$ BEGIN RAISE EXCEPTION USING ERRCODE = '42601', MESSAGE = 'unparseable statement: syntax error at or near "\u{2A157}"', HINT = 'scopegate only forwards statements the PostgreSQL parser accepts'; END $scopegate$`;
const variants = {
  uniExtTx: async (raw) => { await raw.query('BEGIN'); raw.write(Buffer.concat([fe.parse(D), fe.bind(), fe.execute(), typed('f', Buffer.from('fuzz probe\0')), fe.sync(), fe.query('ROLLBACK')])); },
  uniSimple: async (raw) => { raw.write(Buffer.concat([fe.query(D)])); },
  uniSelect: async (raw) => { raw.write(Buffer.concat([fe.query("SELECT 'a' \u{2A157}")])); },
  doExtInTx: async (raw) => { await raw.query('BEGIN'); raw.write(Buffer.concat([fe.parse("DO $scopegate$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = 'x'; END $scopegate$"), fe.bind(), fe.execute(), typed('f', Buffer.from('fuzz probe\0')), fe.sync(), fe.query('ROLLBACK')])); },
  doExtNoTx: async (raw) => { raw.write(Buffer.concat([fe.parse("DO $scopegate$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = 'x'; END $scopegate$"), fe.bind(), fe.execute(), fe.sync()])); },
  doSimpleInTx: async (raw) => { await raw.query('BEGIN'); raw.write(Buffer.concat([fe.query("DO $scopegate$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = 'x'; END $scopegate$"), fe.query('ROLLBACK')])); },
};
for (const [name, f] of Object.entries(variants)) {
  for (let i = 0; i < 3; i++) {
    const raw = await conn();
    await f(raw);
    let res;
    try { res = (await raw.readUntilReady(3000)).map(m => m.type).join(''); } catch (e) { res = 'read: ' + e.message; }
    try { await raw.readUntilReady(1000); } catch {}
    let alive; try { alive = (await pg.sql('SELECT 1 AS x')).rows[0].x; } catch (e) { alive = e.message; }
    console.log(name, i, res, 'alive:', alive);
    raw.close();
  }
}
await pg.stop();
