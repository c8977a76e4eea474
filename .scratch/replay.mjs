import { readFileSync } from 'node:fs';
import { startPostgres } from '/work/main/dist/test/harness/postgres.js';
import { RawClient, startupPacket, typed } from '/work/main/dist/test/harness/rawclient.js';
import { ROLES_SQL, SCHEMA_SQL, AUTH_PASSWORD } from '/work/main/dist/test/scope.fixture.test.js';
import { FUZZ_SQL } from '/work/main/dist/test/fuzz/fuzz-env.js';
const pg = await startPostgres({ authMethod: 'password' });
await pg.sql(ROLES_SQL); await pg.sql('CREATE DATABASE app'); await pg.sql(SCHEMA_SQL, 'app'); await pg.sql(FUZZ_SQL, 'app');
const rows = readFileSync('/tmp/wire.log', 'utf8').trim().split('\n').map(l => l.split(' ')).filter(r => r[0] === process.argv[2]);
const raw = await RawClient.connect(pg.port);
raw.write(startupPacket({ user: 'authenticator', database: 'app' })); await raw.read(5000);
raw.write(typed('p', Buffer.from(AUTH_PASSWORD + '\0'))); await raw.readUntilReady(5000);
const from = Number(process.argv[3] ?? 3);
const pick = process.argv[4] ? process.argv[4].split(',').map(Number) : null;
const sel = pick ? pick.map(i => rows[i]) : rows.slice(from);
let k = 0;
for (const [, t, hex] of sel) {
  raw.write(Buffer.from(hex, 'hex'));
  await new Promise(r => setTimeout(r, 8));
  k++;
  let alive = true;
  if (k % 20 === 0 || k > sel.length - 6) { try { await pg.sql('SELECT 1'); } catch (e) { alive = false; console.log('DEAD after chunk', k - 1, t, hex.slice(0, 60)); break; } }
}
console.log('done', k);
await new Promise(r => setTimeout(r, 600000));
