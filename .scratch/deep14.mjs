import * as W from '/work/main/dist/src/policy/wasm.js';
import { Worker } from 'node:worker_threads';
await W.initWasm();
const small = 'SELECT ' + Array(100).fill('1').join('+');
W.fingerprintSync("SELECT j" + "->'a'".repeat(20000));
try { W.fingerprintSync(small); console.log('main ok'); } catch (e) { console.log('main poisoned:', e.message.slice(0,60)); }
const code = `import('/work/main/dist/src/policy/wasm.js').then(async W => { await W.initWasm(); const small = 'SELECT ' + Array(100).fill('1').join('+'); const r=[]; for (const g of ['parseSync','fingerprintSync','normalizeSync']) { try { W[g](small); r.push('ok'); } catch (e) { r.push(e.message.slice(0,50)); } } require('worker_threads').parentPort.postMessage(r.join(' | ')); })`;
const w = new Worker(code, { eval: true });
w.on('message', m => { console.log('fresh worker:', m); w.terminate(); });
