import * as W from '/work/main/dist/src/policy/wasm.js';
await W.initWasm();
await new Promise(r => setTimeout(r, 300));
const t = 'SELECT ' + Array(100).fill('1').join('+');
try { W.normalizeSync(t); console.log('fresh normalize ok'); } catch (e) { console.log('fresh', e.message, e.cause?.stack?.slice(0,300)); }
try { W.parseSync('SELECT ' + Array(12000).fill('1').join('+')); } catch (e) { console.log('big', e.message); }
await new Promise(r => setTimeout(r, 300));
for (let i = 0; i < 3; i++) { try { W.normalizeSync(t); console.log('after normalize ok'); } catch (e) { console.log('after', e.message, e.cause?.stack?.slice(0,400)); } await new Promise(r => setTimeout(r, 300)); }
