/** `workers: N`: the messages between the primary and its workers (node:cluster IPC), shared by both sides. */
import type { Table } from '../admin/show.js';

/** What one worker answers for the console and /metrics. */
export type WorkerQuery =
  | { what: 'show'; table: string; full: boolean; viewerSub: string | null }
  | { what: 'metrics' }
  /** KILL_CLIENT of a client on another worker: answered true by the worker that closed it. */
  | { what: 'kill_client'; id: number }
  | { what: 'readiness' };

export interface ReadinessReply { ready: boolean; pools: unknown[] }

/** Worker -> primary. */
export type FromWorker =
  | { sg: 'listening' }
  /** Ask every other worker (the console's SHOW): answered with 'answers'. */
  | { sg: 'ask'; id: number; query: WorkerQuery }
  | { sg: 'reply'; id: number; data: Table | ReadinessReply | unknown[] | boolean | null }
  | { sg: 'cancel'; to: number; pid: number; secret: string }
  | { sg: 'reload'; why: string }
  | { sg: 'shutdown'; why: string };

/** Primary -> worker. */
export type ToWorker =
  | { sg: 'query'; id: number; query: WorkerQuery }
  | { sg: 'answers'; id: number; answers: Array<{ worker: number; data: unknown }> }
  | { sg: 'cancel'; pid: number; secret: string }
  | { sg: 'reload'; why: string }
  | { sg: 'shutdown'; why: string };

/** A worker (or the primary) that does not answer within this long is left out of the answer. */
export const ASK_TIMEOUT_MS = 2_000;

/** Environment variable carrying a forked worker's index (0-based) and the worker count. */
export const WORKER_ENV = 'SCOPEGATE_WORKER';
export const WORKERS_ENV = 'SCOPEGATE_WORKERS';
/** The config file a worker runs, and the file its relative paths are relative to: the
 * primary's own, whatever command started it (`scopegate demo` runs a generated copy). */
export const WORKER_CONFIG_ENV = 'SCOPEGATE_WORKER_CONFIG';
export const WORKER_ANCHOR_ENV = 'SCOPEGATE_WORKER_ANCHOR';

export function isFromWorker(m: unknown): m is FromWorker {
  return typeof m === 'object' && m !== null && typeof (m as { sg?: unknown }).sg === 'string';
}
export function isToWorker(m: unknown): m is ToWorker {
  return typeof m === 'object' && m !== null && typeof (m as { sg?: unknown }).sg === 'string';
}
