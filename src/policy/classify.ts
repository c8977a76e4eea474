/** Statement kinds and session effects of a message, from the cached parse. */
import { analyzeStatement } from './analyze.js';
import { READ_ONLY_BUILTINS, SESSION_LOCK_FUNCTIONS } from './builtins.js';
import { calledName, eachNode, findNode, isNode, parseCached, type Node, type ParsedStatement } from './parse.js';
import { isPinned } from './lexical.js';

/** Session state a statement leaves behind on the server connection (matters in transaction pooling). */
export type SessionEffect =
  | { type: 'set'; name: string; text: string }
  | { type: 'reset'; name: string }
  | { type: 'reset_all' }
  | { type: 'session_characteristics'; text: string }
  | { type: 'discard'; target: 'all' | 'plans' | 'sequences' | 'temp' }
  | { type: 'listen'; channel: string }
  | { type: 'unlisten'; channel: string | null }
  | { type: 'temp_object'; object: 'table' | 'view' | 'sequence' | 'materialized view'; name: string }
  | { type: 'advisory_lock'; function: string }
  | { type: 'set_config'; local: boolean | null }
  | { type: 'prepare'; name: string }
  | { type: 'deallocate'; name: string | null }
  | { type: 'hold_cursor'; name: string }
  | { type: 'load' }
  /** setseed() or SET seed: the next random() is predictable, and no reset undoes it. */
  | { type: 'seed' }
  /** May advance a sequence (a write, nextval/setval, a function of the database's own):
   * lastval()/currval() would show the value to whoever uses the connection next. */
  | { type: 'sequences' }
  /** COMMIT, ROLLBACK, ROLLBACK TO SAVEPOINT, PREPARE TRANSACTION: settings made since the
   * transaction (or savepoint) began revert, scopegate's role switch among them. */
  | { type: 'undo' }
  /** DDL, CALL, DO: session state the pooler cannot classify (objects in pg_temp, ...). */
  | { type: 'unclassified'; what: string };

export interface StatementInfo {
  /** select, insert, update, delete, merge, copy, set, show, transaction, ddl, ... ('unparseable' if it does not parse). */
  kind: string;
  /** Parse-tree node type (SelectStmt, VariableSetStmt...). */
  nodeType: string;
  text: string;
  /** BEGIN/START/COMMIT/ROLLBACK/SAVEPOINT/RELEASE/PREPARE TRANSACTION..., SET TRANSACTION, SET CONSTRAINTS. */
  isTransactionControl: boolean;
  /** For TransactionStmt: begin, start, commit, rollback, savepoint, release, rollback_to, prepare, commit_prepared, rollback_prepared. */
  transaction: string | null;
  sessionEffects: SessionEffect[];
  /** SET [LOCAL] of a setting that decides how the server reads text (policy/lexical.ts), with its
   * value when that is one plain constant; null for any other statement. */
  lexical: LexicalChange | null;
}

/** A change of a pinned setting: its name and constant value (null: not one constant), or
 * `name: null` for set_config of a name that is not a constant (it may be any of them). */
export type LexicalChange = { name: string; value: string | null } | { name: null; value: null };

const CURSOR_OPT_HOLD = 0x20;

/** The name of every function the tree calls, as the parser decoded it (U&"..." and quotes resolved). */
function collectCalls(tree: unknown, out: Set<string>): void {
  eachNode(tree, (n) => { if (isNode(n.FuncCall)) out.add(calledName(n.FuncCall)); });
}

/** Statement kinds that may advance a sequence through column defaults, triggers or code. */
const SEQUENCE_KINDS = new Set(['insert', 'update', 'delete', 'merge', 'copy', 'ddl', 'call', 'do']);

