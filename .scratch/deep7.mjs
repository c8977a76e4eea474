import * as L from 'libpg-query';
await L.loadModule();
for (const t of ['SELECT 1::int::int', "SELECT 1+1+1", "SELECT 'a' || 'b'", "SELEC x"]) {
  for (const f of ['fingerprintSync','normalizeSync','parseSync']) { try { const r = L[f](t); console.log(f, t, 'ok', String(r).slice(0,40)); } catch (e) { console.log(f, t, e.constructor.name, e.message); } }
}
