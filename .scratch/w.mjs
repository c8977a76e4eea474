import { DecisionThreads } from '/work/main/dist/src/policy/decision-threads.js';
import { createLogger } from '/work/main/dist/src/log.js';
const t = new DecisionThreads(2, 4096, null, createLogger('silent'));
console.log('created');
