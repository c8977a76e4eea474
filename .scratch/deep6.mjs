import * as W from '/work/main/dist/src/policy/wasm.js';
await W.initWasm();
await new Promise(r => setTimeout(r, 300));
const shapes = {
  plus: n => 'SELECT ' + Array(n).fill('1').join('+'),
  sub: n => 'SELECT ' + '(SELECT '.repeat(n) + '1' + ')'.repeat(n),
  cast: n => 'SELECT 1' + '::int'.repeat(n),
  jsonop: n => "SELECT j" + "->'a'".repeat(n),
  and: n => 'SELECT 1 WHERE ' + Array(n).fill('a=1').join(' AND '),
  or: n => 'SELECT 1 WHERE ' + Array(n).fill('a=1').join(' OR '),
  concat: n => "SELECT " + Array(n).fill("'a'").join(' || '),
};
for (const f of ['parseSync', 'fingerprintSync', 'normalizeSync']) for (const [name, mk] of Object.entries(shapes)) {
  let found = null;
  for (let n = 100; n <= 20000; n = Math.ceil(n * 1.25)) {
    const t = mk(n); const r0 = W.wasmReplacements();
    try { W[f](t); } catch (e) { if (W.wasmReplacements() !== r0) { found = [n, t.length]; break; } }
    if (W.wasmReplacements() !== r0) await new Promise(r => setTimeout(r, 200));
  }
  console.log(f, name, found);
  await new Promise(r => setTimeout(r, 200));
}
