/** Row and column rules of the scopes a token holds. */
import { relGranted, matches } from './grants.js';
import { displayName, sameName } from './names.js';
import type { ColumnCatalog, Policy, QualName, ScopePolicy } from './types.js';

export type WriteAction = 'insert' | 'update' | 'delete';
export type RowAction = 'select' | WriteAction;

/** A projected column of a wrapped relation: plain, or replaced by its mask expression. */
export interface ProjectedColumn {
  name: string;
  mask: string | null;
}

/** Thrown by the rule lookups and the rewriter: the statement is denied with this error. */
export class RowRuleDenied extends Error {
  constructor(message: string, readonly hint: string) {
    super(message);
  }
}

export const RLS_HINT = 'scopegate checks writes under a row filter only for bare literal or parameter values (no cast but ::text: a cast such as ::char(2) or ::"char" changes the stored value) of simple filters (col = claim(...), col = ANY (claim_array(...)), col IN (...)); use PostgreSQL row-level security (CREATE POLICY ... WITH CHECK) for the rest: see docs/row-rules.md';

/** Whether any held scope can make the rewriter do something at all (else: no rewrite, as before). */
export function hasRowRules(held: readonly ScopePolicy[]): boolean {
  return held.some((s) => s.rowFilters.length > 0 || s.masks.length > 0 || s.rules.some((r) => r.starExpand));
}

/**
 * The row and column rules in force for one client and statement: filters come from every
 * held scope (OR-ed), projections and masks from the scope the statement runs under.
 */
export class EffectiveRules {
  constructor(
    private readonly policy: Policy,
    private readonly held: readonly ScopePolicy[],
    private readonly chosen: ScopePolicy,
    private readonly catalog: ColumnCatalog | null,
    /** Relations the statement reads with `*` / whole-row references. */
    private readonly starRels: readonly QualName[],
  ) {}

  get defaultSchema(): string {
    return this.policy.defaultSchema;
  }

  /** Filter texts to OR for `action` on `rel`; null = unfiltered (some granting scope has no filter). */
  filters(rel: QualName, action: RowAction): string[] | null {
    // A mask alone grants reading one column, masked: it neither adds a filter nor lifts
    // another scope's (a scope masking customers.email must not unfilter customers' rows).
    const granting = this.held.filter((s) => this.grantsBeyondMasks(s, action, rel));
    if (granting.length === 0) return null;
    const out: string[] = [];
    for (const s of granting) {
      if (s.all) return null;
      const f = s.rowFilters.find((r) => sameName(r.table, rel));
      if (f === undefined) return null;
      if (!out.includes(f.sql)) out.push(f.sql);
    }
    return out;
  }

  /** Whether a held scope grants `action` on `rel` at all (masks aside). */
  grantsAction(rel: QualName, action: RowAction): boolean {
    return this.held.some((s) => this.grantsBeyondMasks(s, action, rel));
  }

  private grantsBeyondMasks(s: ScopePolicy, action: RowAction, rel: QualName): boolean {
    return relGranted(s.masks.length === 0 ? s : { ...s, masks: [] }, this.policy, action, rel, null);
  }

  masks(rel: QualName): Map<string, string> {
    const m = new Map<string, string>();
    for (const x of this.chosen.masks) if (sameName(x.table, rel) && !m.has(x.column)) m.set(x.column, x.sql);
    return m;
  }

  /** Columns the chosen scope may select on `rel` (policy order), or null for all of them. */
  private allowedColumns(rel: QualName): string[] | null {
    if (this.chosen.all) return null;
    const cols: string[] = [];
    let matched = false;
    for (const r of this.chosen.rules) {
      if (!r.actions.has('select') || r.tables === null || !r.tables.some((p) => matches(p, rel))) continue;
      if (r.columns === null) return null;
      matched = true;
      for (const c of r.columns) if (!cols.includes(c)) cols.push(c);
    }
    // Readable without a select rule: the catalog (catalog: read) or through masks only.
    if (!matched && this.masks(rel).size === 0) return null;
    return cols;
  }

  private usesStar(rel: QualName): boolean {
    return this.starRels.some((r) => sameName(r, rel));
  }

  /**
   * What a read of `rel` is replaced by: null = the table as is (no filter, nothing hidden);
   * else the filter texts (or null) and the projection (or null for `*`).
   */
  readWrap(rel: QualName): { filters: string[] | null; columns: ProjectedColumn[] | null } | null {
    const filters = this.filters(rel, 'select');
    const masks = this.masks(rel);
    const allowed = this.allowedColumns(rel);
    const star = this.usesStar(rel);
    const project = masks.size > 0 || (allowed !== null && (star || filters !== null));
    if (!project) return filters === null ? null : { filters, columns: null };
    const known = this.catalog?.columns(rel.schema, rel.name);
    let names: string[];
    if (known !== undefined) {
      names = allowed === null ? [...known] : known.filter((c) => allowed.includes(c) || masks.has(c));
    } else if (allowed !== null && !star) {
      // Nothing reads `*`: the policy's own column order will do.
      names = [...allowed, ...[...masks.keys()].filter((c) => !allowed.includes(c))];
    } else {
      const why = this.catalog === null ? 'no column catalog is loaded' : 'the column catalog does not know the table';
      throw new RowRuleDenied(`permission denied: cannot expand * on ${displayName(rel)}: ${why}`, 'list the columns explicitly, or make sure the proxy has loaded the column catalog');
    }
    return { filters, columns: names.map((name) => ({ name, mask: masks.get(name) ?? null })) };
  }

  /** Whether a reference the rewriter did not handle would bypass a rule. */
  ruled(rel: QualName): boolean {
    if ((['select', 'insert', 'update', 'delete'] as const).some((a) => this.filters(rel, a) !== null)) return true;
    if (this.masks(rel).size > 0) return true;
    const allowed = this.allowedColumns(rel);
    return allowed !== null && this.usesStar(rel);
  }

  catalogColumns(rel: QualName): readonly string[] | undefined {
    return this.catalog?.columns(rel.schema, rel.name);
  }
}
