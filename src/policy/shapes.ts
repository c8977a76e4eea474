/** One decision for texts that differ only in numeric literals. */
import { LruCache } from './cache.js';
import type { Decision, PolicyStore } from './index.js';
import type { ColumnCatalog } from './types.js';

/**
 * Reuses a decision for texts that differ only in numeric literals, as simple-protocol
 * clients send them (`... WHERE aid = 48213`): the parser would otherwise run for every
 * statement. Only for texts without quotes, dollar signs, backslashes or comments, where a
 * digit run after whitespace or an operator can only be a number; and only for decisions
 * that do not depend on the text beyond its shape (no rewrite, no Bind checks).
 */
const INELIGIBLE = /['"$\\]|--|\/\*/;
const NUMBER = /(^|[\s(,=<>+\-*/%^|&!~[])(?:0[xXoObB][0-9A-Fa-f_]+|\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)(?![\w\u0080-\uffff.])/g;

/** The last text shaped and its shape: the session tracker and the decision cache both ask
 * for the same statement's shape, one after the other. */
let lastText: string | null = null;
let lastShape: string | null = null;

/** The text with every numeric literal replaced by `?`, or null when not eligible or unchanged. */
export function numericShape(sql: string): string | null {
  if (sql === lastText) return lastShape;
  lastShape = shapeOf(sql);
  lastText = sql;
  return lastShape;
}

function shapeOf(sql: string): string | null {
  if (sql.length > 4096 || INELIGIBLE.test(sql)) return null;
  // A replacement pattern, not a callback: no call and no match array per number.
  const shape = sql.replace(NUMBER, '$1?');
  return shape === sql ? null : shape;
}

/** Decisions of one shape kept per context; past this many (policy versions pile up) the shape starts afresh. */
const CONTEXTS_PER_SHAPE = 16;

export class ShapeCache {
  /** shape -> (scopes, policy version, catalog version) -> decision: the shape is the only key
   * made per statement, the context key is made once per scope set and version. */
  private readonly cache = new LruCache<string, Map<string, Decision>>(10_000, 64 * 1024 * 1024);
  /** The context key last made for a scope set, with what it was made of. */
  private readonly contexts = new Map<string, { version: string; catalog: string; key: string }>();

  constructor(private readonly policy: PolicyStore) {}

  private enabledFor = '';
  private enabledValue = false;

  /** Policies with row rules rewrite literals into the text they send: no sharing then. */
  get enabled(): boolean {
    // Asked per statement: worked out once per policy version.
    if (this.enabledFor !== this.policy.version) {
      this.enabledFor = this.policy.version;
      this.enabledValue = !this.policy.policy.scopes.some((s) => s.rowFilters.length !== 0 || s.masks.length !== 0);
    }
    return this.enabledValue;
  }

  /** `catalog`: a routed client's own (undefined: the policy's); the key carries its version. */
  check(sql: string, scopes: readonly string[], scopeKey: string, catalog?: ColumnCatalog): Decision {
    const shape = numericShape(sql);
    if (shape === null) return this.policy.check(sql, scopes, undefined, catalog);
    const context = this.contextKey(scopeKey, catalog);
    let byContext = this.cache.get(shape);
    let d = byContext?.get(context);
    if (d === undefined) {
      d = this.policy.check(sql, scopes, undefined, catalog);
      if (d.rewritten === null && d.bindChecks.length === 0) {
        if (byContext === undefined) this.cache.set(shape, (byContext = new Map()), shape.length + sql.length);
        else if (byContext.size >= CONTEXTS_PER_SHAPE) byContext.clear();
        byContext.set(context, d);
      }
    }
    return d;
  }

  /** Whether check() would answer without deciding. */
  has(sql: string, scopes: readonly string[], scopeKey: string, catalog?: ColumnCatalog): boolean {
    const shape = numericShape(sql);
    if (shape !== null && this.cache.get(shape)?.get(this.contextKey(scopeKey, catalog)) !== undefined) return true;
    return this.policy.has(sql, scopes, undefined, catalog);
  }

  /** What else a decision depends on: the scopes, the policy version and, since the catalog
   * decides what `t.name` means, the catalog version. */
  private contextKey(scopeKey: string, catalog: ColumnCatalog | undefined): string {
    const version = this.policy.version;
    const cv = catalog === undefined ? this.policy.catalogVersion : catalog.version;
    const seen = this.contexts.get(scopeKey);
    if (seen !== undefined && seen.version === version && seen.catalog === cv) return seen.key;
    const key = `${scopeKey}\u0000${version}\u0000${cv}`;
    if (this.contexts.size >= 10_000) this.contexts.clear();
    this.contexts.set(scopeKey, { version, catalog: cv, key });
    return key;
  }
}
