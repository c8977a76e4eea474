import { parseSync, fingerprintSync, normalizeSync, loadModule } from 'libpg-query';
import { PolicyStore } from '/work/main/dist/src/policy/store.js';
import { initParser } from '/work/main/dist/src/policy/parse.js';
await loadModule(); await initParser();
const store = PolicyStore.load('/work/main/config/policy.yaml');
const scopes = store.policy.scopes.map(s=>s.name);
function t(f){const s=process.hrtime.bigint(); const r=f(); return [Number(process.hrtime.bigint()-s)/1e6, r];}
const shapes = {
  manyStmts: (n) => { let s=''; let i=0; while (s.length<n) s+=`SELECT ${i++} FROM orders WHERE id = ${i};`; return s; },
  inList: (n) => { let s='SELECT * FROM orders WHERE id IN ('; let i=0; while (s.length<n) s+=`${i++},`; return s+'0)'; },
  orChain: (n) => { let s='SELECT * FROM orders WHERE '; let i=0; while (s.length<n) s+=`id = ${i++} OR `; return s+'false'; },
  strLit: (n) => `SELECT '${'x'.repeat(n)}'`,
};
for (const [name, mk] of Object.entries(shapes)) for (const n of [4096, 65536, 262144, 1<<20]) {
  const text = mk(n);
  const [tp] = t(()=>parseSync(text));
  const [tf] = t(()=>{try{return fingerprintSync(text)}catch{}});
  const [tn] = t(()=>{try{return normalizeSync(text)}catch{}});
  const [tc, d] = t(()=>store.check(text+' ', scopes.slice(0,2)));
  console.log(name, n, 'parse', tp.toFixed(1), 'fp', tf.toFixed(1), 'norm', tn.toFixed(1), 'check', tc.toFixed(1), d.allowed, d.reason.slice(0,60));
}
