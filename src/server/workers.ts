/** `workers: N`: the primary process. Forks N workers on one port (node:cluster, round-robin), replaces dead ones, relays cancels, fans console and /metrics queries out, passes signals on. */
import { resolve } from 'node:path';
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, Registry, Gauge, Counter, collectDefaultMetrics, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { AdminHttp } from '../admin/http.js';
import { ASK_TIMEOUT_MS, WORKER_ANCHOR_ENV, WORKER_CONFIG_ENV, WORKER_ENV, WORKERS_ENV, isFromWorker, type ReadinessReply, type ToWorker, type WorkerQuery } from './worker-ipc.js';
import { oversubscribed } from './worker-share.js';

/** Restart delay after a worker dies: 250 ms, doubled per quick death, at most 30 s. */
const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 30_000;
/** A worker that ran this long before dying was healthy: its next restart is quick again. */
const HEALTHY_MS = 30_000;

interface Slot {
  index: number;
  worker: Worker | null;
  startedAt: number;
  delay: number;
  listening: boolean;
  /** It listened at least once: a death after that is replaced; one before is a startup failure. */
  everListened: boolean;
  timer: NodeJS.Timeout | null;
}

interface Pending {
  want: number;
  answers: Array<{ worker: number; data: unknown }>;
  done: (answers: Array<{ worker: number; data: unknown }>) => void;
  timer: NodeJS.Timeout;
}

export class WorkerPrimary {
  private configFile = '';
  private anchor = '';
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private stopping = false;
  private exitCode = 0;
  restarts = 0;
  relays = 0;
  private http: AdminHttp | null = null;
  private readonly registry = new Registry();

  constructor(private readonly config: Config, private readonly log: Logger) {
    const n = config.workers;
    for (let i = 0; i < n; i++) this.slots.push({ index: i, worker: null, startedAt: 0, delay: FIRST_DELAY_MS, listening: false, everListened: false, timer: null });
    collectDefaultMetrics({ register: this.registry, prefix: 'scopegate_primary_' });
    const self = this;
    new Gauge({ name: 'scopegate_workers', help: 'Worker processes running and listening (workers: N).', registers: [this.registry], collect() { this.set(self.slots.filter((s) => s.listening).length); } });
    new Counter({ name: 'scopegate_worker_restarts_total', help: 'Workers that died and were replaced.', registers: [this.registry], collect() { this.reset(); this.inc(self.restarts); } });
    new Counter({ name: 'scopegate_worker_cancel_relays_total', help: 'CancelRequests that reached a worker other than the one that issued the key, relayed to it.', registers: [this.registry], collect() { this.reset(); this.inc(self.relays); } });
    new Gauge({ name: 'scopegate_worker_info', help: 'One series per running worker: its index and process id.', labelNames: ['worker', 'pid'], registers: [this.registry], collect() {
      this.reset();
      for (const s of self.slots) if (s.worker?.process.pid !== undefined) this.set({ worker: String(s.index), pid: String(s.worker.process.pid) }, 1);
    } });
  }

  /** `configFile` / `anchor`: what runServer was given; every worker runs exactly that. */
  async start(configFile: string, anchor: string): Promise<void> {
    this.configFile = resolve(configFile);
    this.anchor = resolve(anchor);
    const over = oversubscribed(this.config, this.config.workers);
    if (over.length > 0) this.log.warn({ workers: this.config.workers, pools: over }, 'pool_size smaller than workers: each worker still gets one server connection, so these pools may open more than pool_size');
    // Round-robin in the primary: the kernel's spread over workers blocked in accept() was uneven (bench/README.md).
    cluster.schedulingPolicy = cluster.SCHED_RR;
    cluster.setupPrimary({ silent: false });
    cluster.on('exit', (w, code, signal) => this.onExit(w, code, signal));
    const admin = this.config.admin?.listen_http;
    if (admin) {
      this.http = new AdminHttp(null, admin, this.log, {
        metrics: () => this.metrics(),
        readiness: () => this.readiness(),
      });
      try {
        await this.http.listen();
      } catch (err) {
        process.stderr.write(`scopegate: cannot listen on admin.listen_http ${admin.host}:${admin.port}: ${(err as Error).message}\n`);
        process.exit(2);
      }
    }
    for (const s of this.slots) this.fork(s);
    process.on('SIGHUP', () => { this.log.info('SIGHUP: reloading every worker'); this.broadcast({ sg: 'reload', why: 'SIGHUP' }); });
    process.on('SIGTERM', () => this.stop('SIGTERM'));
    process.on('SIGINT', () => this.stop('SIGINT'));
  }

  private fork(s: Slot): void {
    s.timer = null;
    s.listening = false;
    s.startedAt = Date.now();
    const w = cluster.fork({ [WORKER_ENV]: String(s.index), [WORKERS_ENV]: String(this.slots.length), [WORKER_CONFIG_ENV]: this.configFile, [WORKER_ANCHOR_ENV]: this.anchor });
    s.worker = w;
    this.log.info({ worker: s.index, pid: w.process.pid }, 'worker started');
    w.on('message', (m: unknown) => this.onMessage(s, m));
  }