function setConfigCalls(tree: unknown, out: SessionEffect[]): void {
  eachNode(tree, (n) => {
    const fc = n.FuncCall;
    if (!isNode(fc) || calledName(fc) !== 'set_config') return;
    const args = Array.isArray(fc.args) ? fc.args : [];
    const third: unknown = args[2];
    let local: boolean | null = null;
    if (isNode(third) && isNode(third.A_Const) && isNode(third.A_Const.boolval)) local = third.A_Const.boolval.boolval === true;
    else if (isNode(third) && isNode(third.A_Const) && third.A_Const.isnull !== true) local = false; // boolval false is omitted
    if (local !== true) out.push({ type: 'set_config', local });
  });
}

function relName(rel: unknown): string {
  return isNode(rel) && typeof rel.relname === 'string' ? rel.relname : '';
}

function isTemp(rel: unknown): boolean {
  return isNode(rel) && rel.relpersistence === 't';
}

/** The value of `SET name TO value` as text when it is one plain constant; null otherwise. */
function firstValue(args: unknown): string | null {
  if (!Array.isArray(args) || args.length !== 1) return null;
  const c = (args[0] as Node)?.A_Const as Node | undefined;
  if (c === undefined || c === null) return null;
  const sval = (c.sval as Node | undefined)?.sval;
  if (typeof sval === 'string') return sval;
  const ival = (c.ival as Node | undefined)?.ival;
  if (typeof ival === 'number') return String(ival);
  if (c.ival !== undefined) return '0';
  const bool = (c.boolval as Node | undefined)?.boolval;
  if (c.boolval !== undefined) return bool === true ? 'on' : 'off';
  return null;
}

/**
 * A SET or SET LOCAL of a pinned setting, or one nested in another statement (ALTER ROLE /
 * DATABASE / SYSTEM ... SET, a function's SET clause). RESET and TO DEFAULT are not changes:
 * at the top level they return to scopegate's value; nested, they remove a setting.
 */
function lexicalChange(ps: ParsedStatement): LexicalChange | null {
  if (ps.type === 'VariableSetStmt') return pinnedSet(ps.body);
  return nestedPinnedSet(ps.body) ?? pinnedSetConfig(ps.body);
}

function nestedPinnedSet(tree: unknown): LexicalChange | null {
  // A VariableSetStmt node, or an unwrapped one (ALTER ROLE / DATABASE / SYSTEM's setstmt).
  return findNode(tree, (n) => {
    const set = isNode(n.VariableSetStmt) ? n.VariableSetStmt : isNode(n.setstmt) ? n.setstmt : null;
    return set === null ? null : pinnedSet(set);
  });
}

/** set_config(name, value, is_local) anywhere in the tree, of a pinned or computed name. */
function pinnedSetConfig(tree: unknown): LexicalChange | null {
  return findNode<LexicalChange>(tree, (n) => {
    const fc = n.FuncCall;
    if (!isNode(fc) || calledName(fc) !== 'set_config') return null;
    const args = Array.isArray(fc.args) ? fc.args : [];
    const name = constantText(args[0]);
    if (name === null) return { name: null, value: null };
    return isPinned(name.toLowerCase()) ? { name: name.toLowerCase(), value: constantText(args[1]) } : null;
  });
}

/** A string constant, also through casts ('x'::text); null for anything else. */
function constantText(n: unknown): string | null {
  if (!isNode(n)) return null;
  if (isNode(n.TypeCast)) return constantText(n.TypeCast.arg);
  const c = n.A_Const;
  return isNode(c) && isNode(c.sval) && typeof c.sval.sval === 'string' ? c.sval.sval : null;
}

function pinnedSet(v: Node): { name: string; value: string | null } | null {
  const name = typeof v.name === 'string' ? v.name.toLowerCase() : '';
  return v.kind === 'VAR_SET_VALUE' && isPinned(name) ? { name, value: firstValue(v.args) } : null;
}

/**
 * SET SESSION CHARACTERISTICS AS TRANSACTION ... is the same as setting the
 * default_transaction_* parameters: tracked as those, so it follows the client. Anything
 * unexpected stays an untracked effect (the connection is reset).
 */
