/** Statement analysis: kind, transaction control and accessed objects of one parsed statement. */
import { AccessCollector, statementTitle } from './ast-walk.js';
import { isNode, type Node, type ParsedStatement } from './parse.js';
import type { Access, ColumnCatalog } from './types.js';

export interface StatementAnalysis {
  kind: string;
  accesses: Access[];
  isTransactionControl: boolean;
}

/** Settings only `all` may change: they switch identity, redirect names, or forge scopegate's own context. */
export function isProtectedSetting(name: string): boolean {
  const n = name.toLowerCase();
  return n === 'role' || n === 'session_authorization' || n === 'search_path' || n.startsWith('scopegate.');
}

function settingTitle(name: string): string {
  const n = name.toLowerCase();
  if (n === 'role') return 'ROLE';
  if (n === 'session_authorization') return 'SESSION AUTHORIZATION';
  return n;
}

const ROLE_STMTS = new Set([
  'CreateRoleStmt', 'AlterRoleStmt', 'AlterRoleSetStmt', 'DropRoleStmt', 'GrantStmt', 'GrantRoleStmt',
  'AlterDefaultPrivilegesStmt', 'ReassignOwnedStmt', 'DropOwnedStmt', 'AlterOwnerStmt',
]);

/** DDL on relations, grantable per table with `ddl`. Everything else DDL-like needs `all`. */
const TABLE_DDL = new Set([
  'CreateStmt', 'IndexStmt', 'AlterTableStmt', 'ViewStmt', 'CreateTableAsStmt', 'CreateSeqStmt',
  'AlterSeqStmt', 'RefreshMatViewStmt',
]);
const TABLE_OBJECTS = new Set(['OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_SEQUENCE', 'OBJECT_INDEX', 'OBJECT_FOREIGN_TABLE']);

function strings(v: unknown): string[] {
  const out: string[] = [];
  const items = isNode(v) && isNode(v.List) && Array.isArray(v.List.items) ? v.List.items : Array.isArray(v) ? v : [];
  for (const it of items) if (isNode(it) && isNode(it.String) && typeof it.String.sval === 'string') out.push(it.String.sval);
  return out;
}

/** What one top-level statement is and everything it needs. */
export function analyzeStatement(ps: ParsedStatement, defaultSchema: string, catalog: ColumnCatalog | null = null): StatementAnalysis {
  const col = new AccessCollector(defaultSchema, catalog);
  const res = walk(ps.type, ps.body, col);
  return { kind: res.kind, accesses: col.accesses, isTransactionControl: res.tc };
}

