/** `workers: N`, in a worker: its index, the cancel relay, and answering and asking the primary (console SHOW, /metrics, readiness, reload, shutdown). */
import type { Registry } from 'prom-client';
import type { Table } from '../admin/show.js';
import { readiness } from '../admin/stats.js';
import { localTable } from '../admin/worker-tables.js';
import { ASK_TIMEOUT_MS, WORKER_ENV, WORKERS_ENV, isToWorker, type FromWorker, type WorkerQuery } from './worker-ipc.js';
import type { Scopegate } from './listener.js';
import { peerIdOf } from './peers.js';
import { SqlError, SQLSTATE } from '../errors.js';

/** This process's place among the workers, or null when it is no worker (workers: 1). */
export function workerPlace(): { index: number; count: number } | null {
  const i = process.env[WORKER_ENV];
  const n = process.env[WORKERS_ENV];
  if (i === undefined || n === undefined || process.send === undefined) return null;
  const index = Number(i);
  const count = Number(n);
  if (!Number.isInteger(index) || !Number.isInteger(count) || count < 2 || index < 0 || index >= count) return null;
  return { index, count };
}

export interface WorkerHooks {
  reload(why: string): void;
  shutdown(why: string): void;
}

export class WorkerLink {
  private nextId = 1;
  private readonly waiting = new Map<number, { done: (a: Array<{ worker: number; data: unknown }>) => void; timer: NodeJS.Timeout }>();
  registry: Registry | null = null;

  constructor(readonly index: number, readonly count: number, private readonly srv: Scopegate, private readonly hooks: WorkerHooks) {
    const bits = Math.ceil(Math.log2(count));
    const peers = srv.peers;
    const ownPeer = srv.config.peering.peer_id;
    srv.cancels.workers = {
      index, bits,
      // A key issued by a peer instance is the peers' to forward, not another worker's.
      foreign: (secret) => peers.enabled && secret.length === 4 && peerIdOf(secret.readUInt32BE(0)) !== ownPeer,
      relay: (to, pid, secret) => this.post({ sg: 'cancel', to, pid, secret: secret.toString('hex') }),
    };
    process.on('message', (m: unknown) => this.onMessage(m));
    // The primary is gone (killed): nobody replaces or routes to this worker any more.
    process.on('disconnect', () => hooks.shutdown('primary exited'));
  }

  private post(m: FromWorker): void {
    try { process.send?.(m); } catch { /* channel closed: 'disconnect' stops this worker */ }
  }

  listening(): void {
    this.post({ sg: 'listening' });
  }

  /** RELOAD on this worker's console: the others reload too. */
  reloadOthers(why: string): void {
    this.post({ sg: 'reload', why });
  }

  shutdownAll(why: string): void {
    this.post({ sg: 'shutdown', why });
  }

  /** Every other worker's answer to `query` (those that answered within the timeout). */
  ask(query: WorkerQuery): Promise<Array<{ worker: number; data: unknown }>> {
    const id = this.nextId++;
    return new Promise((done) => {
      // The primary answers within its own ASK_TIMEOUT_MS; this one covers a primary that does not.
      const timer = setTimeout(() => { this.waiting.delete(id); done([]); }, ASK_TIMEOUT_MS + 500);
      this.waiting.set(id, { done, timer });
      this.post({ sg: 'ask', id, query });
    });
  }

  private onMessage(m: unknown): void {
    if (!isToWorker(m)) return;
    switch (m.sg) {
      case 'answers': {
        const w = this.waiting.get(m.id);
        if (w === undefined) return;
        this.waiting.delete(m.id);
        clearTimeout(w.timer);
        w.done(m.answers);
        return;
      }
      case 'query':
        void this.answer(m.query).then((data) => this.post({ sg: 'reply', id: m.id, data }), () => this.post({ sg: 'reply', id: m.id, data: null }));
        return;
      case 'cancel':
        // Local only: a relayed cancel is never relayed or forwarded to a peer again.
        if (/^[0-9a-f]{8}$/.test(m.secret)) this.srv.cancels.cancelLocal(m.pid, Buffer.from(m.secret, 'hex'));
        return;
      case 'reload':
        this.hooks.reload(m.why);
        return;
      case 'shutdown':
        this.hooks.shutdown(m.why);
        return;
    }
  }

  private async answer(q: WorkerQuery): Promise<Table | unknown[] | { ready: boolean; pools: unknown[] } | boolean | null> {
    if (q.what === 'kill_client') {
      const target = [...this.srv.sessions()].find((c) => c.id === q.id);
      if (target === undefined) return false;
      target.closeWith(new SqlError(SQLSTATE.ADMIN_SHUTDOWN, `terminating connection: closed by the admin console (KILL_CLIENT ${q.id})`, { severity: 'FATAL' }));
      return true;
    }
    if (q.what === 'metrics') return this.registry === null ? [] : await this.registry.getMetricsAsJSON();
    if (q.what === 'readiness') return readiness(this.srv);
    if (this.srv.admin === null) return null;
    const viewer = { identity: q.viewerSub === null ? null : { sub: q.viewerSub } };
    return localTable(this.srv, q.table, viewer, q.full, this.srv.admin.averages);
  }
}
