import { parseSync, loadModule } from 'libpg-query';
import { PolicyStore } from '/work/main/dist/src/policy/store.js';
import { initParser } from '/work/main/dist/src/policy/parse.js';
await loadModule(); await initParser();
const store = PolicyStore.load('/work/main/config/policy-tenants.yaml');
const scopes = store.policy.scopes.map(s=>s.name);
console.log(scopes);
function t(f){const s=process.hrtime.bigint(); const r=f(); return [Number(process.hrtime.bigint()-s)/1e6, r];}
for (const n of [65536, 262144, 1<<20]) {
  let s='SELECT * FROM orders WHERE '; let i=0; while (s.length<n) s+=`id = ${i++} OR `; s+='false';
  const tree = parseSync(s); const js = JSON.stringify(tree);
  const [tj] = t(()=>JSON.parse(js));
  const [tc, d] = t(()=>store.check(s, scopes, {tenant_id: 1, org: 'acme', tenant: 'a'}));
  console.log(n, 'json', js.length, tj.toFixed(1), 'check', tc.toFixed(1), d.allowed, d.reason.slice(0,80), d.rewritten?.length);
}
