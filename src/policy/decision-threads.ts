/** Worker threads that decide big statement texts, so one client's cold parse never stalls the event loop. */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { SqlError } from '../errors.js';
import type { FromWorker, ToWorker } from './decision-messages.js';
import { lexCostRefusal } from './lex-cost.js';
import { effectsFromWire, type SessionEffects } from './session-effects.js';
import type { MadeDecision, PolicyStore } from './store.js';
import type { Claims, ColumnCatalog } from './types.js';

export interface DecisionJob {
  /** Whose job (the token's subject, else the address): the queue takes clients in turn. */
  client: string;
  sql: string;
  scopes: readonly string[];
  claims: Claims | undefined;
  decide: boolean;
  effects: boolean;
  /** A routed client's column catalog (src/pool/routes.ts); undefined: the policy's. */
  catalog?: ColumnCatalog;
}

export interface JobResult {
  made: MadeDecision | null;
  effects: SessionEffects | null;
  /** Why the text could not be judged (the parser or its thread failed): refuse it. */
  failed: string | null;
  /** Refused before any thread took it (too costly to lex, lex-cost.ts): send this. */
  refused?: SqlError;
}

interface Pending {
  id: number;
  job: DecisionJob;
  resolve: (r: JobResult) => void;
}

interface Slot {
  worker: Worker;
  /** Loaded and sound: a worker whose parser failed takes no more jobs (it is about to exit). */
  ready: boolean;
  busy: Pending | null;
  timer: NodeJS.Timeout | null;
  /** Ended by the job timeout (parser_thread_timeout). */
  timedOut: boolean;
  /** What this worker was last sent, so a job runs against the event loop's policy and catalog. */
  policyVersion: string;
  catalogVersion: string;
}

/** A worker's own heap: a tree too big for it ends that worker, not scopegate. */
const WORKER_HEAP_MB = 768;
/** A worker's stack: deeper than the event loop's, so what it judges the event loop need not. */
const WORKER_STACK_MB = 16;
/** A job that takes longer than this (pool.parser_thread_timeout) has hung its worker: it is refused and the worker replaced. */
export const DEFAULT_JOB_TIMEOUT_MS = 30_000;

/**
 * Jobs waiting for a worker, taken so that no client can starve another: texts below the
 * threads' usual size (sent here only once the event loop's parser has failed) go first;
 * among the rest, a client with fewer jobs on a thread goes first (so one client holds at
 * most one thread while another's job waits), then the one served (or arrived) least
 * recently: the clients take turns, one job each, in the order they first queued.
 */
export class FairQueue {
  private readonly small: Pending[] = [];
  private readonly byClient = new Map<string, Pending[]>();
  /** Per client with a job queued or running: jobs running, and when it was last served. */
  private readonly load = new Map<string, { running: number; last: number }>();
  /** Arrivals and services, in order: `last` compares them. */
  private tick = 0;
  private count = 0;

  constructor(private readonly smallBelow: number) {}

  get length(): number {
    return this.count;
  }

  push(p: Pending): void {
    this.count++;
    // A client new to the queue joins the back of the line: behind everyone who arrived or was served before.
    if (!this.load.has(p.job.client)) this.load.set(p.job.client, { running: 0, last: ++this.tick });
    if (p.job.sql.length < this.smallBelow) { this.small.push(p); return; }
    const q = this.byClient.get(p.job.client);
    if (q === undefined) this.byClient.set(p.job.client, [p]);
    else q.push(p);
  }

  /** The next job to run; it counts as running for its client until `finished`. */
  shift(): Pending | undefined {
    let p = this.small.shift();
    if (p === undefined) {
      let pick: string | undefined;
      let best = { running: Infinity, last: Infinity };
      for (const client of this.byClient.keys()) {
        const l = this.load.get(client)!;
        if (l.running < best.running || (l.running === best.running && l.last < best.last)) { pick = client; best = l; }
      }
      if (pick === undefined) return undefined;
      const q = this.byClient.get(pick)!;
      p = q.shift()!;
      if (q.length === 0) this.byClient.delete(pick);
    }
    this.count--;
    const l = this.load.get(p.job.client)!;
    l.running++;
    l.last = ++this.tick;
    return p;
  }

  /** A job `shift` gave has ended. */
  finished(client: string): void {
    const l = this.load.get(client);
    if (l === undefined) return;
    l.running--;
    if (l.running <= 0 && !this.byClient.has(client) && !this.small.some((p) => p.job.client === client)) this.load.delete(client);
  }

  drain(): Pending[] {
    const all = [...this.small, ...[...this.byClient.values()].flat()];
    this.small.length = 0;
    this.byClient.clear();
    this.load.clear();
    this.count = 0;
    return all;
  }
}

