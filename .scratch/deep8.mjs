import * as L from 'libpg-query';
await L.loadModule();
for (const t of ['SELECT ' + Array(100).fill('1').join('+'), "SELECT " + Array(100).fill("'a'").join(' || ')]) {
  for (const f of ['fingerprintSync','normalizeSync']) { try { const r = L[f](t); console.log(f, 'ok'); } catch (e) { console.log(f, e.constructor.name, e.message.slice(0,100)); } }
}
