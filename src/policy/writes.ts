/** Row-filter checks on written values (INSERT/UPDATE targets). */
import { isNode, type Node } from './parse.js';
import type { BindCheck } from './types.js';

/** What a write puts in one column, as far as the statement text tells. */
export type WrittenValue =
  | { t: 'lit'; text: string }
  | { t: 'null' }
  | { t: 'param'; n: number }
  | { t: 'default' }
  | { t: 'other' };

/** A simple filter: every listed column must hold one of its values (text form). */
export type Conjunction = Map<string, Set<string>>;

function unwrap(v: unknown): [string, Node] | null {
  if (!isNode(v)) return null;
  const k = Object.keys(v);
  return k.length === 1 && isNode(v[k[0]!]) ? [k[0]!, v[k[0]!] as Node] : null;
}

/** The text form Postgres would see for a constant (as a Bind text parameter would carry it). */
export function constText(c: Node): string | null {
  if (c.isnull === true) return null;
  if (isNode(c.sval)) return typeof c.sval.sval === 'string' ? c.sval.sval : '';
  if (isNode(c.ival)) return String(typeof c.ival.ival === 'number' ? c.ival.ival : 0);
  if (isNode(c.fval)) return typeof c.fval.fval === 'string' ? c.fval.fval : null;
  if (isNode(c.boolval)) return c.boolval.boolval === true ? 'true' : 'false';
  if (isNode(c.bsval)) return typeof c.bsval.bsval === 'string' ? c.bsval.bsval : null;
  return null;
}

/**
 * Casts that store exactly the text they are given: to unconstrained text/varchar, the value
 * then reaches the column by the same assignment a bare literal takes (which errors rather than
 * truncates). Every other cast may change the value on the way: 'acme'::char(2) stores 'ac',
 * 'acme'::"char" 'a', $1::varchar(1) the first character, a numeric cast rounds.
 */
function valuePreservingCast(typeName: unknown): boolean {
  if (!isNode(typeName) || !Array.isArray(typeName.names)) return false;
  if ((Array.isArray(typeName.typmods) && typeName.typmods.length > 0) || (Array.isArray(typeName.arrayBounds) && typeName.arrayBounds.length > 0)) return false;
  if (typeName.setof === true || typeName.pct_type === true) return false;
  const names = typeName.names.map((n) => (isNode(n) && isNode(n.String) && typeof n.String.sval === 'string' ? n.String.sval : null));
  const last = names[names.length - 1];
  if (names.length === 2 && names[0] !== 'pg_catalog') return false;
  if (names.length > 2 || names.length === 0) return false;
  // Unqualified "varchar" only exists as pg_catalog.varchar (the grammar qualifies it); "text" resolves there first.
  return last === 'text' || (last === 'varchar' && names.length === 2);
}

/**
 * What a write stores in a column, as far as the text says: a bare literal or parameter (the
 * column's own type decides how it is read), optionally through a value-preserving cast.
 * Anything else (other casts, COLLATE, expressions, bit-string literals whose text form is not
 * the stored one) is 'other': it cannot be checked against a filter before it runs.
 */
export function writtenValue(v: unknown): WrittenValue {
  const u = unwrap(v);
  if (u === null) return { t: 'other' };
  const [type, b] = u;
  if (type === 'SetToDefault') return { t: 'default' };
  if (type === 'ParamRef' && typeof b.number === 'number') return { t: 'param', n: b.number };
  if (type === 'A_Const') {
    if (isNode(b.bsval)) return { t: 'other' };
    const text = constText(b);
    return text === null ? { t: 'null' } : { t: 'lit', text };
  }
  if (type === 'TypeCast' && valuePreservingCast(b.typeName)) {
    const inner = writtenValue(b.arg);
    return inner.t === 'param' || inner.t === 'lit' || inner.t === 'null' ? inner : { t: 'other' };
  }
  return { t: 'other' };
}

/** How often each parameter number occurs in a statement's parse tree. */
export function paramUses(v: unknown, out: Map<number, number> = new Map()): Map<number, number> {
  if (Array.isArray(v)) {
    for (const x of v) paramUses(x, out);
    return out;
  }
  if (!isNode(v)) return out;
  if (isNode(v.ParamRef) && typeof v.ParamRef.number === 'number') out.set(v.ParamRef.number, (out.get(v.ParamRef.number) ?? 0) + 1);
  for (const x of Object.values(v)) if (typeof x === 'object' && x !== null) paramUses(x, out);
  return out;
}

function columnName(v: unknown): string | null {
  const u = unwrap(v);
  if (u === null || u[0] !== 'ColumnRef' || !Array.isArray(u[1].fields)) return null;
  const last: unknown = u[1].fields[u[1].fields.length - 1];
  return isNode(last) && isNode(last.String) && typeof last.String.sval === 'string' ? last.String.sval : null;
}

