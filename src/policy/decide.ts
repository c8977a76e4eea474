import { describeAccess } from './ast-walk.js';
import { analyzeStatement } from './analyze.js';
import { displayName } from './names.js';
import type { ParsedText } from './parse.js';
import type { Access, Decision, NamePattern, Policy, QualName, RelAction, Rule, ScopePolicy, StatementDecision } from './types.js';
import { SQLSTATE } from '../errors.js';

const CATALOG_SCHEMAS = new Set(['pg_catalog', 'information_schema']);
const COLUMN_ACTIONS = new Set<RelAction>(['select', 'insert', 'update']);

function matches(p: NamePattern, q: QualName): boolean {
  return (p.schema === '*' || p.schema === q.schema) && (p.name === '*' || p.name === q.name);
}

/** Actions that also satisfy `action`: update implies lock (FOR UPDATE) and sequence usage (nextval). */
function ruleHas(rule: Rule, action: RelAction): boolean {
  if (rule.actions.has(action)) return true;
  return (action === 'lock' || action === 'usage') && rule.actions.has('update');
}

function relGranted(scope: ScopePolicy, policy: Policy, action: RelAction, rel: QualName, column: string | null): boolean {
  if (scope.all) return true;
  if (action === 'select' && policy.catalog === 'read' && CATALOG_SCHEMAS.has(rel.schema)) return true;
  for (const rule of scope.rules) {
    if (!ruleHas(rule, action) || rule.tables === null || !rule.tables.some((p) => matches(p, rel))) continue;
    if (column === null || rule.columns === null || !COLUMN_ACTIONS.has(action)) return true;
    if (column !== '*' && rule.columns.has(column)) return true;
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

/** The message text after "permission denied: ". */
function deniedWhat(scopes: readonly ScopePolicy[], policy: Policy, a: Access): string {
  switch (a.t) {
    case 'rel':
      return `${a.action} on ${displayName(a.rel)}${a.column === null ? '' : `.${a.column}`}`;
    case 'col_any': {
      // Name the first candidate some held scope does not grant the column on.
      const bad = a.candidates.find((r) => !scopes.some((s) => relGranted(s, policy, 'select', r, a.column))) ?? a.candidates[0]!;
      return `select on ${displayName(bad)}.${a.column}`;
    }
    case 'func':
      return `execute on function ${displayName(a.fn)}`;
    case 'channel':
      return `${a.action} on channel ${a.channel ?? '(dynamic)'}`;
    case 'forbidden':
      return a.what;
  }
}

function grantHint(policy: Policy, a: Access): string {
  const s = policy.scopes.find((sc) => grants(sc, policy, a));
  let hint = s !== undefined ? `scope "${s.name}" grants it` : 'no scope grants it';
  if (a.t === 'col_any' && a.candidates.length > 1) hint += `; the unqualified column ${a.column} could belong to ${a.candidates.map(displayName).join(' or ')}: qualify it`;
  return hint;
}

/** Scopes the client holds that the policy knows, in policy file order. */
export function heldScopes(policy: Policy, scopes: readonly string[]): ScopePolicy[] {
  return policy.scopes.filter((s) => scopes.includes(s.name));
}

interface StmtResult {
  decision: StatementDecision;
  /** Held scopes covering the statement alone (all held scopes for statements needing nothing). */
  covering: ScopePolicy[];
  neutral: boolean;
  forbidden: boolean;
  split: boolean;
}

function decideStatement(policy: Policy, held: readonly ScopePolicy[], kind: string, text: string, accesses: readonly Access[]): StmtResult {
  const actions = accesses.map(describeAccess);
  const covering = held.filter((s) => accesses.every((a) => grants(s, policy, a)));
  if (covering.length > 0 || accesses.length === 0) {
    const first = covering[0] ?? null;
    return {
      decision: { kind, text, allowed: true, role: first?.role ?? null, scope: first?.name ?? null, actions },
      covering, neutral: accesses.length === 0, forbidden: false, split: false,
    };
  }
  // Prefer reporting an access no held scope grants; otherwise the statement needs several scopes at once.
  const ungranted = accesses.find((a) => !held.some((s) => grants(s, policy, a)));
  let message: string;
  let hint: string;
  if (ungranted !== undefined) {
    message = `permission denied: ${deniedWhat(held, policy, ungranted)}`;
    hint = grantHint(policy, ungranted);
  } else {
    const best = held[0]!;
    const miss = accesses.find((a) => !grants(best, policy, a))!;
    message = `permission denied: ${deniedWhat([best], policy, miss)}`;
    hint = `no single scope grants the whole statement: scopes ${held.map((s) => `"${s.name}"`).join(', ')} do together, but a statement runs under one role; split it into statements each covered by one scope`;
  }
  return {
    decision: { kind, text, allowed: false, role: null, scope: null, actions, error: { code: SQLSTATE.INSUFFICIENT_PRIVILEGE, message, hint } },
    covering: [], neutral: false, forbidden: accesses.some((a) => a.t === 'forbidden' && !held.some((s) => s.all)), split: ungranted === undefined,
  };
}

/** Decides one message (a simple Query may carry several statements). Pure: no caching here. */
export function decide(policy: Policy, version: string, parsed: ParsedText, scopes: readonly string[]): Decision {
  const enforced = policy.mode === 'enforce';
  const held = heldScopes(policy, scopes);
  const fallback = held[0] ?? null;
  const base = { enforced, fingerprint: parsed.fingerprint, normalized: parsed.normalized, policyVersion: version };
  if (!parsed.ok) {
    return {
      ...base, allowed: false, role: enforced ? null : fallback?.role ?? null, scope: enforced ? null : fallback?.name ?? null, statements: [],
      error: { code: SQLSTATE.SYNTAX_ERROR, message: `unparseable statement: ${parsed.error}`, hint: 'scopegate only forwards statements the PostgreSQL parser accepts' },
      reason: 'unparseable', summary: '',
    };
  }
  const results = parsed.statements.map((ps) => {
    const an = analyzeStatement(ps, policy.defaultSchema);
    return decideStatement(policy, held, an.kind, ps.text, an.accesses);
  });
  const statements = results.map((r) => r.decision);
  const summary = [...new Set(statements.flatMap((d) => d.actions))].join(', ');
  const denied = results.find((r) => !r.decision.allowed);
  if (denied !== undefined) {
    return {
      ...base, allowed: false, role: enforced ? null : fallback?.role ?? null, scope: enforced ? null : fallback?.name ?? null, statements,
      error: denied.decision.error!, reason: denied.forbidden ? 'forbidden' : denied.split ? 'split_scopes' : 'denied', summary,
    };
  }
  // The whole message runs under one role: the first held scope covering every statement.
  const needy = results.filter((r) => !r.neutral);
  const common = held.find((s) => needy.every((r) => r.covering.includes(s))) ?? null;
  if (needy.length > 0 && common === null) {
    const error = {
      code: SQLSTATE.INSUFFICIENT_PRIVILEGE,
      message: 'permission denied: the statements of this message need different roles',
      hint: `statements are granted by different scopes (${needy.map((r) => `"${r.decision.scope}"`).join(', ')}); send them as separate queries`,
    };
    return { ...base, allowed: false, role: enforced ? null : fallback?.role ?? null, scope: enforced ? null : fallback?.name ?? null, statements, error, reason: 'role_conflict', summary };
  }
  const chosen = common ?? fallback;
  return {
    ...base, allowed: true, role: chosen?.role ?? null, scope: chosen?.name ?? null, statements,
    reason: statements.length === 0 ? 'empty' : 'granted', summary,
  };
}
