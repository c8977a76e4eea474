import { initWasm, parseSync, wasmReplacements } from '/work/main/dist/src/policy/wasm.js';
await initWasm();
for (const n of [1000, 10000, 100000, 300000]) {
  for (const [name, t] of [['parens', 'SELECT ' + '('.repeat(n) + '1' + ')'.repeat(n)], ['minus', 'SELECT ' + '-'.repeat(n) + '1'], ['arr', 'SELECT ' + 'ARRAY['.repeat(n) + '1' + ']'.repeat(n)], ['not', 'SELECT ' + 'NOT '.repeat(n) + 'true']]) {
    const s = Date.now();
    try { parseSync(t); console.log(name, n, 'ok', Date.now()-s); } catch (e) { console.log(name, n, e.constructor.name, e.message.slice(0,80), Date.now()-s, 'repl', wasmReplacements()); }
  }
}
try { parseSync('SELECT 1'); console.log('after: ok'); } catch (e) { console.log('after', e.message); }
