/** The AST walk that collects every relation, column and function a statement touches. */
import { isForbiddenFunction, READ_ONLY_BUILTINS, SEQUENCE_FUNCTIONS, unqualifiedRelationSchema } from './builtins.js';
import { INFORMATION_SCHEMA_FUNCTIONS } from './catalog-read.js';
import { displayIdent, displayName, qualify, splitSqlName } from './names.js';
import { isNode, type Node } from './parse.js';
import type { Access, ColumnCatalog, QualName, RelAction } from './types.js';

/** A FROM-clause entry visible to column references. */
interface Item {
  refname: string;
  /** Schema given in FROM (`public.orders` without alias can be referenced as public.orders.col). */
  schema: string | null;
  /** Base relations whose columns this entry exposes (one for a table, several for a join alias, none for a subquery/CTE/function). */
  rels: QualName[];
  /** A plain table (or old/new/excluded): `x.col` is exactly that relation's column. */
  base: boolean;
  /** What FOR UPDATE on this entry locks. */
  lockRels: QualName[];
}

interface Level {
  items: Item[];
  parent: Level | null;
}

interface CteFrame {
  names: ReadonlySet<string>;
  parent: CteFrame | null;
}

const EMPTY_LEVEL = (parent: Level | null): Level => ({ items: [], parent });

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function strOf(v: unknown): string | null {
  if (isNode(v) && isNode(v.String) && typeof v.String.sval === 'string') return v.String.sval;
  return null;
}

