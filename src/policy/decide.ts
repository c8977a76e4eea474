/** The scope decision for one text: allowed, rewritten or refused, with the granting scope's role. */
import { describeAccess } from './ast-walk.js';
import { analyzeStatement } from './analyze.js';
import { displayIdent, displayName } from './names.js';
import type { ParsedStatement, ParsedText } from './parse.js';
import { ClaimResolver } from './claims.js';
import { grants, relGranted } from './grants.js';
import { Rewriter } from './rewrite.js';
import { EffectiveRules, hasRowRules, RowRuleDenied } from './rules.js';
import type { Access, BindCheck, ColumnCatalog, Decision, Policy, QualName, ScopePolicy, StatementDecision } from './types.js';
import { SQLSTATE } from '../errors.js';

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
      // As written: an unqualified name resolves by search_path (pg_sleep is pg_catalog's), so
      // prefixing default_schema would name a function the client never meant.
      return `execute on function ${a.unqualified ? displayIdent(a.fn.name) : displayName(a.fn)}`;
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

/** What row and column rules need besides the policy: the client's claims and the column catalog. */
export interface RuleContext {
  claims: ClaimResolver;
  catalog: ColumnCatalog | null;
}

type Rewritten = { ok: true; text: string | null; bindChecks: BindCheck[] } | { ok: false; index: number; message: string; hint: string };

/** Rewrites every statement of an allowed message for the row/column rules in force. */
function applyRowRules(policy: Policy, held: readonly ScopePolicy[], chosen: ScopePolicy, stmts: readonly ParsedStatement[], accesses: readonly (readonly Access[])[], ctx: RuleContext): Rewritten {
  const texts: string[] = [];
  const bindChecks: BindCheck[] = [];
  let changed = false;
  for (let i = 0; i < stmts.length; i++) {
    const ps = stmts[i]!;
    const starRels: QualName[] = accesses[i]!.flatMap((a) => (a.t === 'rel' && a.action === 'select' && a.column === '*' ? [a.rel] : []));
    const rules = new EffectiveRules(policy, held, chosen, ctx.catalog, starRels);
    try {
      const r = new Rewriter(rules, ctx.claims).rewrite(ps.type, ps.body);
      texts.push(r.text ?? ps.text);
      changed ||= r.text !== null;
      bindChecks.push(...r.bindChecks);
    } catch (err) {
      if (!(err instanceof RowRuleDenied)) throw err;
      return { ok: false, index: i, message: err.message, hint: err.hint };
    }
    // A missing claim is reported after the walk, so the claims consulted do not depend on where it stopped.
    const missing = [...ctx.claims.missing];
    if (missing.length > 0) {
      return { ok: false, index: i, message: `permission denied: the row rules need claim ${missing.map((m) => `"${m}"`).join(', ')}, which the token does not carry`, hint: 'the token must carry every claim the filters of the client\'s scopes use; see docs/row-rules.md' };
    }
    const notArray = [...ctx.claims.notArray];
    if (notArray.length > 0) {
      return { ok: false, index: i, message: `permission denied: claim ${notArray.map((m) => `"${m}"`).join(', ')} is not an array (claim_array)`, hint: 'see docs/row-rules.md' };
    }
  }
  return { ok: true, text: changed ? texts.join(';\n') : null, bindChecks };
}

/**
 * The refusal of a text too deeply nested to walk (the walk ran out of stack). Refused in
 * audit mode too: nobody knows what it would do. Postgres's own answer to such depth is 54001.
 */
export function tooComplexDecision(version: string): Decision {
  return {
    allowed: false, enforced: true, role: null, scope: null, statements: [], fingerprint: '', normalized: '', policyVersion: version,
    rewritten: null, bindChecks: [], summary: '', reason: 'parser_failed',
    error: { code: SQLSTATE.STATEMENT_TOO_COMPLEX, message: 'statement too deeply nested for scopegate to check', hint: 'Flatten the expression (an IN list or an array instead of a chain of operators), or send it in parts.' },
  };
}

/**
 * The refusal of a text too costly to lex (lex-cost.ts), never parsed. Refused in audit mode
 * too: forwarded, it would cost the server as much. `sql`: what the audit line shows of it.
 */
export function tooCostlyDecision(version: string, err: { message: string; hint?: string | undefined }, sql: string): Decision {
  return {
    allowed: false, enforced: true, role: null, scope: null, statements: [], fingerprint: '', normalized: sql.slice(0, 200), policyVersion: version,
    rewritten: null, bindChecks: [], summary: '', reason: 'too_complex',
    error: { code: SQLSTATE.STATEMENT_TOO_COMPLEX, message: err.message, hint: err.hint ?? '' },
  };
}

/** Decides one message (a simple Query may carry several statements). Pure: no caching here. */
export function decide(policy: Policy, version: string, parsed: ParsedText, scopes: readonly string[], ctx: RuleContext = { claims: new ClaimResolver(undefined), catalog: null }): Decision {
  const enforced = policy.mode === 'enforce';
  const held = heldScopes(policy, scopes);
  const fallback = held[0] ?? null;
  const base = { enforced, fingerprint: parsed.fingerprint, normalized: parsed.normalized, policyVersion: version, rewritten: null, bindChecks: [] };
  if (!parsed.ok && parsed.tooComplex !== undefined) return tooCostlyDecision(version, { message: parsed.error, hint: parsed.tooComplex.hint }, parsed.normalized);
  if (!parsed.ok) {
    return {
      ...base, allowed: false, role: enforced ? null : fallback?.role ?? null, scope: enforced ? null : fallback?.name ?? null, statements: [],
      error: parsed.failure === true
        ? { code: SQLSTATE.STATEMENT_TOO_COMPLEX, message: `statement refused: ${parsed.error}`, hint: 'scopegate replaced its parser; simplify the statement or send it in parts' }
        : { code: SQLSTATE.SYNTAX_ERROR, message: `unparseable statement: ${parsed.error}`, hint: 'scopegate only forwards statements the PostgreSQL parser accepts' },
      reason: parsed.failure === true ? 'parser_failed' : 'unparseable', summary: '',
    };
  }
  const analyses = parsed.statements.map((ps) => analyzeStatement(ps, policy.defaultSchema, ctx.catalog));
  const results = parsed.statements.map((ps, i) => decideStatement(policy, held, analyses[i]!.kind, ps.text, analyses[i]!.accesses));
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
  if (chosen !== null && hasRowRules(held)) {
    const rw = applyRowRules(policy, held, chosen, parsed.statements, analyses.map((a) => a.accesses), ctx);
    if (!rw.ok) {
      const error = { code: SQLSTATE.INSUFFICIENT_PRIVILEGE, message: rw.message, hint: rw.hint };
      const marked = statements.map((d, i) => (i === rw.index ? { ...d, allowed: false, role: null, scope: null, error } : d));
      return { ...base, allowed: false, role: enforced ? null : fallback?.role ?? null, scope: enforced ? null : fallback?.name ?? null, statements: marked, error, reason: 'denied', summary };
    }
    return {
      ...base, allowed: true, role: chosen.role, scope: chosen.name, statements,
      reason: statements.length === 0 ? 'empty' : 'granted', summary, rewritten: rw.text, bindChecks: rw.bindChecks,
    };
  }
  return {
    ...base, allowed: true, role: chosen?.role ?? null, scope: chosen?.name ?? null, statements,
    reason: statements.length === 0 ? 'empty' : 'granted', summary,
  };
}