function constList(items: unknown): Set<string> | null {
  if (!Array.isArray(items)) return null;
  const out = new Set<string>();
  for (const it of items) {
    const u = unwrap(it);
    const text = u !== null && u[0] === 'A_Const' ? constText(u[1]) : null;
    if (text === null) return null;
    out.add(text);
  }
  return out;
}

function arrayElements(v: unknown): Set<string> | null {
  const u = unwrap(v);
  if (u === null) return null;
  if (u[0] === 'TypeCast') return arrayElements(u[1].arg);
  if (u[0] === 'A_ArrayExpr') return constList(u[1].elements ?? []);
  return null;
}

function opName(b: Node): string | null {
  const n: unknown = Array.isArray(b.name) ? b.name[0] : undefined;
  return isNode(n) && isNode(n.String) && typeof n.String.sval === 'string' ? n.String.sval : null;
}

function addTo(out: Conjunction, col: string, values: Set<string>): void {
  const prev = out.get(col);
  out.set(col, prev === undefined ? values : new Set([...prev].filter((x) => values.has(x))));
}

/**
 * A claim-substituted filter as `col = const`, `col = ANY (ARRAY[...])`, `col IN (...)` and
 * ANDs of those; null when it is anything else (then writes cannot be checked statically).
 */
export function simpleConjunction(expr: unknown, out: Conjunction = new Map()): Conjunction | null {
  const u = unwrap(expr);
  if (u === null) return null;
  const [type, b] = u;
  if (type === 'BoolExpr' && b.boolop === 'AND_EXPR' && Array.isArray(b.args)) {
    for (const a of b.args) if (simpleConjunction(a, out) === null) return null;
    return out;
  }
  if (type !== 'A_Expr' || opName(b) !== '=') return null;
  const l = columnName(b.lexpr);
  if (b.kind === 'AEXPR_OP') {
    const r = columnName(b.rexpr);
    const lc = unwrap(b.lexpr);
    const rc = unwrap(b.rexpr);
    if (l !== null && rc !== null && rc[0] === 'A_Const' && constText(rc[1]) !== null) addTo(out, l, new Set([constText(rc[1])!]));
    else if (r !== null && lc !== null && lc[0] === 'A_Const' && constText(lc[1]) !== null) addTo(out, r, new Set([constText(lc[1])!]));
    else return null;
    return out;
  }
  if (l === null) return null;
  if (b.kind === 'AEXPR_OP_ANY') {
    const els = arrayElements(b.rexpr);
    if (els === null) return null;
    addTo(out, l, els);
    return out;
  }
  if (b.kind === 'AEXPR_IN') {
    const r = unwrap(b.rexpr);
    const els = r !== null && r[0] === 'List' ? constList(r[1].items) : null;
    if (els === null) return null;
    addTo(out, l, els);
    return out;
  }
  return null;
}

/** Every column name a filter mentions (for UPDATEs that leave them alone). */
export function referencedColumns(v: unknown, out: Set<string> = new Set()): Set<string> {
  if (Array.isArray(v)) {
    for (const x of v) referencedColumns(x, out);
    return out;
  }
  if (!isNode(v)) return out;
  const c = columnName(v);
  if (c !== null) out.add(c);
  for (const x of Object.values(v)) if (typeof x === 'object' && x !== null) referencedColumns(x, out);
  return out;
}

/**
 * Checks one written row against the OR of `disjuncts` (each null when not simple).
 * `row` has the columns the write sets; `unsetIsUnknown` (INSERT): a filter column the write
 * does not set gets its default, which cannot be verified. Returns the Bind checks needed,
 * or null when the row cannot be shown to stay inside the filter.
 */
export function checkRow(disjuncts: ReadonlyArray<Conjunction | null>, row: ReadonlyMap<string, WrittenValue>): BindCheck[] | null {
  const candidates: BindCheck[][] = [];
  for (const d of disjuncts) {
    if (d === null) continue;
    const checks: BindCheck[] = [];
    let ok = true;
    for (const [col, allowed] of d) {
      const v = row.get(col);
      if (v === undefined || v.t === 'other' || v.t === 'default' || v.t === 'null') { ok = false; break; }
      if (v.t === 'lit') {
        if (!allowed.has(v.text)) { ok = false; break; }
      } else {
        checks.push({ param: v.n, column: col, allowed: [...allowed].sort() });
      }
    }
    if (!ok) continue;
    if (checks.length === 0) return [];
    candidates.push(checks);
  }
  if (candidates.length === 0) return null;
  if (candidates.length === 1) return candidates[0]!;
  // Several filters could admit the row: merge them only when each pins the same one parameter.
  const first = candidates[0]!;
  if (candidates.every((c) => c.length === 1 && c[0]!.param === first[0]!.param && c[0]!.column === first[0]!.column)) {
    const all = new Set(candidates.flatMap((c) => c[0]!.allowed));
    return [{ param: first[0]!.param, column: first[0]!.column, allowed: [...all].sort() }];
  }
  return null;
}
