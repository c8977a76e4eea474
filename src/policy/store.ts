/** The loaded policy, its version, reloads and the decision cache. */
import { LruCache } from './cache.js';
import { ClaimResolver, claimsDigest } from './claims.js';
import { decide, tooComplexDecision } from './decide.js';
import { parseCached, setParseCacheSize } from './parse.js';
import { loadPolicyFile, parsePolicyText, type LoadedPolicy } from './schema.js';
import type { Claims, ColumnCatalog, Decision, Policy } from './types.js';

export interface PolicyStoreOptions {
  /** Decisions kept (LRU). Default 10000. */
  cacheSize?: number;
  /** Parse results kept (LRU, shared process-wide). Default 10000. */
  parseCacheSize?: number;
}

interface State extends LoadedPolicy {
  file: string | null;
}

/** Decisions kept, by size (a decision holds its text, and a rewrite another). */
const DECISION_CACHE_BYTES = 128 * 1024 * 1024;

/** A decision made elsewhere (a decision worker) with what it was made against. */
export interface MadeDecision {
  decision: Decision;
  /** The claim paths it read. */
  used: readonly string[];
  /** The catalog version it saw ('' for none). */
  catalogVersion: string;
}

/**
 * The current policy and its decision cache. `reload` validates first and swaps one
 * reference, so a check sees either the old or the new policy, never a mix; an invalid file
 * throws and leaves the old policy in force.
 */
export class PolicyStore {
  private state: State;
  private readonly decisions: LruCache<string, Decision>;
  /** Per (text, scopes, versions): the claim paths its decision depends on ([] = none). */
  private readonly claimDeps: LruCache<string, readonly string[]>;
  private catalog: ColumnCatalog | null = null;
  // Scope arrays usually live as long as a client session: memoise their sorted key.
  private scopeKeys = new WeakMap<readonly string[], string>();

  private constructor(state: State, opts: PolicyStoreOptions) {
    this.state = state;
    this.decisions = new LruCache(opts.cacheSize ?? 10_000, DECISION_CACHE_BYTES);
    this.claimDeps = new LruCache(opts.cacheSize ?? 10_000, DECISION_CACHE_BYTES);
    if (opts.parseCacheSize !== undefined) setParseCacheSize(opts.parseCacheSize);
  }

  static load(file: string, opts: PolicyStoreOptions = {}): PolicyStore {
    return new PolicyStore({ ...loadPolicyFile(file), file }, opts);
  }

  /** For tests and the check command: a policy from YAML text. */
  static fromText(text: string, opts: PolicyStoreOptions = {}): PolicyStore {
    return new PolicyStore({ ...parsePolicyText(text), file: null }, opts);
  }

  get version(): string {
    return this.state.version;
  }

  get policy(): Policy {
    return this.state.policy;
  }

  get file(): string | null {
    return this.state.file;
  }

  /** The policy's YAML. */
  get text(): string {
    return this.state.text;
  }

  get catalogVersion(): string {
    return this.catalog?.version ?? '';
  }

  get columnCatalog(): ColumnCatalog | null {
    return this.catalog;
  }

  /** A policy from the policy source: its version is the source's number, not a content hash. */
  static fromSource(text: string, version: string, opts: PolicyStoreOptions = {}): PolicyStore {
    return new PolicyStore({ ...parsePolicyText(text), version, file: null }, opts);
  }

  /** Re-reads the file (or `file`, which then becomes the store's file). Throws ConfigError if invalid. */
  reload(file: string | undefined = this.state.file ?? undefined): void {
    if (file === undefined) throw new Error('PolicyStore.reload: no file to read (store was built from text)');
    const next: State = { ...loadPolicyFile(file), file };
    this.swap(next);
  }

  /** Replaces the policy with YAML text (tests, admin API). Throws ConfigError if invalid. */
  reloadText(text: string, version?: string): void {
    const loaded = parsePolicyText(text);
    this.swap({ ...loaded, version: version ?? loaded.version, file: this.state.file });
  }

  private swap(next: State): void {
    const changed = next.version !== this.state.version;
    this.state = next;
    // Keys carry the version, so stale entries could never hit; drop them to free memory.
    if (changed) this.clearCaches();
  }

