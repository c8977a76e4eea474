/** Row filters as a barrier: the client's own conditions never see a row before the filter has passed it. */
import { isNode, type Node } from './parse.js';

/**
 * Postgres orders the conditions of one WHERE by cost, not by where they were written, so a
 * filter ANDed after the client's conditions can run after them: a condition that raises an
 * error with the row's value in it (`has_schema_privilege(tenant_id, 'usage')`, a cast, a
 * division) reads rows outside the filter. RLS solves this with leakproof functions; here
 * the client's conditions are split the same way:
 *
 *   <conditions that cannot leak> AND filter AND CASE WHEN filter THEN <the rest> END
 *
 * CASE evaluates THEN only for rows where WHEN holds, so only rows inside the filter reach
 * anything that could leak, while comparisons of columns with constants stay usable for
 * indexes. A condition "cannot leak" when it compares columns, constants and parameters
 * with comparison operators (and AND/OR/NOT, IN, BETWEEN, IS NULL of those): they raise no
 * error that depends on a row's value.
 */
export function guardedWhere(user: unknown, filter: Node, columns: ReadonlySet<string> | null): Node {
  if (user === undefined || user === null) return filter;
  const all = conjuncts(user);
  const safe = all.filter((c) => cannotLeak(c, columns));
  if (safe.length === all.length) return { BoolExpr: { boolop: 'AND_EXPR', args: [user, filter] } };
  const rest = all.filter((c) => !safe.includes(c));
  const guarded = {
    CaseExpr: {
      args: [{ CaseWhen: { expr: structuredClone(filter), result: rest.length === 1 ? rest[0] : { BoolExpr: { boolop: 'AND_EXPR', args: rest } } } }],
      defresult: { A_Const: { boolval: {} } },
    },
  };
  return { BoolExpr: { boolop: 'AND_EXPR', args: [...safe, filter, guarded] } };
}

/** The top-level AND terms of a condition. */
function conjuncts(e: unknown): unknown[] {
  const b = isNode(e) && isNode(e.BoolExpr) ? e.BoolExpr : null;
  if (b !== null && b.boolop === 'AND_EXPR' && Array.isArray(b.args)) return b.args.flatMap(conjuncts);
  return [e];
}

const COMPARISONS = new Set(['=', '<>', '!=', '<', '>', '<=', '>=']);

/**
 * Comparisons and boolean logic over columns, constants and parameters only. `columns`: the
 * filtered relation's columns; a name that is none of them may be a function call in
 * attribute notation (`t.f` is `f(t)`), and null (columns unknown) trusts no name.
 */
export function cannotLeak(e: unknown, columns: ReadonlySet<string> | null): boolean {
  if (!isNode(e)) return false;
  const atom = (x: unknown): boolean => isAtom(x, columns);
  const b = e.BoolExpr;
  if (isNode(b)) return Array.isArray(b.args) && b.args.every((x) => cannotLeak(x, columns));
  const x = e.A_Expr;
  if (isNode(x)) {
    const op = Array.isArray(x.name) && x.name.length === 1 && isNode(x.name[0]) && isNode(x.name[0].String) ? x.name[0].String.sval : null;
    switch (x.kind) {
      case 'AEXPR_OP':
      case 'AEXPR_DISTINCT':
      case 'AEXPR_NOT_DISTINCT':
        return typeof op === 'string' && COMPARISONS.has(op) && atom(x.lexpr) && atom(x.rexpr);
      case 'AEXPR_IN':
        return (op === '=' || op === '<>') && atom(x.lexpr) && Array.isArray(x.rexpr) && x.rexpr.every(atom);
      case 'AEXPR_BETWEEN':
      case 'AEXPR_NOT_BETWEEN':
        return atom(x.lexpr) && Array.isArray(x.rexpr) && x.rexpr.every(atom);
      default:
        return false;
    }
  }
  const n = e.NullTest;
  if (isNode(n)) return atom(n.arg);
  const t = e.BooleanTest;
  if (isNode(t)) return atom(t.arg);
  return atom(e) && isNode(e.ColumnRef); // a boolean column on its own
}

/** A column, a constant or a parameter; a cast only of a constant or a parameter (row-independent). */
function isAtom(e: unknown, columns: ReadonlySet<string> | null): boolean {
  if (!isNode(e)) return false;
  if (isNode(e.ColumnRef)) {
    const fields = e.ColumnRef.fields;
    if (!Array.isArray(fields) || fields.length === 0 || !fields.every((f) => isNode(f) && isNode(f.String))) return false;
    const last = (fields[fields.length - 1] as { String: { sval?: unknown } }).String.sval;
    return columns !== null && typeof last === 'string' && columns.has(last);
  }
  if (isNode(e.A_Const) || isNode(e.ParamRef)) return true;
  const c = e.TypeCast;
  return isNode(c) && isNode(c.arg) && (isNode(c.arg.A_Const) || isNode(c.arg.ParamRef));
}
