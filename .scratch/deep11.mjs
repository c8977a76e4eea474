import * as W from '/work/main/dist/src/policy/wasm.js';
import * as L from 'libpg-query';
await W.initWasm(); await L.loadModule();
await new Promise(r => setTimeout(r, 300));
function depth() { let d = 0; function f() { d++; f(); } try { f(); } catch {} return d; }
const small = 'SELECT ' + Array(100).fill('1').join('+');
console.log('js depth', depth());
const bigs = ['SELECT ' + Array(12000).fill('1').join('+'), "SELECT j" + "->'a'".repeat(20000)];
for (const b of bigs) { try { W.parseSync(b); } catch (e) { console.log('big', e.message); } await new Promise(r => setTimeout(r, 300)); }
console.log('js depth', depth());
for (const g of ['parseSync','fingerprintSync','normalizeSync']) { try { W[g](small); console.log('W', g, 'ok'); } catch (e) { console.log('W', g, e.message.slice(0,60)); } }
for (const g of ['parseSync','fingerprintSync','normalizeSync']) { try { L[g](small); console.log('L untouched instance', g, 'ok'); } catch (e) { console.log('L', g, e.message.slice(0,60)); } }
