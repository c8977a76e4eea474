import { PolicyStore } from '/work/main/dist/src/policy/store.js';
import { initParser } from '/work/main/dist/src/policy/parse.js';
import { classify } from '/work/main/dist/src/policy/session-effects.js';
await initParser();
const store = PolicyStore.load('/work/main/config/policy.yaml');
for (const n of [1000, 5000, 20000, 100000]) {
  const t = 'SELECT ' + Array(n).fill('1').join('+');
  const s = Date.now();
  try { const d = store.check(t, ['orders:read']); console.log(n, d.allowed, d.reason, d.error?.message?.slice(0,80), Date.now()-s); } catch (e) { console.log(n, 'THROW', e.constructor.name, e.message.slice(0,80)); }
  try { classify(t); console.log('classify ok'); } catch (e) { console.log(n, 'classify THROW', e.constructor.name, e.message.slice(0,80)); }
}