export class DecisionThreads {
  private readonly slots: Slot[] = [];
  private readonly waiting: FairQueue;
  private nextId = 1;
  private closed = false;
  /** Jobs run and workers replaced, for the admin console and tests. */
  readonly stats = { jobs: 0, failed: 0, restarts: 0 };

  /**
   * `count` workers; texts of at least `minSize` characters go to them. The workers load the
   * same policy text and catalog data as `policy`, re-sent whenever its versions change.
   * A job running longer than `jobTimeoutMs` is refused and its worker replaced.
   */
  constructor(count: number, readonly minSize: number, private readonly policy: PolicyStore | null, private readonly log: Logger, private readonly jobTimeoutMs = DEFAULT_JOB_TIMEOUT_MS) {
    this.waiting = new FairQueue(minSize);
    for (let i = 0; i < count; i++) this.slots.push(this.spawn());
  }

  /** Every thread has a job: a new one waits for a running parse to end (seconds, for a big text). */
  get allBusy(): boolean {
    for (const s of this.slots) if (s.ready && s.busy === null) return false;
    return true;
  }

  /** Decides off the event loop; never rejects (a failure is a `failed` result). */
  run(job: DecisionJob): Promise<JobResult> {
    if (this.closed) return Promise.resolve({ made: null, effects: null, failed: 'scopegate is shutting down' });
    // A text that would keep a thread lexing for long is refused before it takes one.
    const refused = lexCostRefusal(job.sql);
    if (refused !== null) return Promise.resolve({ made: null, effects: null, failed: null, refused });
    return new Promise((resolve) => {
      this.waiting.push({ id: this.nextId++, job, resolve });
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.waiting.drain()) p.resolve({ made: null, effects: null, failed: 'scopegate is shutting down' });
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private spawn(): Slot {
    const worker = new Worker(new URL('./decision-worker.js', import.meta.url), { resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB, stackSizeMb: WORKER_STACK_MB } });
    const slot: Slot = { worker, ready: false, busy: null, timer: null, timedOut: false, policyVersion: '', catalogVersion: '' };
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
    if (m.failed !== null) {
      this.stats.failed++;
      // Its parser failed: the worker exits; nothing more is sent to it.
      slot.ready = false;
    }
    p.resolve({ made: m.made, effects: m.effects === null ? null : effectsFromWire(m.effects), failed: m.failed });
    this.dispatch();
  }

  private onExit(slot: Slot, code: number): void {
    const i = this.slots.indexOf(slot);
    const p = slot.busy;
    this.finish(slot);
    if (p !== null) {
      this.stats.failed++;
      const why = slot.timedOut ? `it took longer than parser_thread_timeout (${this.jobTimeoutMs / 1000} s)` : 'its thread ended';
      p.resolve({ made: null, effects: null, failed: `the SQL parser failed on this statement (${why})` });
    }
    if (this.closed || i < 0) return;
    this.stats.restarts++;
    this.log.warn({ code, had_job: p !== null }, 'decision worker exited; starting a new one');
    this.slots[i] = this.spawn();
  }

  private finish(slot: Slot): void {
    const client = slot.busy?.job.client;
    if (client !== undefined) this.waiting.finished(client);
    slot.busy = null;
    if (slot.timer !== null) { clearTimeout(slot.timer); slot.timer = null; }
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.waiting.length === 0) return;
      if (!slot.ready || slot.busy !== null) continue;
      const p = this.waiting.shift()!;
      this.sync(slot, p.job.catalog);
      slot.busy = p;
      this.stats.jobs++;
      slot.timer = setTimeout(() => { slot.timedOut = true; void slot.worker.terminate(); }, this.jobTimeoutMs);
      slot.timer.unref();
      const j = p.job;
      this.send(slot, { kind: 'job', id: p.id, sql: j.sql, scopes: j.scopes, claims: j.claims, decide: j.decide, effects: j.effects });
    }
  }

  // The worker gets the catalog the job is judged against: the policy's, or its route's.
  private sync(slot: Slot, routeCatalog: ColumnCatalog | undefined): void {
    const policy = this.policy;
    if (policy === null) return;
    if (slot.policyVersion !== policy.version) {
      this.send(slot, { kind: 'policy', text: policy.text, version: policy.version });
      slot.policyVersion = policy.version;
    }
    const catalog = routeCatalog ?? policy.columnCatalog;
    const version = catalog?.version ?? '';
    if (slot.catalogVersion !== version) {
      this.send(slot, { kind: 'catalog', data: catalog?.data ?? null });
      slot.catalogVersion = version;
    }
  }

  private send(slot: Slot, m: ToWorker): void {
    slot.worker.postMessage(m);
  }
}
