/** Worker threads that decide big statement texts, so one client's cold parse never stalls the event loop. */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { FromWorker, ToWorker } from './decision-messages.js';
import { effectsFromWire, type SessionEffects } from './session-effects.js';
import type { MadeDecision, PolicyStore } from './store.js';
import type { Claims } from './types.js';

export interface DecisionJob {
  sql: string;
  scopes: readonly string[];
  claims: Claims | undefined;
  decide: boolean;
  effects: boolean;
}

export interface JobResult {
  made: MadeDecision | null;
  effects: SessionEffects | null;
  /** Why the text could not be judged (the parser or its thread failed): refuse it. */
  failed: string | null;
}

interface Pending {
  id: number;
  job: DecisionJob;
  resolve: (r: JobResult) => void;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  busy: Pending | null;
  timer: NodeJS.Timeout | null;
  /** What this worker was last sent, so a job runs against the event loop's policy and catalog. */
  policyVersion: string;
  catalogVersion: string;
}

/** A worker's own heap: a tree too big for it ends that worker, not scopegate. */
const WORKER_HEAP_MB = 2048;
/** A job that takes longer has hung its worker: it is refused and the worker replaced. */
const JOB_TIMEOUT_MS = 30_000;

export class DecisionThreads {
  private readonly slots: Slot[] = [];
  private readonly waiting: Pending[] = [];
  private nextId = 1;
  private closed = false;
  /** Jobs run and workers replaced, for the admin console and tests. */
  readonly stats = { jobs: 0, failed: 0, restarts: 0 };

  /**
   * `count` workers; texts of at least `minSize` characters go to them. The workers load the
   * same policy text and catalog data as `policy`, re-sent whenever its versions change.
   */
  constructor(count: number, readonly minSize: number, private readonly policy: PolicyStore | null, private readonly log: Logger) {
    for (let i = 0; i < count; i++) this.slots.push(this.spawn());
  }

  /** Decides off the event loop; never rejects (a failure is a `failed` result). */
  run(job: DecisionJob): Promise<JobResult> {
    if (this.closed) return Promise.resolve({ made: null, effects: null, failed: 'scopegate is shutting down' });
    return new Promise((resolve) => {
      this.waiting.push({ id: this.nextId++, job, resolve });
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.waiting.splice(0)) p.resolve({ made: null, effects: null, failed: 'scopegate is shutting down' });
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private spawn(): Slot {
    const worker = new Worker(new URL('./decision-worker.js', import.meta.url), { resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB } });
    const slot: Slot = { worker, ready: false, busy: null, timer: null, policyVersion: '', catalogVersion: '' };
    worker.on('message', (m: FromWorker) => this.onMessage(slot, m));
    worker.on('error', (err) => this.log.warn({ err: err.message }, 'decision worker failed'));
    worker.on('exit', (code) => this.onExit(slot, code));
    // A worker never keeps scopegate running (after the listeners: a 'message' listener refs its port).
    worker.unref();
    return slot;
  }

  private onMessage(slot: Slot, m: FromWorker): void {
    if (m.kind === 'ready') {
      slot.ready = true;
      this.dispatch();
      return;
    }
    const p = slot.busy;
    if (p === null || p.id !== m.id) return;
    this.finish(slot);
    if (m.failed !== null) this.stats.failed++;
    p.resolve({ made: m.made, effects: m.effects === null ? null : effectsFromWire(m.effects), failed: m.failed });
    this.dispatch();
  }

  private onExit(slot: Slot, code: number): void {
    const i = this.slots.indexOf(slot);
    const p = slot.busy;
    this.finish(slot);
    if (p !== null) {
      this.stats.failed++;
      p.resolve({ made: null, effects: null, failed: 'the SQL parser failed on this statement (its thread ended)' });
    }
    if (this.closed || i < 0) return;
    this.stats.restarts++;
    this.log.warn({ code, had_job: p !== null }, 'decision worker exited; starting a new one');
    this.slots[i] = this.spawn();
  }

  private finish(slot: Slot): void {
    slot.busy = null;
    if (slot.timer !== null) { clearTimeout(slot.timer); slot.timer = null; }
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.waiting.length === 0) return;
      if (!slot.ready || slot.busy !== null) continue;
      const p = this.waiting.shift()!;
      this.sync(slot);
      slot.busy = p;
      this.stats.jobs++;
      slot.timer = setTimeout(() => { void slot.worker.terminate(); }, JOB_TIMEOUT_MS);
      slot.timer.unref();
      const j = p.job;
      this.send(slot, { kind: 'job', id: p.id, sql: j.sql, scopes: j.scopes, claims: j.claims, decide: j.decide, effects: j.effects });
    }
  }

  private sync(slot: Slot): void {
    const policy = this.policy;
    if (policy === null) return;
    if (slot.policyVersion !== policy.version) {
      this.send(slot, { kind: 'policy', text: policy.text });
      slot.policyVersion = policy.version;
    }
    const catalog = policy.columnCatalog;
    if (slot.catalogVersion !== policy.catalogVersion) {
      this.send(slot, { kind: 'catalog', data: catalog?.data ?? null });
      slot.catalogVersion = policy.catalogVersion;
    }
  }

  private send(slot: Slot, m: ToWorker): void {
    slot.worker.postMessage(m);
  }
}