function sessionCharacteristics(args: unknown, text: string): SessionEffect[] {
  const out: SessionEffect[] = [];
  for (const a of Array.isArray(args) ? args : []) {
    const d = isNode(a) && isNode(a.DefElem) ? a.DefElem : null;
    const c = d !== null && isNode(d.arg) && isNode(d.arg.A_Const) ? d.arg.A_Const : null;
    const mode = d !== null && typeof d.defname === 'string' ? d.defname : '';
    let value: string | null = null;
    if (c !== null && mode === 'transaction_isolation' && isNode(c.sval) && typeof c.sval.sval === 'string') value = quoteSettingLiteral(c.sval.sval);
    else if (c !== null && (mode === 'transaction_read_only' || mode === 'transaction_deferrable') && isNode(c.ival)) value = c.ival.ival === 1 ? 'on' : 'off';
    if (value === null) return [{ type: 'session_characteristics', text }];
    const setting = `default_${mode}`;
    out.push({ type: 'set', name: setting, text: `SET ${setting} TO ${value}` });
  }
  return out.length === 0 ? [{ type: 'session_characteristics', text }] : out;
}

/** An isolation level as a SET value: letters and spaces only, quoted. */
function quoteSettingLiteral(v: string): string | null {
  return /^[a-z ]+$/.test(v) ? `'${v}'` : null;
}

function effectsOf(ps: ParsedStatement, kind: string): SessionEffect[] {
  const b: Node = ps.body;
  const fx: SessionEffect[] = [];
  switch (ps.type) {
    case 'VariableSetStmt': {
      const name = typeof b.name === 'string' ? b.name.toLowerCase() : '';
      // SET [LOCAL] seed reseeds random() for the session; only its value is transactional.
      if (name === 'seed') { fx.push({ type: 'seed' }); break; }
      if (b.is_local === true) break;
      if (b.kind === 'VAR_RESET_ALL') fx.push({ type: 'reset_all' });
      else if (b.kind === 'VAR_SET_MULTI') {
        if (name === 'session characteristics') fx.push(...sessionCharacteristics(b.args, ps.text));
      } else if (b.kind === 'VAR_RESET' || b.kind === 'VAR_SET_DEFAULT') fx.push({ type: 'reset', name });
      else fx.push({ type: 'set', name, text: ps.text });
      break;
    }
    case 'DiscardStmt': {
      const t = b.target === 'DISCARD_ALL' ? 'all' : b.target === 'DISCARD_PLANS' ? 'plans' : b.target === 'DISCARD_SEQUENCES' ? 'sequences' : 'temp';
      fx.push({ type: 'discard', target: t });
      break;
    }
    case 'ListenStmt': fx.push({ type: 'listen', channel: typeof b.conditionname === 'string' ? b.conditionname : '' }); break;
    case 'UnlistenStmt': fx.push({ type: 'unlisten', channel: typeof b.conditionname === 'string' ? b.conditionname : null }); break;
    case 'CreateStmt': if (isTemp(b.relation)) fx.push({ type: 'temp_object', object: 'table', name: relName(b.relation) }); break;
    case 'CreateSeqStmt': if (isTemp(b.sequence)) fx.push({ type: 'temp_object', object: 'sequence', name: relName(b.sequence) }); break;
    case 'ViewStmt': if (isTemp(b.view)) fx.push({ type: 'temp_object', object: 'view', name: relName(b.view) }); break;
    case 'CreateTableAsStmt':
      if (isNode(b.into) && isTemp(b.into.rel)) fx.push({ type: 'temp_object', object: b.objtype === 'OBJECT_MATVIEW' ? 'materialized view' : 'table', name: relName(b.into.rel) });
      break;
    case 'SelectStmt':
      if (isNode(b.intoClause) && isTemp(b.intoClause.rel)) fx.push({ type: 'temp_object', object: 'table', name: relName(b.intoClause.rel) });
      break;
    case 'DeclareCursorStmt':
      if (typeof b.options === 'number' && (b.options & CURSOR_OPT_HOLD) !== 0) fx.push({ type: 'hold_cursor', name: typeof b.portalname === 'string' ? b.portalname : '' });
      break;
    case 'PrepareStmt': fx.push({ type: 'prepare', name: typeof b.name === 'string' ? b.name : '' }); break;
    case 'DeallocateStmt': fx.push({ type: 'deallocate', name: b.isall === true || typeof b.name !== 'string' ? null : b.name }); break;
    case 'LoadStmt': fx.push({ type: 'load' }); break;
    case 'ExplainStmt':
      // With ANALYZE the statement runs: its effects are not classified here, so reset.
      if ((Array.isArray(b.options) ? b.options : []).some((o) => isNode(o) && isNode(o.DefElem) && o.DefElem.defname === 'analyze')) {
        fx.push({ type: 'unclassified', what: 'EXPLAIN ANALYZE' }, { type: 'sequences' });
      }
      break;
    case 'TransactionStmt': {
      const k = typeof b.kind === 'string' ? b.kind : '';
      if (k === 'TRANS_STMT_COMMIT' || k === 'TRANS_STMT_ROLLBACK' || k === 'TRANS_STMT_ROLLBACK_TO' || k === 'TRANS_STMT_PREPARE') fx.push({ type: 'undo' });
      break;
    }
    default: break;
  }
  if (kind === 'ddl' || ps.type === 'CallStmt' || ps.type === 'DoStmt') fx.push({ type: 'unclassified', what: ps.type });
  const calls = new Set<string>();
  collectCalls(b, calls);
  let sequences = SEQUENCE_KINDS.has(kind);
  for (const f of calls) {
    if (SESSION_LOCK_FUNCTIONS.has(f)) fx.push({ type: 'advisory_lock', function: f });
    else if (f === 'setseed') fx.push({ type: 'seed' });
    if (f === 'nextval' || f === 'setval' || !READ_ONLY_BUILTINS.has(f)) sequences = true;
  }
  if (sequences) fx.push({ type: 'sequences' });
  setConfigCalls(b, fx);
  return fx;
}

