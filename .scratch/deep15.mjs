// poison inside a worker, then check that worker and a new one
import { Worker } from 'node:worker_threads';
const code = `import('/work/main/dist/src/policy/wasm.js').then(async W => { await W.initWasm(); const small = 'SELECT ' + Array(100).fill('1').join('+'); const P = require('worker_threads').parentPort; if (require('worker_threads').workerData) W.fingerprintSync("SELECT j" + "->'a'".repeat(20000)); const r=[]; for (const g of ['parseSync','fingerprintSync','normalizeSync']) { try { W[g](small); r.push('ok'); } catch (e) { r.push(e.message.slice(0,50)); } } P.postMessage(r.join(' | ')); })`;
const w = new Worker(code, { eval: true, workerData: true });
w.on('message', m => { console.log('poisoned worker:', m); w.terminate().then(() => { const w2 = new Worker(code, { eval: true, workerData: false }); w2.on('message', m2 => { console.log('new worker:', m2); w2.terminate(); }); }); });
