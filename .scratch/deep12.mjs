import * as W from '/work/main/dist/src/policy/wasm.js';
import { Worker } from 'node:worker_threads';
await W.initWasm();
await new Promise(r => setTimeout(r, 300));
function depth() { let d = 0; function f() { d++; f(); } try { f(); } catch {} return d; }
const small = 'SELECT ' + Array(100).fill('1').join('+');
console.log('js depth', depth());
const bigs = ['SELECT ' + Array(12000).fill('1').join('+'), "SELECT j" + "->'a'".repeat(20000), 'SELECT ' + Array(12000).fill('1').join('+')];
for (const b of bigs) { try { W.parseSync(b); } catch (e) { console.log('big', e.message); } await new Promise(r => setTimeout(r, 300)); }
console.log('js depth', depth(), 'repl', W.wasmReplacements());
for (const g of ['parseSync','fingerprintSync','normalizeSync']) { try { W[g](small); console.log('W', g, 'ok'); } catch (e) { console.log('W', g, e.message.slice(0,60)); } }
const w = new Worker(`import('/work/main/dist/src/policy/wasm.js').then(async W => { await W.initWasm(); const small = 'SELECT ' + Array(100).fill('1').join('+'); const r=[]; for (const g of ['parseSync','fingerprintSync','normalizeSync']) { try { W[g](small); r.push('ok'); } catch (e) { r.push(e.message.slice(0,50)); } } require('worker_threads').parentPort.postMessage(r.join(' | ')); })`, { eval: true });
w.on('message', m => { console.log('fresh worker:', m); w.terminate(); });
