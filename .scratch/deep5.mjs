import { initWasm, parseSync, wasmReplacements } from '/work/main/dist/src/policy/wasm.js';
await initWasm();
await new Promise(r => setTimeout(r, 300));
const shapes = {
  plus: n => 'SELECT ' + Array(n).fill('1').join('+'),
  paren: n => 'SELECT ' + '('.repeat(n) + '1' + ')'.repeat(n),
  sub: n => 'SELECT ' + '(SELECT '.repeat(n) + '1' + ')'.repeat(n),
  arr: n => 'SELECT ' + 'ARRAY['.repeat(n) + '1' + ']'.repeat(n),
  case: n => 'SELECT ' + 'CASE WHEN true THEN '.repeat(n) + '1' + ' END'.repeat(n),
  and: n => 'SELECT 1 WHERE ' + Array(n).fill('a=1').join(' AND '),
  neg: n => 'SELECT ' + '- '.repeat(n) + '1',
  cast: n => 'SELECT 1' + '::int'.repeat(n),
  coll: n => 'SELECT ' + 'f('.repeat(n) + '1' + ')'.repeat(n),
  idx: n => 'SELECT a' + '[1]'.repeat(n),
  jsonop: n => "SELECT j" + "->'a'".repeat(n),
};
for (const [name, mk] of Object.entries(shapes)) {
  let lo = 1, hi = 400000, found = null;
  // find smallest n that fails with replacement
  for (const n of [100, 300, 1000, 2000, 3000, 5000, 10000, 30000, 100000]) {
    const t = mk(n); const r0 = wasmReplacements();
    try { parseSync(t); } catch (e) { if (wasmReplacements() !== r0) { found = [n, t.length, e.message.slice(0,50)]; break; } }
    await new Promise(r => setTimeout(r, 150));
  }
  console.log(name, found);
  await new Promise(r => setTimeout(r, 150));
}