const TXN_KINDS: Record<string, string> = {
  TRANS_STMT_BEGIN: 'begin', TRANS_STMT_START: 'start', TRANS_STMT_COMMIT: 'commit', TRANS_STMT_ROLLBACK: 'rollback',
  TRANS_STMT_SAVEPOINT: 'savepoint', TRANS_STMT_RELEASE: 'release', TRANS_STMT_ROLLBACK_TO: 'rollback_to',
  TRANS_STMT_PREPARE: 'prepare', TRANS_STMT_COMMIT_PREPARED: 'commit_prepared', TRANS_STMT_ROLLBACK_PREPARED: 'rollback_prepared',
};

/**
 * Statement kinds and session effects of a message, from the same cached parse the policy
 * uses. Works without a policy (needs initParser()). Unparseable text gives one
 * statement of kind 'unparseable' with no effects (Postgres will reject it).
 */
export function classifySql(text: string): StatementInfo[] {
  const parsed = parseCached(text);
  // A parser that failed says nothing about the text: not even that Postgres would refuse it.
  if (!parsed.ok) return [{ kind: parsed.failure === true ? 'parser_failed' : 'unparseable', nodeType: '', text, isTransactionControl: false, transaction: null, sessionEffects: [], lexical: null }];
  return parsed.statements.map((ps) => {
    const an = analyzeStatement(ps, 'public');
    const transaction = ps.type === 'TransactionStmt' && typeof ps.body.kind === 'string' ? TXN_KINDS[ps.body.kind] ?? null : null;
    return { kind: an.kind, nodeType: ps.type, text: ps.text, isTransactionControl: an.isTransactionControl, transaction, sessionEffects: effectsOf(ps, an.kind), lexical: lexicalChange(ps) };
  });
}