function s(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/** Unwraps a `{ Type: body }` node. */
function unwrap(v: unknown): [string, Node] | null {
  if (!isNode(v)) return null;
  const keys = Object.keys(v);
  if (keys.length !== 1) return null;
  const body = v[keys[0]!];
  return isNode(body) ? [keys[0]!, body] : null;
}

/** The constant string of an argument, through casts ('orders_id_seq'::regclass). */
function constString(v: unknown): string | null {
  const u = unwrap(v);
  if (u === null) return null;
  if (u[0] === 'TypeCast') return constString(u[1].arg);
  if (u[0] === 'A_Const' && isNode(u[1].sval) && typeof u[1].sval.sval === 'string') return u[1].sval.sval;
  return null;
}

const STMT_TYPES = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/** System columns: always columns, never attribute-notation calls. */
const SYSTEM_COLUMNS = new Set(['tableoid', 'xmin', 'cmin', 'xmax', 'cmax', 'ctid']);

/** "CreateFunctionStmt" -> "CREATE FUNCTION", for denial messages. */
export function statementTitle(type: string): string {
  return type.replace(/Stmt$/, '').replace(/([a-z])([A-Z])/g, '$1 $2').toUpperCase();
}

/**
 * Collects every access one statement needs. Deliberately conservative: where the parse
 * tree cannot say which relation a column belongs to, every candidate must grant it.
 */
export class AccessCollector {
  private readonly found = new Map<string, Access>();
  /** Accesses in the order found (for lock propagation we need positions). */
  private readonly order: Access[] = [];
  /** What a RangeVar met outside FROM means (DDL walks set 'ddl'). */
  private rangeVarAction: RelAction = 'select';

  constructor(private readonly defaultSchema: string, private readonly catalog: ColumnCatalog | null = null) {}

  get accesses(): Access[] {
    return [...this.found.values()];
  }

  private add(a: Access): void {
    const key = accessKey(a);
    if (!this.found.has(key)) this.found.set(key, a);
    this.order.push(a);
  }

  private rel(action: RelAction, rel: QualName, column: string | null): void {
    this.add({ t: 'rel', action, rel, column });
  }

  forbid(what: string): void {
    this.add({ t: 'forbidden', what });
  }

  resolveRangeVar(rv: Node): QualName {
    const relname = s(rv.relname) ?? '';
    const schema = s(rv.schemaname);
    if (schema !== null && schema !== '') return { schema, name: relname };
    if (rv.relpersistence === 't') return { schema: 'pg_temp', name: relname };
    return { schema: unqualifiedRelationSchema(relname, this.defaultSchema), name: relname };
  }

  private isCte(rv: Node, ctes: CteFrame | null): boolean {
    if (s(rv.schemaname) || s(rv.catalogname)) return false;
    const name = s(rv.relname);
    for (let f = ctes; f !== null; f = f.parent) if (name !== null && f.names.has(name)) return true;
    return false;
  }

  // ---- statements -------------------------------------------------------------------

  /** Walks a nested statement node (subquery, CTE body, INSERT's source...). */
  stmtNode(node: unknown, outer: Level | null, ctes: CteFrame | null): void {
    const u = unwrap(node);
    if (u === null) return;
    const [type, body] = u;
    switch (type) {
      case 'SelectStmt': this.select(body, outer, ctes); break;
      case 'InsertStmt': this.insert(body, outer, ctes); break;
      case 'UpdateStmt': this.update(body, outer, ctes); break;
      case 'DeleteStmt': this.delete(body, outer, ctes); break;
      case 'MergeStmt': this.merge(body, outer, ctes); break;
      default: this.expr(node, outer, ctes);
    }
  }

  private withClause(w: unknown, outer: Level | null, ctes: CteFrame | null): CteFrame | null {
    if (!isNode(w)) return ctes;
    const defs = list(w.ctes).map(unwrap).filter((u): u is [string, Node] => u !== null && u[0] === 'CommonTableExpr').map((u) => u[1]);
    const names = defs.map((d) => s(d.ctename) ?? '');
    const all: CteFrame = { names: new Set(names), parent: ctes };
    defs.forEach((d, i) => {
      // Without RECURSIVE a CTE sees only earlier siblings: inside its own body its name is
      // still the real table (WITH orders AS (SELECT * FROM orders) reads the table).
      const frame = w.recursive === true ? all : { names: new Set(names.slice(0, i)), parent: ctes };
      this.stmtNode(d.ctequery, outer, frame);
    });
    return all;
  }

  select(st: Node, outer: Level | null, ctes: CteFrame | null): void {
    const c = this.withClause(st.withClause, outer, ctes);
    if (typeof st.op === 'string' && st.op !== 'SETOP_NONE') {
      this.stmtNode({ SelectStmt: st.larg }, outer, c);
      this.stmtNode({ SelectStmt: st.rarg }, outer, c);
      const out = EMPTY_LEVEL(outer);
      this.expr([st.sortClause, st.limitOffset, st.limitCount], out, c);
      return;
    }
    if (st.valuesLists !== undefined) this.expr(st.valuesLists, EMPTY_LEVEL(outer), c);
    const level = EMPTY_LEVEL(outer);
    for (const f of list(st.fromClause)) this.fromItem(f, level, c);
    const outputNames = new Set<string>();
    for (const t of list(st.targetList)) {
      const rt = unwrap(t);
      if (rt !== null && typeof rt[1].name === 'string') outputNames.add(rt[1].name);
    }
    this.expr([st.targetList, st.whereClause, st.groupClause, st.havingClause, st.windowClause, st.distinctClause, st.limitOffset, st.limitCount], level, c);
    for (const sb of list(st.sortClause)) {
      // ORDER BY <output alias> names an output column, not a table column.
      const u = unwrap(sb);
      const inner = u !== null ? unwrap(u[1].node) : null;
      if (inner !== null && inner[0] === 'ColumnRef') {
        const f = list(inner[1].fields);
        const name = f.length === 1 ? strOf(f[0]) : null;
        if (name !== null && outputNames.has(name)) continue;
      }
      this.expr(sb, level, c);
    }
    for (const lc of list(st.lockingClause)) {
      const u = unwrap(lc);
      if (u === null) continue;
      const named = list(u[1].lockedRels).map(unwrap).filter((x): x is [string, Node] => x !== null).map((x) => x[1]);
      if (named.length === 0) {
        for (const it of level.items) for (const r of it.lockRels) this.rel('lock', r, null);
      } else {
        for (const rv of named) {
          const it = level.items.find((i) => i.refname === s(rv.relname));
          const rels = it !== undefined ? it.lockRels : [this.resolveRangeVar(rv)];
          for (const r of rels) this.rel('lock', r, null);
        }
      }
    }
    if (isNode(st.intoClause) && isNode(st.intoClause.rel)) this.rel('ddl', this.resolveRangeVar(st.intoClause.rel), null);
  }

  private targetItem(rv: Node): Item {
    const rel = this.resolveRangeVar(rv);
    const alias = isNode(rv.alias) ? s(rv.alias.aliasname) : null;
    return { refname: alias ?? rel.name, schema: alias === null ? s(rv.schemaname) : null, rels: [rel], base: true, lockRels: [rel] };
  }

  /** RETURNING sees the target, plus old/new (PG 18) under their default or given names. */
  private returning(rc: unknown, target: Item, outer: Level | null, c: CteFrame | null, extra: Item[] = []): void {
    if (!isNode(rc)) return;
    const names = new Set(['old', 'new']);
    for (const o of list(rc.options)) {
      const u = unwrap(o);
      if (u !== null && typeof u[1].value === 'string') names.add(u[1].value);
    }
    const items = [target, ...extra, ...[...names].map((n) => ({ ...target, refname: n, schema: null }))];
    this.expr(rc.exprs, { items, parent: outer }, c);
  }

  private insert(st: Node, outer: Level | null, ctes: CteFrame | null): void {
    const c = this.withClause(st.withClause, outer, ctes);
    if (!isNode(st.relation)) return;
    const target = this.targetItem(st.relation);
    const rel = target.rels[0]!;
    const cols = list(st.cols).map(unwrap).map((u) => (u !== null ? s(u[1].name) : null)).filter((n): n is string => n !== null);
    if (cols.length > 0) for (const col of cols) this.rel('insert', rel, col);
    else this.rel('insert', rel, st.selectStmt === undefined ? null : '*');
    if (st.selectStmt !== undefined) this.stmtNode(st.selectStmt, outer, c);
    const oc = st.onConflictClause;
    if (isNode(oc)) {
      const excluded: Item = { ...target, refname: 'excluded', schema: null };
      const level: Level = { items: [target, excluded], parent: outer };
      if (isNode(oc.infer)) {
        for (const ie of list(oc.infer.indexElems)) {
          const u = unwrap(ie);
          if (u !== null && typeof u[1].name === 'string') this.rel('select', rel, u[1].name);
          else this.expr(ie, level, c);
        }
        this.expr(oc.infer.whereClause, level, c);
      }
      for (const t of list(oc.targetList)) {
        const u = unwrap(t);
        if (u === null) continue;
        if (typeof u[1].name === 'string') this.rel('update', rel, u[1].name);
        this.expr(u[1].val, level, c);
      }
      this.expr(oc.whereClause, level, c);
    }
    this.returning(st.returningClause, target, outer, c);
  }

  private update(st: Node, outer: Level | null, ctes: CteFrame | null): void {
    const c = this.withClause(st.withClause, outer, ctes);
    if (!isNode(st.relation)) return;
    const target = this.targetItem(st.relation);
    const rel = target.rels[0]!;
    const level: Level = { items: [target], parent: outer };
    for (const f of list(st.fromClause)) this.fromItem(f, level, c);
    for (const t of list(st.targetList)) {
      const u = unwrap(t);
      if (u === null) continue;
      if (typeof u[1].name === 'string') this.rel('update', rel, u[1].name);
      this.expr([u[1].val, u[1].indirection], level, c);
    }
    this.expr(st.whereClause, level, c);
    this.returning(st.returningClause, target, outer, c, level.items.slice(1));
  }

  private delete(st: Node, outer: Level | null, ctes: CteFrame | null): void {
    const c = this.withClause(st.withClause, outer, ctes);
    if (!isNode(st.relation)) return;
    const target = this.targetItem(st.relation);
    this.rel('delete', target.rels[0]!, null);
    const level: Level = { items: [target], parent: outer };
    for (const f of list(st.usingClause)) this.fromItem(f, level, c);
    this.expr(st.whereClause, level, c);
    this.returning(st.returningClause, target, outer, c, level.items.slice(1));
  }

  private merge(st: Node, outer: Level | null, ctes: CteFrame | null): void {
    const c = this.withClause(st.withClause, outer, ctes);
    if (!isNode(st.relation)) return;
    const target = this.targetItem(st.relation);
    const rel = target.rels[0]!;
    const level: Level = { items: [target], parent: outer };
    this.fromItem(st.sourceRelation, level, c);
    this.expr(st.joinCondition, level, c);
    for (const w of list(st.mergeWhenClauses)) {
      const u = unwrap(w);
      if (u === null) continue;
      const wc = u[1];
      this.expr(wc.condition, level, c);
      const names = list(wc.targetList).map(unwrap).map((x) => (x !== null ? s(x[1].name) : null)).filter((n): n is string => n !== null);
      switch (wc.commandType) {
        case 'CMD_UPDATE':
          for (const n of names) this.rel('update', rel, n);
          for (const t of list(wc.targetList)) { const x = unwrap(t); if (x !== null) this.expr(x[1].val, level, c); }
          break;
        case 'CMD_INSERT':
          if (names.length > 0) for (const n of names) this.rel('insert', rel, n);
          else this.rel('insert', rel, '*');
          this.expr(wc.values, level, c);
          break;
        case 'CMD_DELETE':
          this.rel('delete', rel, null);
          break;
        default:
          break;
      }
    }
    this.returning(st.returningClause, target, outer, c, level.items.slice(1));
  }

  // ---- FROM ------------------------------------------------------------------------

  private fromItem(node: unknown, level: Level, c: CteFrame | null): Item[] {
    const u = unwrap(node);
    if (u === null) return [];
    const [type, b] = u;
    const aliasNode = isNode(b.alias) ? b.alias : null;
    const alias = aliasNode !== null ? s(aliasNode.aliasname) : null;
    switch (type) {
      case 'RangeVar': {
        if (this.isCte(b, c)) {
          const it: Item = { refname: alias ?? s(b.relname) ?? '', schema: null, rels: [], base: false, lockRels: [] };
          level.items.push(it);
          return [it];
        }
        const rel = this.resolveRangeVar(b);
        this.rel('select', rel, null);
        // FROM t AS x(a, b) renames columns by position: names no longer say which column is read.
        if (aliasNode !== null && list(aliasNode.colnames).length > 0) this.rel('select', rel, '*');
        const it: Item = { refname: alias ?? rel.name, schema: alias === null ? s(b.schemaname) : null, rels: [rel], base: true, lockRels: [rel] };
        level.items.push(it);
        return [it];
      }
      case 'RangeSubselect': {
        const start = this.order.length;
        this.stmtNode(b.subquery, b.lateral === true ? level : level.parent, c);
        const lockRels = this.readRelsSince(start);
        const it: Item = { refname: alias ?? '', schema: null, rels: [], base: false, lockRels };
        level.items.push(it);
        return [it];
      }
      case 'JoinExpr': {
        const left = this.fromItem(b.larg, level, c);
        const right = this.fromItem(b.rarg, level, c);
        const members = [...left, ...right];
        const baseRels = members.filter((m) => m.base).flatMap((m) => m.rels);
        for (const col of list(b.usingClause)) {
          const name = strOf(col);
          if (name !== null && baseRels.length > 0) this.add({ t: 'col_any', action: 'select', candidates: baseRels, column: name });
        }
        // NATURAL joins on every same-named column: which ones is schema knowledge we lack.
        if (b.isNatural === true) for (const r of baseRels) this.rel('select', r, '*');
        this.expr(b.quals, level, c);
        if (alias === null) return members;
        const it: Item = { refname: alias, schema: null, rels: baseRels, base: false, lockRels: members.flatMap((m) => m.lockRels) };
        level.items.push(it);
        return [...members, it];
      }
      case 'RangeTableSample': {
        const items = this.fromItem(b.relation, level, c);
        this.expr([b.args, b.repeatable], level, c);
        return items;
      }
      case 'RangeFunction': {
        // Functions in FROM may reference earlier FROM items (implicitly LATERAL).
        this.expr(b.functions, level, c);
        const it: Item = { refname: alias ?? '', schema: null, rels: [], base: false, lockRels: [] };
        level.items.push(it);
        return [it];
      }
      default: {
        this.expr(node, level, c);
        const it: Item = { refname: alias ?? '', schema: null, rels: [], base: false, lockRels: [] };
        level.items.push(it);
        return [it];
      }
    }
  }

  private readRelsSince(start: number): QualName[] {
    const out: QualName[] = [];
    for (let i = start; i < this.order.length; i++) {
      const a = this.order[i]!;
      if (a.t === 'rel' && a.action === 'select' && a.column === null) out.push(a.rel);
    }
    return out;
  }

  // ---- expressions -----------------------------------------------------------------

  private findItem(level: Level | null, refname: string): Item | null {
    for (let l = level; l !== null; l = l.parent) {
      // Later items shadow nothing in SQL (duplicates are errors), so any match will do.
      const it = l.items.find((i) => i.refname === refname);
      if (it !== undefined) return it;
    }
    return null;
  }

  /** Every base relation an unqualified column could come from, this level and outer ones. */
  private candidates(level: Level | null, except: readonly QualName[] = []): QualName[] {
    const out: QualName[] = [];
    for (let l = level; l !== null; l = l.parent) {
      for (const it of l.items) {
        if (!it.base) continue;
        for (const r of it.rels) if (!except.includes(r) && !out.some((o) => o.schema === r.schema && o.name === r.name)) out.push(r);
      }
    }
    return out;
  }

  private columnRef(b: Node, level: Level | null): void {
    const parts = list(b.fields).map((f) => (isNode(f) && 'A_Star' in f ? '*' : strOf(f) ?? '?'));
    if (parts.length === 1) {
      const p = parts[0]!;
      if (p === '*') {
        for (const it of level?.items ?? []) if (it.base) for (const r of it.rels) this.rel('select', r, '*');
        return;
      }
      const it = this.findItem(level, p);
      if (it !== null) {
        // `SELECT t FROM t`, row_to_json(t): the whole row, i.e. every column.
        for (const r of it.rels) this.rel('select', r, '*');
        const rest = this.candidates(level, it.rels);
        if (rest.length > 0) this.add({ t: 'col_any', action: 'select', candidates: rest, column: p });
        return;
      }
      const cands = this.candidates(level);
      if (cands.length > 0) this.add({ t: 'col_any', action: 'select', candidates: cands, column: p });
      return;
    }
    // a.col, schema.table.col, db.schema.table.col
    const col = parts[parts.length - 1]!;
    const table = parts[parts.length - 2]!;
    const schema = parts.length >= 3 ? parts[parts.length - 3]! : null;
    let it: Item | null = null;
    for (let l = level; l !== null && it === null; l = l.parent) {
      it = l.items.find((i) => i.refname === table && (schema === null || i.schema === schema || (i.base && i.rels[0]?.schema === schema))) ?? null;
    }
    if (it === null) {
      if (schema !== null) this.rel('select', { schema, name: table }, col);
      return;
    }
    this.field(it, col);
  }

  /**
   * `x.name` / `(x).name` on a FROM item: a column of it, or else `name(x)`, a call of the
   * function with the whole row (attribute notation). Resolved against the column catalog;
   * where the item's columns are unknown and a function of that name may exist, both readings
   * are checked.
   */
  private field(it: Item, col: string): void {
    if (col === '*') {
      for (const r of it.rels) this.rel('select', r, col);
      return;
    }
    const reading = this.fieldReading(it, col);
    if (reading !== 'call') {
      if (it.base) for (const r of it.rels) this.rel('select', r, col);
      else if (it.rels.length > 0) this.add({ t: 'col_any', action: 'select', candidates: it.rels, column: col });
    }
    if (reading !== 'column') this.attributeCall(col, it.rels);
  }

  private fieldReading(it: Item, col: string): 'column' | 'call' | 'both' {
    if (SYSTEM_COLUMNS.has(col) && it.base) return 'column';
    // No catalog at all (offline `scopegate check`, the proxy before its first load): names are columns.
    if (this.catalog === null) return 'column';
    const maybeFunction = this.catalog.oneArgFunction?.(col) ?? false;
    // Subqueries, CTEs and functions in FROM: their output columns are not tracked here.
    if (it.rels.length === 0) return maybeFunction ? 'both' : 'column';
    let unknown = false;
    for (const r of it.rels) {
      const cols = this.catalog.columns(r.schema, r.name);
      if (cols === undefined) unknown = true;
      else if (cols.includes(col)) return 'column';
    }
    if (!unknown) return 'call';
    return maybeFunction ? 'both' : 'column';
  }

  /** `name(row)` through attribute notation: the function, and every column of the row it gets. */
  private attributeCall(name: string, rels: readonly QualName[]): void {
    for (const r of rels) this.rel('select', r, '*');
    if (isForbiddenFunction(name)) this.forbid(`execute on function pg_catalog.${name}`);
    else if (!READ_ONLY_BUILTINS.has(name) && !SEQUENCE_FUNCTIONS.has(name)) this.add({ t: 'func', fn: { schema: this.defaultSchema, name }, unqualified: true });
  }

  /** `(x).name...`: the first field of a FROM item's whole row is resolved like `x.name`. */
  private indirection(b: Node, level: Level | null, c: CteFrame | null): void {
    const fields = list(b.indirection);
    const first = fields.length > 0 ? strOf(fields[0]) : null;
    const arg = unwrap(b.arg);
    if (arg !== null && arg[0] === 'ColumnRef' && first !== null) {
      const parts = list(arg[1].fields).map((f) => strOf(f));
      const it = parts.length === 1 && parts[0] !== null ? this.findItem(level, parts[0]!) : null;
      if (it !== null) {
        this.field(it, first);
        this.expr(fields.slice(1), level, c);
        return;
      }
    }
    this.expr(b.arg, level, c);
    // (expr).name on any other composite: a column of its type, or name(expr).
    for (const f of fields) {
      const name = strOf(f);
      if (name === null) this.expr(f, level, c);
      else if (this.catalog?.oneArgFunction?.(name) === true) this.attributeCall(name, []);
    }
  }

  private funcCall(b: Node, level: Level | null, c: CteFrame | null): void {
    const parts = list(b.funcname).map(strOf).filter((x): x is string => x !== null);
    const name = parts[parts.length - 1] ?? '';
    const schema = parts.length >= 2 ? parts[parts.length - 2]! : null;
    const args = list(b.args);
    if (isForbiddenFunction(name)) {
      this.forbid(`execute on function ${schema ?? 'pg_catalog'}.${name}`);
    } else if (schema === null || schema === 'pg_catalog') {
      const seqAction = SEQUENCE_FUNCTIONS.get(name);
      if (seqAction !== undefined) {
        const text = constString(args[0]);
        const parts2 = text !== null ? splitSqlName(text) : null;
        const q = parts2 !== null ? qualify(parts2.slice(-2), this.defaultSchema) : null;
        if (q !== null) this.rel(seqAction, q, null);
        else this.forbid(`${seqAction} on a sequence named by a non-constant expression (${name})`);
      } else if (name === 'pg_notify') {
        this.add({ t: 'channel', action: 'notify', channel: constString(args[0]) });
      } else if (!READ_ONLY_BUILTINS.has(name)) {
        this.add({ t: 'func', fn: { schema: schema ?? this.defaultSchema, name }, unqualified: schema === null });
      }
    } else if (!(schema === 'information_schema' && INFORMATION_SCHEMA_FUNCTIONS.has(name))) {
      this.add({ t: 'func', fn: { schema, name }, unqualified: false });
    }
    this.expr([b.args, b.agg_order, b.agg_filter, b.over], level, c);
  }

  expr(v: unknown, level: Level | null, c: CteFrame | null): void {
    if (Array.isArray(v)) {
      for (const x of v) this.expr(x, level, c);
      return;
    }
    if (!isNode(v)) return;
    // Fields typed RangeVar* (CreateStmt.relation, IntoClause.rel...) come without the wrapper.
    if (typeof v.relname === 'string' && typeof v.relpersistence === 'string') {
      this.rel(this.rangeVarAction, this.resolveRangeVar(v), null);
      return;
    }
    for (const key of Object.keys(v)) {
      const body = v[key];
      if (!isNode(body)) {
        if (Array.isArray(body)) this.expr(body, level, c);
        continue;
      }
      if (STMT_TYPES.has(key)) this.stmtNode({ [key]: body }, level, c);
      else if (key === 'ColumnRef') this.columnRef(body, level);
      else if (key === 'FuncCall') this.funcCall(body, level, c);
      else if (key === 'A_Indirection') this.indirection(body, level, c);
      else if (key === 'RangeVar') this.rel(this.rangeVarAction, this.resolveRangeVar(body), null);
      else this.expr(body, level, c);
    }
  }

  /** DDL: every relation named anywhere in it needs `ddl`; queries inside are walked normally. */
  ddl(body: Node): void {
    const prev = this.rangeVarAction;
    this.rangeVarAction = 'ddl';
    try {
      this.expr(body, null, null);
    } finally {
      this.rangeVarAction = prev;
    }
  }

  ddlName(parts: readonly string[]): void {
    const q = qualify(parts.slice(-2), this.defaultSchema);
    if (q !== null) this.rel('ddl', q, null);
  }

  relAccess(action: RelAction, rv: Node, column: string | null): QualName {
    const rel = this.resolveRangeVar(rv);
    this.rel(action, rel, column);
    return rel;
  }

  channel(action: 'listen' | 'notify', channel: string | null): void {
    this.add({ t: 'channel', action, channel });
  }

  /** Level exposing one table, for COPY ... WHERE. */
  static single(rel: QualName): Level {
    return { items: [{ refname: rel.name, schema: null, rels: [rel], base: true, lockRels: [rel] }], parent: null };
  }
}

export function accessKey(a: Access): string {
  switch (a.t) {
    case 'rel': return `r\u0000${a.action}\u0000${a.rel.schema}\u0000${a.rel.name}\u0000${a.column ?? ''}`;
    case 'col_any': return `c\u0000${a.column}\u0000${a.candidates.map(displayName).join(',')}`;
    case 'func': return `f\u0000${a.fn.schema}\u0000${a.fn.name}\u0000${a.unqualified ? 1 : 0}`;
    case 'channel': return `n\u0000${a.action}\u0000${a.channel ?? ''}`;
    case 'forbidden': return `x\u0000${a.what}`;
  }
}

/** Human-readable one-liner of an access, for audit summaries. */
export function describeAccess(a: Access): string {
  switch (a.t) {
    case 'rel': return `${a.action} ${displayName(a.rel)}${a.column === null ? '' : `.${a.column}`}`;
    case 'col_any': return `select ${a.column} (of ${a.candidates.map(displayName).join(' or ')})`;
    case 'func': return `execute ${a.unqualified ? displayIdent(a.fn.name) : displayName(a.fn)}`;
    case 'channel': return `${a.action} channel ${a.channel ?? '(any)'}`;
    case 'forbidden': return a.what;
  }
}