  private onExit(w: Worker, code: number | null, signal: string | null): void {
    const s = this.slots.find((x) => x.worker === w);
    if (s === undefined) return;
    s.worker = null;
    s.listening = false;
    if (this.stopping) { this.maybeExit(); return; }
    if (!s.everListened) {
      // It never came up (a bad policy, the port taken): restarting would fail the same way.
      this.log.error({ worker: s.index, code, signal }, 'worker failed to start; stopping');
      this.exitCode = code === null || code === 0 ? 1 : code;
      this.stop('a worker failed to start');
      return;
    }
    this.restarts++;
    if (Date.now() - s.startedAt >= HEALTHY_MS) s.delay = FIRST_DELAY_MS;
    this.log.error({ worker: s.index, pid: w.process.pid, code, signal, restart_in_ms: s.delay }, 'worker died; replacing it');
    s.timer = setTimeout(() => this.fork(s), s.delay);
    s.delay = Math.min(MAX_DELAY_MS, s.delay * 2);
  }

  private send(s: Slot, m: ToWorker): void {
    const w = s.worker;
    if (w === null || !w.isConnected()) return;
    try { w.send(m); } catch { /* the worker is going away; its exit replaces it */ }
  }

  private broadcast(m: ToWorker, except: Slot | null = null): void {
    for (const s of this.slots) if (s !== except) this.send(s, m);
  }

  private onMessage(from: Slot, m: unknown): void {
    if (!isFromWorker(m)) return;
    switch (m.sg) {
      case 'listening':
        from.listening = true;
        from.everListened = true;
        if (this.slots.every((s) => s.listening)) this.log.info({ workers: this.slots.length }, 'all workers listening');
        return;
      case 'ask':
        void this.ask(m.query, from).then((answers) => this.send(from, { sg: 'answers', id: m.id, answers }));
        return;
      case 'reply': {
        const p = this.pending.get(m.id);
        if (p === undefined) return;
        p.answers.push({ worker: from.index, data: m.data });
        if (p.answers.length >= p.want) { clearTimeout(p.timer); this.pending.delete(m.id); p.done(p.answers); }
        return;
      }
      case 'cancel': {
        const to = this.slots[m.to];
        // Only to the worker the key names, which looks it up locally: never relayed twice.
        if (to !== undefined && to !== from) {
          this.relays++;
          if (this.log.isLevelEnabled('debug')) this.log.debug({ from: from.index, to: to.index }, 'cancel request relayed to the worker that issued the key');
          this.send(to, { sg: 'cancel', pid: m.pid, secret: m.secret });
        }
        return;
      }
      case 'reload':
        this.broadcast({ sg: 'reload', why: m.why }, from);
        return;
      case 'shutdown':
        this.stop(m.why);
        return;
    }
  }

  /** Asks every listening worker but `except`; whoever has not answered in ASK_TIMEOUT_MS is left out. */
  private ask(query: WorkerQuery, except: Slot | null): Promise<Array<{ worker: number; data: unknown }>> {
    const targets = this.slots.filter((s) => s !== except && s.listening && s.worker !== null);
    if (targets.length === 0) return Promise.resolve([]);
    const id = this.nextId++;
    return new Promise((done) => {
      const timer = setTimeout(() => {
        const p = this.pending.get(id);
        this.pending.delete(id);
        if (p !== undefined) {
          this.log.warn({ id, answered: p.answers.length, asked: p.want }, 'a worker did not answer in time; left out');
          done(p.answers);
        }
      }, ASK_TIMEOUT_MS);
      this.pending.set(id, { want: targets.length, answers: [], done, timer });
      for (const s of targets) this.send(s, { sg: 'query', id, query });
    });
  }

  /** /metrics: every worker's registry summed (prom-client's aggregators), plus the primary's own. */
  private async metrics(): Promise<{ contentType: string; text: string }> {
    const answers = await this.ask({ what: 'metrics' }, null);
    type Json = MetricObjectWithValues<MetricValue<string>>[];
    const all = answers.map((a) => a.data).filter((d): d is Json => Array.isArray(d));
    all.push(await this.registry.getMetricsAsJSON());
    const reg = AggregatorRegistry.aggregate(all);
    return { contentType: reg.contentType, text: await reg.metrics() };
  }

  /** /readyz: ready when every worker listens and says it is ready. */
  private async readiness(): Promise<{ ready: boolean; body: unknown }> {
    const answers = await this.ask({ what: 'readiness' }, null);
    const workers = this.slots.map((s) => {
      const a = answers.find((x) => x.worker === s.index)?.data as ReadinessReply | undefined;
      return { worker: s.index, pid: s.worker?.process.pid ?? null, listening: s.listening, ready: a?.ready === true, pools: a?.pools ?? [] };
    });
    const ready = !this.stopping && workers.every((w) => w.ready);
    return { ready, body: { ready, workers } };
  }

  /** SIGTERM, SIGINT, a console's SHUTDOWN: every worker drains, then the primary exits. */
  private stop(why: string): void {
    if (this.stopping) return;
    this.stopping = true;
    this.log.info({ why }, 'stopping every worker');
    for (const s of this.slots) if (s.timer !== null) { clearTimeout(s.timer); s.timer = null; }
    this.broadcast({ sg: 'shutdown', why });
    this.maybeExit();
  }

  private maybeExit(): void {
    if (!this.stopping || this.slots.some((s) => s.worker !== null)) return;
    void (this.http?.close() ?? Promise.resolve()).then(() => {
      this.log.info('stopped');
      process.exit(this.exitCode);
    });
  }
}