function walk(type: string, b: Node, col: AccessCollector): { kind: string; tc: boolean } {
  const r = (kind: string, tc = false): { kind: string; tc: boolean } => ({ kind, tc });
  switch (type) {
    case 'SelectStmt':
      col.select(b, null, null);
      return r(isNode(b.intoClause) ? 'ddl' : 'select');
    case 'InsertStmt': col.stmtNode({ InsertStmt: b }, null, null); return r('insert');
    case 'UpdateStmt': col.stmtNode({ UpdateStmt: b }, null, null); return r('update');
    case 'DeleteStmt': col.stmtNode({ DeleteStmt: b }, null, null); return r('delete');
    case 'MergeStmt': col.stmtNode({ MergeStmt: b }, null, null); return r('merge');
    case 'ExplainStmt': {
      // EXPLAIN needs what the statement needs (with ANALYZE it runs it; without, it still
      // reveals plans and row estimates).
      const inner = isNode(b.query) ? Object.entries(b.query)[0] : undefined;
      if (inner !== undefined && isNode(inner[1])) walk(inner[0], inner[1], col);
      return r('explain');
    }
    case 'CopyStmt': {
      if (b.is_program === true) col.forbid('COPY to or from PROGRAM');
      else if (typeof b.filename === 'string') col.forbid('COPY to or from a server file');
      if (isNode(b.relation)) {
        const action = b.is_from === true ? 'insert' : 'select';
        const names = strings(b.attlist);
        const rel = col.resolveRangeVar(b.relation);
        if (names.length > 0) for (const n of names) col.relAccess(action, b.relation, n);
        else col.relAccess(action, b.relation, '*');
        if (b.whereClause !== undefined) col.expr(b.whereClause, AccessCollector.single(rel), null);
      }
      if (b.query !== undefined) col.stmtNode(b.query, null, null);
      return r('copy');
    }
    case 'TruncateStmt':
      for (const rv of Array.isArray(b.relations) ? b.relations : []) if (isNode(rv) && isNode(rv.RangeVar)) col.relAccess('truncate', rv.RangeVar, null);
      return r('truncate');
    case 'LockStmt':
      for (const rv of Array.isArray(b.relations) ? b.relations : []) if (isNode(rv) && isNode(rv.RangeVar)) col.relAccess('lock', rv.RangeVar, null);
      return r('lock');
    case 'VariableSetStmt': {
      const name = typeof b.name === 'string' ? b.name : '';
      if (b.kind === 'VAR_SET_MULTI') return name.toLowerCase() === 'transaction' ? r('transaction', true) : r('set');
      if (b.kind === 'VAR_RESET_ALL') return r('set'); // role and session_authorization are exempt from RESET ALL
      if (isProtectedSetting(name)) col.forbid(`${b.kind === 'VAR_RESET' ? 'RESET' : 'SET'} ${settingTitle(name)}`);
      return r('set');
    }
    case 'VariableShowStmt': return r('show');
    case 'TransactionStmt': {
      const k = typeof b.kind === 'string' ? b.kind : '';
      // Two-phase commit detaches the transaction from the session: not for pooled clients.
      if (k === 'TRANS_STMT_PREPARE' || k === 'TRANS_STMT_COMMIT_PREPARED' || k === 'TRANS_STMT_ROLLBACK_PREPARED') col.forbid('two-phase commit (PREPARE TRANSACTION / COMMIT PREPARED)');
      return r('transaction', true);
    }
    case 'ConstraintsSetStmt': return r('transaction', true);
    case 'DiscardStmt': return r('discard');
    case 'ListenStmt': col.channel('listen', typeof b.conditionname === 'string' ? b.conditionname : null); return r('listen');
    case 'UnlistenStmt': return r('unlisten');
    case 'NotifyStmt': col.channel('notify', typeof b.conditionname === 'string' ? b.conditionname : null); return r('notify');
    case 'DeclareCursorStmt': col.stmtNode(b.query, null, null); return r('declare');
    case 'FetchStmt': return r('fetch');
    case 'ClosePortalStmt': return r('close');
    case 'CallStmt': col.expr({ FuncCall: b.funccall }, null, null); return r('call');
    case 'PrepareStmt': col.forbid('PREPARE (SQL-level prepared statements)'); return r('prepare');
    case 'ExecuteStmt': col.forbid('EXECUTE (SQL-level prepared statements)'); return r('execute');
    case 'DeallocateStmt': col.forbid('DEALLOCATE (SQL-level prepared statements)'); return r('deallocate');
    case 'DoStmt': col.forbid('DO (anonymous code block)'); return r('do');
    case 'LoadStmt': col.forbid('LOAD'); return r('load');
    case 'AlterSystemStmt': col.forbid('ALTER SYSTEM'); return r('alter_system');
    case 'DropStmt': {
      if (typeof b.removeType === 'string' && TABLE_OBJECTS.has(b.removeType)) {
        for (const o of Array.isArray(b.objects) ? b.objects : []) col.ddlName(strings(o));
      } else {
        col.forbid(`DROP ${typeof b.removeType === 'string' ? b.removeType.replace(/^OBJECT_/, '') : ''}`.trim());
      }
      return r('ddl');
    }
    case 'RenameStmt': {
      if (typeof b.renameType === 'string' && TABLE_OBJECTS.has(b.renameType) || b.renameType === 'OBJECT_COLUMN') col.ddl(b);
      else col.forbid('ALTER ... RENAME');
      return r('ddl');
    }
    default:
      break;
  }
  if (ROLE_STMTS.has(type)) {
    col.forbid(statementTitle(type));
    return r('role');
  }
  if (TABLE_DDL.has(type)) {
    const ownerChange = type === 'AlterTableStmt' && JSON.stringify(b.cmds ?? null).includes('"AT_ChangeOwner"');
    if (ownerChange) col.forbid('ALTER TABLE ... OWNER TO');
    col.ddl(b);
    return r('ddl');
  }
  // Anything else (CREATE FUNCTION, VACUUM, CHECKPOINT, ...) needs `all`: deny by default.
  col.forbid(statementTitle(type));
  return r(type.endsWith('Stmt') && /^(Create|Alter|Drop|Comment|Sec|Rule|Define|Composite|Create)/.test(type) ? 'ddl' : 'utility');
}
