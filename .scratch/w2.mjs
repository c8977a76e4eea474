import { Worker } from 'node:worker_threads';
const w = new Worker(new URL('/work/main/dist/src/policy/decision-worker.js', 'file://'), {});

w.on('message', (m) => console.log('msg', m));
w.on('exit', (c) => console.log('exit', c));
w.unref(); console.log('created');
