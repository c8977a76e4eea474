/** Policy expressions (row filters, masks) parsed and validated once at load. */
import { parseSync } from './wasm.js';
import { findNode, isNode, type Node } from './parse.js';

/**
 * Row filter and mask expressions from the policy, parsed once per distinct text. They are
 * policy-authored SQL, but still parsed (never pasted into statements as text): the rewriter
 * splices their AST into the client's.
 */
export type PolicyExpr = { ok: true; node: Node } | { ok: false; error: string };

const cache = new Map<string, PolicyExpr>();

export const CLAIM_FUNCTIONS = new Set(['claim', 'claim_array']);

function parserLoaded(): boolean {
  try {
    parseSync('SELECT 1');
    return true;
  } catch {
    return false;
  }
}

/** claim('x') / claim_array('x') must take one constant string: the claim path. */
function badClaimCall(v: unknown): string | null {
  return findNode(v, (n) => {
    const fc = n.FuncCall;
    const name = isNode(fc) ? claimFunction(fc) : null;
    if (!isNode(fc) || name === null) return null;
    const args = Array.isArray(fc.args) ? fc.args : [];
    return args.length !== 1 || claimPathArg(args[0]) === null ? `${name}() takes one string constant, the claim name (e.g. ${name}('tenant'))` : null;
  });
}

/** 'claim' / 'claim_array' when `fc` (a FuncCall body) calls one, unqualified. */
export function claimFunction(fc: Node): string | null {
  const names = Array.isArray(fc.funcname) ? fc.funcname : [];
  if (names.length !== 1) return null;
  const n: unknown = names[0];
  const name = isNode(n) && isNode(n.String) && typeof n.String.sval === 'string' ? n.String.sval : null;
  return name !== null && CLAIM_FUNCTIONS.has(name) ? name : null;
}

export function claimPathArg(arg: unknown): string | null {
  if (isNode(arg) && isNode(arg.A_Const) && isNode(arg.A_Const.sval) && typeof arg.A_Const.sval.sval === 'string' && arg.A_Const.sval.sval !== '') return arg.A_Const.sval.sval;
  return null;
}

function parseExpr(kind: 'filter' | 'mask', sql: string): PolicyExpr {
  const key = `${kind}\u0000${sql}`;
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  let res: PolicyExpr;
  try {
    // The wrapper must come back as exactly this one SELECT, or the text escaped the expression.
    const tree: unknown = parseSync(kind === 'filter' ? `SELECT WHERE ${sql}` : `SELECT ${sql}`);
    const stmts = isNode(tree) && Array.isArray(tree.stmts) ? tree.stmts : [];
    const raw: unknown = stmts[0];
    const st = stmts.length === 1 && isNode(raw) && isNode(raw.stmt) && isNode(raw.stmt.SelectStmt) ? raw.stmt.SelectStmt : null;
    const keys = st === null ? [] : Object.keys(st).filter((k) => k !== 'limitOption' && k !== 'op');
    const targets = st !== null && Array.isArray(st.targetList) ? st.targetList : [];
    let node: unknown = null;
    if (st !== null && st.op === 'SETOP_NONE') {
      if (kind === 'filter' && keys.length === 1 && keys[0] === 'whereClause') node = st.whereClause;
      const t: unknown = targets[0];
      if (kind === 'mask' && keys.length === 1 && targets.length === 1 && isNode(t) && isNode(t.ResTarget) && t.ResTarget.name === undefined) node = t.ResTarget.val;
    }
    if (!isNode(node)) res = { ok: false, error: kind === 'filter' ? 'must be one boolean SQL condition' : 'must be one SQL expression (no alias)' };
    else {
      const bad = badClaimCall(node);
      res = bad === null ? { ok: true, node } : { ok: false, error: bad };
    }
  } catch (err) {
    res = { ok: false, error: `not valid SQL: ${(err as Error).message}` };
  }
  cache.set(key, res);
  return res;
}

/** Parses a policy expression (needs the parser loaded). */
export function policyExpr(kind: 'filter' | 'mask', sql: string): PolicyExpr {
  return parseExpr(kind, sql);
}

/** For policy validation: an error message, or null (also when the parser is not loaded yet: checked at first use). */
export function policyExprError(kind: 'filter' | 'mask', sql: string): string | null {
  if (!parserLoaded()) return null;
  const r = parseExpr(kind, sql);
  return r.ok ? null : r.error;
}
