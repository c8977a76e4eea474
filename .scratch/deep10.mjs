import * as W from '/work/main/dist/src/policy/wasm.js';
await W.initWasm();
await new Promise(r => setTimeout(r, 300));
const small = 'SELECT ' + Array(100).fill('1').join('+');
const bigs = ['SELECT ' + Array(12000).fill('1').join('+'), "SELECT j" + "->'a'".repeat(20000), "SELECT " + Array(9000).fill("'a'").join(' || ')];
for (let i = 0; i < 9; i++) {
  for (const f of ['parseSync','fingerprintSync','normalizeSync']) {
    const big = bigs[i % 3];
    const r0 = W.wasmReplacements();
    try { W[f](big); } catch (e) {}
    const failed = W.wasmReplacements() !== r0;
    await new Promise(r => setTimeout(r, 300));
    const res = [];
    for (const g of ['parseSync','fingerprintSync','normalizeSync']) { try { W[g](small); res.push('ok'); } catch (e) { res.push(e.message.slice(0,60)); } }
    console.log(i, f, 'failed', failed, res.join(' | '));
  }
}
