/** A decision worker thread: the same parser, policy and catalog as the event loop, for big texts. */
import { parentPort } from 'node:worker_threads';
import { catalogFromData } from './catalog.js';
import { initParser, setParseCacheSize } from './parse.js';
import { classify, effectsToWire } from './session-effects.js';
import { PolicyStore } from './store.js';
import { wasmBroken } from './wasm.js';
import type { ToWorker, FromWorker } from './decision-messages.js';

const port = parentPort;
if (port === null) throw new Error('decision-worker.ts runs as a worker thread only');

// Each text comes here once and its decision is cached by the event loop: a tree is kept only
// from the decision to the effects of the same job.
setParseCacheSize(2);
let store: PolicyStore | null = null;

function reply(m: FromWorker): void {
  port!.postMessage(m);
}

function run(m: ToWorker): void {
  switch (m.kind) {
    case 'policy':
      // The event loop's version (a source's number, or the file's hash): adopt() compares them.
      if (store === null) store = PolicyStore.fromSource(m.text, m.version, { cacheSize: 16 });
      else store.reloadText(m.text, m.version);
      return;
    case 'catalog':
      store?.setCatalog(m.data === null ? null : catalogFromData(m.data));
      return;
    case 'job': {
      let failed: string | null = null;
      try {
        const made = m.decide && store !== null ? store.make(m.sql, m.scopes, m.claims) : null;
        const effects = m.effects ? effectsToWire(classify(m.sql)) : null;
        const broken = wasmBroken();
        failed = broken === null ? null : `the SQL parser failed on this statement (${broken})`;
        reply({ kind: 'done', id: m.id, made, effects, failed });
      } catch (err) {
        failed = err instanceof Error ? err.message : 'the decision failed';
        reply({ kind: 'done', id: m.id, made: null, effects: null, failed });
      }
      // A parser that failed, or a decision that threw, leaves this thread untrusted: it ends,
      // and a new one takes its place (the pool sends it nothing more meanwhile).
      if (failed !== null) process.exit(1);
    }
  }
}

await initParser();
port.on('message', run);
reply({ kind: 'ready' });