  private clearCaches(): void {
    this.decisions.clear();
    this.claimDeps.clear();
  }

  /** Table columns for star expansion and masks; decisions are re-made when its version changes. */
  setCatalog(catalog: ColumnCatalog | null): void {
    const changed = (catalog?.version ?? null) !== (this.catalog?.version ?? null);
    this.catalog = catalog;
    if (changed) this.clearCaches();
  }

  get cacheStats(): { size: number; hits: number; misses: number } {
    return { size: this.decisions.size, hits: this.decisions.hits, misses: this.decisions.misses };
  }

  private scopeKey(scopes: readonly string[]): string {
    let k = this.scopeKeys.get(scopes);
    if (k === undefined) {
      k = [...new Set(scopes)].sort().join(' ');
      this.scopeKeys.set(scopes, k);
    }
    return k;
  }

  /**
   * Decides a simple Query / Parse text for a client holding `scopes`, whose token carries
   * `claims` (row filters use them; absent: filters needing a claim deny). Needs initParser().
   */
  check(sql: string, scopes: readonly string[], claims?: Claims, catalog: ColumnCatalog | null = this.catalog): Decision {
    const base = this.baseKey(sql, scopes, catalog);
    const hit = this.cached(base, claims);
    if (hit !== undefined) return hit;
    const made = this.make(sql, scopes, claims, catalog);
    this.keep(base, sql, claims, made);
    return made.decision;
  }

  /** Whether check() would answer from the cache. */
  has(sql: string, scopes: readonly string[], claims?: Claims, catalog: ColumnCatalog | null = this.catalog): boolean {
    return this.cached(this.baseKey(sql, scopes, catalog), claims) !== undefined;
  }

  /** A decision with what it depends on, cached nowhere (decision workers make them). */
  // `catalog`: a routed client's own (src/pool/routes.ts); keys carry its version, so routes never share a decision.
  make(sql: string, scopes: readonly string[], claims?: Claims, catalog: ColumnCatalog | null = this.catalog): MadeDecision {
    const st = this.state;
    const resolver = new ClaimResolver(claims);
    let decision: Decision;
    try {
      decision = decide(st.policy, st.version, parseCached(sql), scopes, { claims: resolver, catalog });
    } catch (err) {
      // The tree is walked recursively: a deep enough one runs out of stack. Refused, not cached.
      if (!(err instanceof RangeError)) throw err;
      decision = tooComplexDecision(st.version);
    }
    return { decision, used: [...resolver.used.keys()].sort(), catalogVersion: catalog?.version ?? '' };
  }

  /**
   * Takes a decision made by a worker into the cache, if it was made against this policy and
   * catalog (one that was not is dropped: check() then decides afresh).
   */
  adopt(sql: string, scopes: readonly string[], claims: Claims | undefined, made: MadeDecision, catalog: ColumnCatalog | null = this.catalog): boolean {
    if (made.decision.policyVersion !== this.state.version || made.catalogVersion !== (catalog?.version ?? '')) return false;
    this.keep(this.baseKey(sql, scopes, catalog), sql, claims, made);
    return true;
  }

  private baseKey(sql: string, scopes: readonly string[], catalog: ColumnCatalog | null): string {
    return sql + '\u0000' + this.scopeKey(scopes) + '\u0000' + this.state.version + '\u0000' + (catalog?.version ?? '');
  }

  private cached(base: string, claims: Claims | undefined): Decision | undefined {
    // Decisions that used claims are keyed by those claims' values too: tenants never share a rewrite.
    const deps = this.claimDeps.get(base);
    if (deps === undefined) return undefined;
    return this.decisions.get(deps.length === 0 ? base : base + '\u0000' + claimsDigest(deps, claims));
  }

  private keep(base: string, sql: string, claims: Claims | undefined, made: MadeDecision): void {
    const d = made.decision;
    // The parser failing says nothing lasting about the text: the next instance may parse it.
    if (d.reason === 'parser_failed') return;
    this.claimDeps.set(base, made.used, base.length);
    const weight = base.length + sql.length + (d.rewritten?.length ?? 0);
    this.decisions.set(made.used.length === 0 ? base : base + '\u0000' + claimsDigest(made.used, claims), d, weight);
  }
}
