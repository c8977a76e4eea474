import * as W from '/work/main/dist/src/policy/wasm.js';
await W.initWasm();
await new Promise(r => setTimeout(r, 300));
const small = 'SELECT ' + Array(100).fill('1').join('+');
const b = "SELECT j" + "->'a'".repeat(20000);
for (const f of ['fingerprintSync', 'normalizeSync', 'parseSync']) {
  try { W[f](b); console.log(f, 'big ok'); } catch (e) { console.log(f, 'big', e.message.slice(0,80)); }
  await new Promise(r => setTimeout(r, 400));
  for (const g of ['parseSync','fingerprintSync','normalizeSync']) { try { W[g](small); console.log('  ', g, 'ok'); } catch (e) { console.log('  ', g, e.message.slice(0,60)); } await new Promise(r => setTimeout(r, 400)); }
}
