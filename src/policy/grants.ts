/** Matching a needed access against a scope's allow rules. */
import { isMetadataRelation } from './catalog-read.js';
import { sameName } from './names.js';
import type { Access, NamePattern, Policy, QualName, RelAction, Rule, ScopePolicy } from './types.js';

const COLUMN_ACTIONS = new Set<RelAction>(['select', 'insert', 'update']);

export function matches(p: NamePattern, q: QualName): boolean {
  return (p.schema === '*' || p.schema === q.schema) && (p.name === '*' || p.name === q.name);
}

/** Actions that also satisfy `action`: update implies lock (FOR UPDATE) and sequence usage (nextval). */
function ruleHas(rule: Rule, action: RelAction): boolean {
  if (rule.actions.has(action)) return true;
  return (action === 'lock' || action === 'usage') && rule.actions.has('update');
}

export function relGranted(scope: ScopePolicy, policy: Policy, action: RelAction, rel: QualName, column: string | null): boolean {
  if (scope.all) return true;
  // catalog: read covers the named metadata relations only; statistics, other sessions' state,
  // sequence values and the like go through grants (catalog-read.ts).
  if (action === 'select' && policy.catalog === 'read' && isMetadataRelation(rel)) return true;
  // A mask grants reading its column (masked); `*` then expands to the visible columns, masked.
  if (action === 'select' && scope.masks.some((m) => sameName(m.table, rel) && (column === null || column === '*' || column === m.column))) return true;
  for (const rule of scope.rules) {
    if (!ruleHas(rule, action) || rule.tables === null || !rule.tables.some((p) => matches(p, rel))) continue;
    if (column === null || rule.columns === null || !COLUMN_ACTIONS.has(action)) return true;
    if (column !== '*' && rule.columns.has(column)) return true;
    // star: expand: the rewriter replaces the relation by a projection of the allowed columns.
    if (column === '*' && action === 'select' && rule.starExpand) return true;
  }
  return false;
}

/** Whether one scope alone grants one access. */
export function grants(scope: ScopePolicy, policy: Policy, a: Access): boolean {
  if (scope.all) return true;
  switch (a.t) {
    case 'forbidden':
      return false;
    case 'rel':
      return relGranted(scope, policy, a.action, a.rel, a.column);
    case 'col_any':
      return a.candidates.every((r) => relGranted(scope, policy, a.action, r, a.column));
    case 'func': {
      // An unqualified name may resolve to pg_catalog (searched first) or the default schema.
      const alt: QualName = { schema: 'pg_catalog', name: a.fn.name };
      return scope.rules.some((r) => r.actions.has('execute') && r.functions !== null && r.functions.some((p) => matches(p, a.fn) || (a.unqualified && matches(p, alt))));
    }
    case 'channel':
      return scope.rules.some((r) => r.actions.has(a.action) && (r.channels === null || (a.channel !== null && r.channels.has(a.channel))));
  }
}

