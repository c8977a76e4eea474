import { initWasm, parseSync, wasmReplacements, wasmReady } from '/work/main/dist/src/policy/wasm.js';
await initWasm();
await new Promise(r => setTimeout(r, 500));
for (const n of [5000, 20000, 100000]) {
  const t = 'SELECT ' + Array(n).fill('1').join('+');
  try { parseSync(t); console.log(n, 'parse ok'); } catch (e) { console.log(n, e.constructor.name, e.message.slice(0,100), String(e.cause).slice(0,100), 'repl', wasmReplacements(), 'ready', wasmReady()); }
  await new Promise(r => setTimeout(r, 500));
  try { parseSync('SELECT 1'); console.log('after ok', wasmReady()); } catch (e) { console.log('after', e.message); }
}
