import { PolicyStore } from '/work/main/dist/src/policy/store.js';
import { initParser } from '/work/main/dist/src/policy/parse.js';
import { classify } from '/work/main/dist/src/policy/session-effects.js';
import { wasmBroken } from '/work/main/dist/src/policy/wasm.js';
await initParser();
const N = Number(process.argv[2]);
const stores = { ex: PolicyStore.load('config/policy.yaml'), ten: PolicyStore.load('config/policy-tenants.yaml') };
const fill = (pre, unit, post) => { let s = pre; while ((s + unit + post).length < N) s += unit; return s + post; };
const shapes = {
  uplus: fill('SELECT ', '+', '1'), uminus: fill('SELECT ', '- ', '1'), not: fill('SELECT ', 'NOT ', 'true'),
  paren: (() => { const k = Math.floor((N - 10) / 2); return 'SELECT ' + '('.repeat(k) + '1' + ')'.repeat(k); })(),
  plus: fill('SELECT 1', '+1', ''), plusOrders: fill('SELECT id', '+1', ' FROM orders'),
  uplusOrders: fill('SELECT ', '+', 'id FROM orders'), cast: fill('SELECT 1', '::int', ''), json: fill('SELECT j', "->'a'", ''),
  sub: (() => { const k = Math.floor((N - 10) / 9); return 'SELECT ' + '(SELECT '.repeat(k) + '1' + ')'.repeat(k); })(),
  arr: (() => { const k = Math.floor((N - 10) / 7); return 'SELECT ' + 'ARRAY['.repeat(k) + '1' + ']'.repeat(k); })(),
  or: fill('SELECT id FROM orders WHERE ', 'id=1 OR ', 'false'),
  ind: fill('SELECT a', '[1]', ' FROM orders'),
};
for (const [name, t] of Object.entries(shapes)) for (const [pn, st] of Object.entries(stores)) {
  if (t.length >= N) { console.log('too long', name, t.length); continue; }
  let r;
  try { const d = st.check(t, ['orders:read', 'orders:write'], { tenant: 'acme', countries: '["UK"]' }); r = d.reason; classify(t); } catch (e) { r = 'THROW ' + e.message.slice(0, 40); }
  if (wasmBroken() !== null) { console.log('BROKEN at', name, pn, t.length, wasmBroken()); process.exit(1); }
  if (r === 'parser_failed') console.log(name, pn, t.length, r);
}
console.log('ok', N);
