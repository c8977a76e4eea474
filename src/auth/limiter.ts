/**
 * Slows down password guessing per client address: after `after` failures within `windowMs`,
 * each further failure is answered only after a delay that doubles from `delayMs` up to
 * `maxDelayMs`. A success resets the address. Memory is bounded by `maxClients` (LRU).
 */
import type { FailureDelayConfig } from './config.js';
import { parseAddress } from './net.js';

interface Entry {
  failures: number[];
}

function key(address: string): string {
  const a = parseAddress(address);
  if (!a) return address;
  return `${a.family}:${a.value.toString(16)}`;
}

export class FailureLimiter {
  private readonly clients = new Map<string, Entry>();
  constructor(readonly cfg: FailureDelayConfig) {}

  private recent(k: string, nowMs: number): number[] {
    const e = this.clients.get(k);
    if (!e) return [];
    e.failures = e.failures.filter((t) => nowMs - t < this.cfg.windowMs);
    if (e.failures.length === 0) this.clients.delete(k);
    return e.failures;
  }

  private delayForCount(count: number): number {
    if (count <= this.cfg.after) return 0;
    const exp = Math.min(count - this.cfg.after - 1, 30);
    return Math.min(this.cfg.delayMs * 2 ** exp, this.cfg.maxDelayMs);
  }

  /** Delay (ms) to wait before answering a new attempt from `address`, given past failures. */
  delayFor(address: string, nowMs: number = Date.now()): number {
    const n = this.recent(key(address), nowMs).length;
    return n < this.cfg.after ? 0 : this.delayForCount(n + 1);
  }

  /** Records a failure; returns the delay (ms) to wait before sending the error. */
  recordFailure(address: string, nowMs: number = Date.now()): number {
    const k = key(address);
    const failures = this.recent(k, nowMs);
    failures.push(nowMs);
    const cap = this.cfg.after + 32;
    if (failures.length > cap) failures.splice(0, failures.length - cap);
    this.clients.delete(k);
    this.clients.set(k, { failures });
    while (this.clients.size > this.cfg.maxClients) {
      const oldest = this.clients.keys().next();
      if (oldest.done) break;
      this.clients.delete(oldest.value);
    }
    return this.delayForCount(failures.length);
  }

  recordSuccess(address: string): void {
    this.clients.delete(key(address));
  }

  /** Number of addresses currently tracked. */
  get size(): number {
    return this.clients.size;
  }
}
