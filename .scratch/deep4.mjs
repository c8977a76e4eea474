import { PolicyStore } from '/work/main/dist/src/policy/store.js';
import { initParser } from '/work/main/dist/src/policy/parse.js';
await initParser(); const W = await import('/work/main/dist/src/policy/wasm.js');
const store = PolicyStore.load('/work/main/config/policy-tenants.yaml');
for (const n of [1500, 2000, 2500, 3000, 4000]) {
  for (const [name, t] of [['plus', 'SELECT ' + Array(n).fill('1').join('+') + ' FROM orders'], ['paren', 'SELECT ' + '('.repeat(n/2) + '1' + ')'.repeat(n/2)+ ' FROM orders'], ['sub', 'SELECT ' + '(SELECT '.repeat(n/10) + '1' + ')'.repeat(n/10)]]) {
  try { const d = store.check(t, ['orders:read'], {tenant_id: 1}); console.log(name, n, t.length, d.allowed, d.reason, d.error?.message.slice(0,70), W.wasmReplacements()); } catch (e) { console.log(name, n, t.length, 'THROW', e.message.slice(0,60)); }
}}
