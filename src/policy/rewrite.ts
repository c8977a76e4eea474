/** AST rewrites for row filters, column masks and `*` expansion, deparsed back to SQL. */
import { parseSync } from './wasm.js';
import { deparseSync } from 'pgsql-deparser';
import { unqualifiedRelationSchema } from './builtins.js';
import type { ClaimResolver } from './claims.js';
import { policyExpr } from './exprs.js';
import { guardedWhere } from './guard.js';
import { displayName } from './names.js';
import type { Node } from './parse.js';
import { RLS_HINT, RowRuleDenied, type EffectiveRules, type RowAction, type WriteAction } from './rules.js';
import type { BindCheck, QualName } from './types.js';
import { checkRow, paramUses, referencedColumns, simpleConjunction, writtenValue, type WrittenValue } from './writes.js';

/** The parse tree is shared through the parse cache: the rewriter works on a copy it may mutate. */
type M = Record<string, unknown>;

interface CteFrame {
  names: ReadonlySet<string>;
  parent: CteFrame | null;
}

/** Statements whose reads and writes the rewriter understands; any other statement touching a ruled table is denied. */
const REWRITABLE = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt', 'ExplainStmt', 'DeclareCursorStmt', 'CopyStmt', 'CreateTableAsStmt']);

function isM(v: unknown): v is M {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

function unwrap(v: unknown): [string, M] | null {
  if (!isM(v)) return null;
  const k = Object.keys(v);
  const body = k.length === 1 ? v[k[0]!] : undefined;
  return isM(body) ? [k[0]!, body] : null;
}

function isRangeVarBody(v: M): boolean {
  return typeof v.relname === 'string' && typeof v.relpersistence === 'string';
}

const or = (xs: Node[]): Node => (xs.length === 1 ? xs[0]! : { BoolExpr: { boolop: 'OR_EXPR', args: xs } });

/** Qualifies a filter's bare column names with the table's reference name (not inside its subqueries). */
function qualify(v: unknown, refname: string): unknown {
  if (Array.isArray(v)) return v.map((x) => qualify(x, refname));
  if (!isM(v)) return v;
  if (isM(v.SubLink)) return v;
  if (isM(v.ColumnRef) && Array.isArray(v.ColumnRef.fields) && v.ColumnRef.fields.length === 1) {
    return { ColumnRef: { ...v.ColumnRef, fields: [{ String: { sval: refname } }, v.ColumnRef.fields[0]] } };
  }
  const out: M = {};
  for (const [k, x] of Object.entries(v)) out[k] = qualify(x, refname);
  return out;
}

/**
 * What Postgres runs must be what was checked: the rewritten text, parsed again, must be the
 * rewritten tree. A deparser that prints a construct otherwise (say `x AS name` inside an
 * UPDATE as `name = x`) gets the statement refused, never sent.
 */
function sameStatement(text: string, root: M): void {
  let again: unknown = null;
  try {
    const stmts = parseSync(text).stmts ?? [];
    if (stmts.length === 1) again = stmts[0]!.stmt;
  } catch {
    again = null;
  }
  if (again === null || nodeCensus(again) !== nodeCensus(root)) {
    throw new RowRuleDenied('permission denied: scopegate cannot send this statement with its row rules applied exactly', 'simplify the statement (for example, move the subquery out of the UPDATE)');
  }
}

/**
 * Every node of a tree by type, with column references and names spelled out, sorted: the
 * same for two trees that differ only in how they are written down (locations, defaults the
 * parser fills in, AND lists nested or flat).
 */
function nodeCensus(tree: unknown): string {
  const seen: string[] = [];
  const visit = (v: unknown): void => {
    if (Array.isArray(v)) { for (const x of v) visit(x); return; }
    if (typeof v !== 'object' || v === null) return;
    for (const [k, x] of Object.entries(v)) {
      if (k === 'BoolExpr' || typeof x !== 'object' || x === null || !/^[A-Z]/.test(k)) { visit(x); continue; }
      seen.push(k === 'String' ? `String:${String((x as { sval?: unknown }).sval)}` : k === 'ResTarget' ? `ResTarget:${String((x as { name?: unknown }).name ?? '')}` : k);
      visit(x);
    }
  };
  visit(tree);
  return seen.sort().join(',');
}

export interface RewriteResult {
  /** The statement's new text, or null when nothing changed. */
  text: string | null;
  bindChecks: BindCheck[];
}

/**
 * Applies row filters, masks and star expansion to one statement's parse tree: a filtered
 * table alone in a SELECT level's FROM (read as is) gets the filter ANDed into that level's WHERE;
 * every other read of a ruled table becomes `(SELECT <columns> FROM schema.table WHERE <filter>)
 * AS <alias>`; write targets get the filter ANDed into their conditions, and written values are
 * checked against it. Throws RowRuleDenied.
 */
export class Rewriter {
  /** RangeVar bodies the rewriter has dealt with; any other reference to a ruled table is denied. */
  private readonly handled = new WeakSet<object>();
  private readonly checks: BindCheck[] = [];
  private changed = false;
  /** A row filter was applied somewhere in the statement. */
  private filtered = false;

  constructor(private readonly rules: EffectiveRules, private readonly claims: ClaimResolver) {}

  rewrite(type: string, body: Node): RewriteResult {
    const root: M = { [type]: structuredClone(body) as M };
    const uses = paramUses(root);
    if (REWRITABLE.has(type)) this.walk(root, null);
    if (type === 'ExplainStmt' && this.filtered) {
      // Estimates come from statistics over every row, and ANALYZE counts the rows the
      // filter removed: both describe rows the client may not read.
      throw new RowRuleDenied('permission denied: EXPLAIN of a statement on a row-filtered table', 'its row estimates and counts describe rows outside the filter; run the statement itself');
    }
    this.verify(root, type);
    this.singleUseParams(uses);
    if (!this.changed) return { text: null, bindChecks: this.checks };
    const text = deparseSync(root as Parameters<typeof deparseSync>[0], { pretty: false });
    sameStatement(text, root);
    return { text, bindChecks: this.checks };
  }

  // ---- rules -------------------------------------------------------------------------

  private resolve(rv: M): QualName {
    const name = str(rv.relname) ?? '';
    const schema = str(rv.schemaname);
    if (schema !== null && schema !== '') return { schema, name };
    if (rv.relpersistence === 't') return { schema: 'pg_temp', name };
    return { schema: unqualifiedRelationSchema(name, this.rules.defaultSchema), name };
  }

  /** A policy expression with claims substituted; its own relations are trusted, not rewritten. */
  private expr(kind: 'filter' | 'mask', sql: string, rel: QualName): Node {
    const p = policyExpr(kind, sql);
    if (!p.ok) throw new RowRuleDenied(`permission denied: invalid ${kind === 'filter' ? 'row filter' : 'mask'} on ${displayName(rel)}: ${p.error}`, 'fix the policy file');
    const node = this.claims.substitute(p.node) as M;
    this.markAll(node);
    return node;
  }

  private markAll(v: unknown): void {
    if (Array.isArray(v)) for (const x of v) this.markAll(x);
    else if (isM(v)) {
      if (isRangeVarBody(v)) this.handled.add(v);
      for (const x of Object.values(v)) this.markAll(x);
    }
  }

  private filterExprs(rel: QualName, action: RowAction): Node[] | null {
    const f = this.rules.filters(rel, action);
    return f === null ? null : f.map((sql) => this.expr('filter', sql, rel));
  }

  // ---- walking -----------------------------------------------------------------------

  private walk(v: unknown, c: CteFrame | null): void {
    if (Array.isArray(v)) {
      for (const x of v) this.walk(x, c);
      return;
    }
    if (!isM(v)) return;
    for (const [k, x] of Object.entries(v)) {
      if (!isM(x)) {
        if (Array.isArray(x)) this.walk(x, c);
        continue;
      }
      switch (k) {
        case 'SelectStmt': this.select(x, c); break;
        case 'InsertStmt': this.insert(x, c); break;
        case 'UpdateStmt': this.update(x, c); break;
        case 'DeleteStmt': this.delete(x, c); break;
        case 'MergeStmt': this.merge(x, c); break;
        default: this.walk(x, c);
      }
    }
  }

  private withClause(w: unknown, c: CteFrame | null): CteFrame | null {
    if (!isM(w)) return c;
    const defs = list(w.ctes).map(unwrap).filter((u): u is [string, M] => u !== null && u[0] === 'CommonTableExpr').map((u) => u[1]);
    const names = defs.map((d) => str(d.ctename) ?? '');
    const all: CteFrame = { names: new Set(names), parent: c };
    defs.forEach((d, i) => {
      // Without RECURSIVE, a CTE's own name inside its body is the real table.
      const frame = w.recursive === true ? all : { names: new Set(names.slice(0, i)), parent: c };
      this.walk(d.ctequery, frame);
    });
    return all;
  }

  private isCte(rv: M, c: CteFrame | null): boolean {
    if (str(rv.schemaname) || str(rv.catalogname)) return false;
    const name = str(rv.relname);
    for (let f = c; f !== null; f = f.parent) if (name !== null && f.names.has(name)) return true;
    return false;
  }

  private select(st: M, outer: CteFrame | null): void {
    const c = this.withClause(st.withClause, outer);
    if (typeof st.op === 'string' && st.op !== 'SETOP_NONE') {
      this.select(st.larg as M, c);
      this.select(st.rarg as M, c);
      this.walk([st.sortClause, st.limitOffset, st.limitCount], c);
      return;
    }
    const inline = this.inlineFilter(st.fromClause, c);
    if (inline === null && Array.isArray(st.fromClause)) st.fromClause = st.fromClause.map((f) => this.fromItem(f, c));
    for (const [k, x] of Object.entries(st)) if (k !== 'withClause' && k !== 'fromClause') this.walk(x, c);
    // After the walk: the policy's own expression is trusted, not rewritten; the client's
    // conditions see only rows it passed (guard.ts).
    if (inline !== null) st.whereClause = guardedWhere(st.whereClause, inline.filter, this.columnsOf(inline.rel));
  }

  /**
   * `SELECT ... FROM t [AS x] [WHERE ...]` with `t` the level's only FROM item, filtered and read
   * as is (no projection: no masks, no star expansion, no column list): the filter, qualified by
   * `x` (or `t`), to AND into this level's WHERE instead of wrapping `t`; else null.
   */
  private inlineFilter(from: unknown, c: CteFrame | null): { filter: Node; rel: QualName } | null {
    if (!Array.isArray(from) || from.length !== 1) return null;
    const u = unwrap(from[0]);
    if (u === null || u[0] !== 'RangeVar') return null;
    const rv = u[1];
    if (this.isCte(rv, c)) return null;
    // `t AS x(a, b)` renames the columns the filter is written against.
    if (isM(rv.alias) && list(rv.alias.colnames).length > 0) return null;
    const rel = this.resolve(rv);
    const w = this.rules.readWrap(rel);
    if (w === null || w.filters === null || w.columns !== null) return null;
    const refname = (isM(rv.alias) ? str(rv.alias.aliasname) : null) ?? rel.name;
    const f = qualify(or(w.filters.map((x) => this.expr('filter', x, rel))), refname) as Node;
    this.filtered = true;
    this.handled.add(rv);
    rv.schemaname = rel.schema;
    this.changed = true;
    return { filter: f, rel };
  }

  private fromItem(node: unknown, c: CteFrame | null): unknown {
    const u = unwrap(node);
    if (u === null) return node;
    const [type, b] = u;
    switch (type) {
      case 'RangeVar': {
        this.handled.add(b);
        if (this.isCte(b, c)) return node;
        return this.wrap(b) ?? node;
      }
      case 'JoinExpr':
        b.larg = this.fromItem(b.larg, c);
        b.rarg = this.fromItem(b.rarg, c);
        this.walk(b.quals, c);
        return node;
      case 'RangeSubselect':
        this.walk(b.subquery, c);
        return node;
      default:
        // TABLESAMPLE, functions, XMLTABLE...: a ruled table inside is caught by verify().
        this.walk(node, c);
        return node;
    }
  }

  /** `t [AS x]` -> `(SELECT <cols> FROM schema.t WHERE <filter>) AS x`, or null if `t` has no rules. */
  private wrap(rv: M): Node | null {
    const rel = this.resolve(rv);
    const w = this.rules.readWrap(rel);
    if (w === null) return null;
    const inner: M = { ...rv, schemaname: rel.schema };
    delete inner.alias;
    this.handled.add(inner);
    const targetList = w.columns === null
      ? [{ ResTarget: { val: { ColumnRef: { fields: [{ A_Star: {} }] } } } }]
      : w.columns.map((col) => ({ ResTarget: col.mask === null
        ? { val: { ColumnRef: { fields: [{ String: { sval: col.name } }] } } }
        : { name: col.name, val: this.expr('mask', col.mask, rel) } }));
    const sub: M = { targetList, fromClause: [{ RangeVar: inner }], limitOption: 'LIMIT_OPTION_DEFAULT', op: 'SETOP_NONE' };
    if (w.filters !== null) {
      this.filtered = true;
      sub.whereClause = or(w.filters.map((f) => this.expr('filter', f, rel)));
      // OFFSET 0 keeps Postgres from merging the subquery into the outer query, where the
      // outer conditions could run on rows before the filter does (guard.ts).
      sub.limitOffset = { A_Const: { ival: {} } };
      sub.limitOption = 'LIMIT_OPTION_COUNT';
    }
    this.changed = true;
    const alias = isM(rv.alias) ? rv.alias : { aliasname: rel.name };
    return { RangeSubselect: { subquery: { SelectStmt: sub }, alias } };
  }

  // ---- writes ------------------------------------------------------------------------

  private target(rv: unknown): { rv: M; rel: QualName; refname: string } | null {
    if (!isM(rv)) return null;
    this.handled.add(rv);
    const rel = this.resolve(rv);
    const alias = isM(rv.alias) ? str(rv.alias.aliasname) : null;
    return { rv, rel, refname: alias ?? rel.name };
  }

  /** The target rows the client may see or touch at all: any of its filters (null: unfiltered). */
  private visibleFilter(t: { rel: QualName; refname: string }): Node | null {
    const parts: Node[] = [];
    for (const action of ['select', 'update', 'delete'] as const) {
      const f = this.rules.filters(t.rel, action);
      if (f === null) {
        // An action granted without a filter sees every row; one not granted at all adds nothing.
        if (this.rules.grantsAction(t.rel, action)) return null;
        continue;
      }
      for (const sql of f) parts.push(this.expr('filter', sql, t.rel));
    }
    if (parts.length === 0) return null;
    this.filtered = true;
    this.changed = true;
    return qualify(or(parts), t.refname) as Node;
  }

  /** The relation's columns as the catalog knows them (null: unknown). */
  private columnsOf(rel: QualName): ReadonlySet<string> | null {
    const cols = this.rules.catalogColumns(rel);
    return cols === undefined ? null : new Set(cols);
  }

  /** The filter for `action` on the target, qualified by its name; null when unfiltered. */
  private targetFilter(t: { rel: QualName; refname: string }, action: WriteAction): Node | null {
    const f = this.filterExprs(t.rel, action);
    if (f === null) return null;
    this.changed = true;
    this.filtered = true;
    return qualify(or(f), t.refname) as Node;
  }

  /** Masked columns are readable masked only: a write statement cannot read them from its target. */
  private noMaskedTargetReads(t: { rel: QualName; refname: string }, exprs: unknown): void {
    const masks = this.rules.masks(t.rel);
    if (masks.size === 0) return;
    const bad = (v: unknown): string | null => {
      if (Array.isArray(v)) { for (const x of v) { const r = bad(x); if (r !== null) return r; } return null; }
      if (!isM(v)) return null;
      if (isM(v.ColumnRef)) {
        const f = list(v.ColumnRef.fields);
        const last = f[f.length - 1];
        const name = isM(last) && isM(last.String) ? str(last.String.sval) : isM(last) && 'A_Star' in last ? '*' : null;
        if (name !== null && (name === '*' || masks.has(name) || (f.length === 1 && name === t.refname))) return name;
      }
      for (const x of Object.values(v)) { const r = bad(x); if (r !== null) return r; }
      return null;
    };
    const col = bad(exprs);
    if (col !== null) {
      throw new RowRuleDenied(`permission denied: ${displayName(t.rel)}.${col} is readable only masked, not in a write statement`, 'read it with a SELECT (which applies the mask)');
    }
  }

  private outside(rel: QualName): RowRuleDenied {
    return new RowRuleDenied(`permission denied: write outside row filter on ${displayName(rel)}`, RLS_HINT);
  }

  /** Checks the rows a write stores against the filter for `action`; adds Bind checks. */
  private checkRows(rel: QualName, action: WriteAction, rows: ReadonlyArray<ReadonlyMap<string, WrittenValue>>, update: boolean): void {
    const filters = this.filterExprs(rel, action);
    if (filters === null) return;
    if (update) {
      // An UPDATE leaving every filter column alone keeps each (filtered) row inside.
      const cols = referencedColumns(filters);
      if (rows.every((r) => ![...r.keys()].some((k) => cols.has(k)))) return;
    }
    const conj = filters.map((f) => simpleConjunction(f));
    for (const row of rows) {
      const checks = checkRow(conj, row);
      if (checks === null) throw this.outside(rel);
      this.checks.push(...checks);
    }
  }

  private setRow(targetList: unknown): Map<string, WrittenValue> {
    const row = new Map<string, WrittenValue>();
    for (const t of list(targetList)) {
      const u = unwrap(t);
      const name = u !== null ? str(u[1].name) : null;
      if (u === null || name === null) continue;
      // SET a[1] = ..., SET (a, b) = (...): not a plain value.
      row.set(name, list(u[1].indirection).length > 0 ? { t: 'other' } : writtenValue(u[1].val));
    }
    return row;
  }

  private insertRows(rel: QualName, cols: string[], values: unknown[][]): Map<string, WrittenValue>[] {
    if (this.rules.filters(rel, 'insert') === null) return [];
    if (cols.length === 0) {
      const known = this.rules.catalogColumns(rel);
      if (known === undefined) throw new RowRuleDenied(`permission denied: write outside row filter on ${displayName(rel)}: list the inserted columns`, RLS_HINT);
      cols = [...known];
    }
    return values.map((vals) => new Map(cols.map((c, i) => [c, i < vals.length ? writtenValue(vals[i]) : { t: 'default' }] as [string, WrittenValue])));
  }

  private insert(st: M, outer: CteFrame | null): void {
    const c = this.withClause(st.withClause, outer);
    const t = this.target(st.relation);
    if (t === null) return;
    const cols = list(st.cols).map(unwrap).map((u) => (u !== null ? str(u[1].name) : null)).filter((n): n is string => n !== null);
    const sel = unwrap(st.selectStmt);
    const valuesLists = sel !== null && sel[0] === 'SelectStmt' && Array.isArray(sel[1].valuesLists) ? sel[1].valuesLists : null;
    if (sel === null) {
      this.checkRows(t.rel, 'insert', this.insertRows(t.rel, cols, [[]]), false);
    } else if (valuesLists !== null) {
      this.walk(valuesLists, c);
      const rows = valuesLists.map((l) => list(unwrap(l)?.[1].items));
      this.checkRows(t.rel, 'insert', this.insertRows(t.rel, cols, rows), false);
    } else {
      this.walk(st.selectStmt, c);
      if (this.rules.filters(t.rel, 'insert') !== null) throw this.outside(t.rel);
    }
    const oc = st.onConflictClause;
    if (isM(oc)) {
      this.walk([oc.infer, oc.targetList, oc.whereClause], c);
      if (oc.action === 'ONCONFLICT_UPDATE') {
        this.noMaskedTargetReads(t, [oc.targetList, oc.whereClause]);
        // Only conflicting rows inside the update filter may be updated.
        const f = this.targetFilter(t, 'update');
        if (f !== null) oc.whereClause = guardedWhere(oc.whereClause, f, this.columnsOf(t.rel));
        this.checkRows(t.rel, 'update', [this.setRow(oc.targetList)], true);
      }
    }
    this.noMaskedTargetReads(t, st.returningClause);
    this.walk(st.returningClause, c);
  }

  private update(st: M, outer: CteFrame | null): void {
    const c = this.withClause(st.withClause, outer);
    const t = this.target(st.relation);
    if (t === null) return;
    if (Array.isArray(st.fromClause)) st.fromClause = st.fromClause.map((f) => this.fromItem(f, c));
    this.noMaskedTargetReads(t, [st.targetList, st.whereClause, st.returningClause]);
    this.walk([st.targetList, st.whereClause, st.returningClause], c);
    const f = this.targetFilter(t, 'update');
    if (f !== null) st.whereClause = guardedWhere(st.whereClause, f, this.columnsOf(t.rel));
    this.checkRows(t.rel, 'update', [this.setRow(st.targetList)], true);
  }

  private delete(st: M, outer: CteFrame | null): void {
    const c = this.withClause(st.withClause, outer);
    const t = this.target(st.relation);
    if (t === null) return;
    if (Array.isArray(st.usingClause)) st.usingClause = st.usingClause.map((f) => this.fromItem(f, c));
    this.noMaskedTargetReads(t, [st.whereClause, st.returningClause]);
    this.walk([st.whereClause, st.returningClause], c);
    const f = this.targetFilter(t, 'delete');
    if (f !== null) st.whereClause = guardedWhere(st.whereClause, f, this.columnsOf(t.rel));
  }

  private merge(st: M, outer: CteFrame | null): void {
    const c = this.withClause(st.withClause, outer);
    const t = this.target(st.relation);
    if (t === null) return;
    st.sourceRelation = this.fromItem(st.sourceRelation, c);
    // The join condition meets every target row, before any WHEN adds the filter: whether a
    // row of another tenant matches would show (no INSERT when it does). Only rows inside a
    // filter of the client's may match; the WHEN clauses keep their own filters.
    const visible = this.visibleFilter(t);
    if (visible !== null) st.joinCondition = guardedWhere(st.joinCondition, visible, this.columnsOf(t.rel));
    this.noMaskedTargetReads(t, [st.joinCondition, st.mergeWhenClauses, st.returningClause]);
    this.walk([st.joinCondition, st.returningClause], c);
    for (const w of list(st.mergeWhenClauses)) {
      const u = unwrap(w);
      if (u === null) continue;
      const wc = u[1];
      this.walk([wc.condition, wc.targetList, wc.values], c);
      const cmd = wc.commandType;
      if (wc.matchKind === 'MERGE_WHEN_NOT_MATCHED_BY_TARGET') {
        if (cmd !== 'CMD_INSERT') continue;
        const cols = list(wc.targetList).map(unwrap).map((x) => (x !== null ? str(x[1].name) : null)).filter((n): n is string => n !== null);
        this.checkRows(t.rel, 'insert', this.insertRows(t.rel, cols, [list(wc.values)]), false);
        continue;
      }
      // WHEN MATCHED / NOT MATCHED BY SOURCE act on existing target rows: only those inside the filter.
      const action: WriteAction | null = cmd === 'CMD_UPDATE' ? 'update' : cmd === 'CMD_DELETE' ? 'delete' : null;
      if (action === null) continue;
      const f = this.targetFilter(t, action);
      if (f !== null) wc.condition = guardedWhere(wc.condition, f, this.columnsOf(t.rel));
      if (action === 'update') this.checkRows(t.rel, 'update', [this.setRow(wc.targetList)], true);
    }
  }

  // ---- safety net --------------------------------------------------------------------

  /**
   * A Bind-checked parameter must occur only where it is checked: the server types a
   * parameter at its first use, so `... WHERE x = $1::"char"` elsewhere would make the checked
   * position store 'a' while the Bind check saw 'acme'.
   */
  private singleUseParams(uses: ReadonlyMap<number, number>): void {
    const checked = new Map<number, { n: number; column: string }>();
    for (const c of this.checks) {
      const prev = checked.get(c.param);
      checked.set(c.param, { n: (prev?.n ?? 0) + 1, column: c.column });
    }
    for (const [param, c] of checked) {
      if ((uses.get(param) ?? 0) === c.n) continue;
      throw new RowRuleDenied(
        `permission denied: write outside row filter: parameter $${param} of ${c.column} is also used elsewhere in the statement`,
        `give the row-filtered column ${c.column} a parameter of its own: elsewhere the parameter may be read as another type (say ::"char" or ::varchar(1)), and the column would store a value other than the one checked`,
      );
    }
  }

  /** Any reference to a ruled table the rewriter did not handle (COPY t, LOCK, TRUNCATE, DDL...) is denied. */
  private verify(v: unknown, type: string): void {
    if (Array.isArray(v)) {
      for (const x of v) this.verify(x, type);
      return;
    }
    if (!isM(v)) return;
    if (isRangeVarBody(v) && !this.handled.has(v)) {
      const rel = this.resolve(v);
      if (this.rules.ruled(rel)) {
        throw new RowRuleDenied(`permission denied: row or column rules on ${displayName(rel)} cannot be applied in this statement (${type.replace(/Stmt$/, '')})`, 'read the table with a plain SELECT (COPY (SELECT ...) TO STDOUT for COPY); TABLESAMPLE, LOCK, TRUNCATE, DDL and views over it are not available to this scope');
      }
    }
    for (const x of Object.values(v)) if (typeof x === 'object' && x !== null) this.verify(x, type);
  }
}
