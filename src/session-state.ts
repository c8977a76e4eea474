import { loadModule, parseSync } from 'libpg-query';

/**
 * What one simple Query or Parse does to session state that would outlive its transaction
 * on a pooled server connection.
 */
export interface SessionEffects {
  /** `SET name ...` / `RESET name` outside LOCAL: name -> the statement text, or null for RESET. */
  settings: Array<[string, string | null]>;
  /** RESET ALL or DISCARD ALL: the client's settings go back to its startup values. */
  resetAll: boolean;
  /** State the pooler cannot carry over (temp objects, session locks, ...): reset the server before reuse. */
  needsReset: boolean;
  /** LISTEN: needs a session of its own. */
  listen: boolean;
  /** SQL-level PREPARE / EXECUTE / DEALLOCATE name: cannot follow the client across backends. */
  sqlPrepared: boolean;
  /** DEALLOCATE ALL or DISCARD ALL: every prepared statement on the server goes. */
  deallocateAll: boolean;
  /** The text did not parse: Postgres will reject it, nothing to track. */
  unparsed: boolean;
}

const NONE: SessionEffects = Object.freeze({ settings: [], resetAll: false, needsReset: false, listen: false, sqlPrepared: false, deallocateAll: false, unparsed: false }) as SessionEffects;

// The parser runs only when the text could change session state: a statement that starts
// with one of these words, mentions one of the functions, or has comments or several
// statements (a trailing semicolon, as pgbench sends, does not count). Everything else
// (the hot path) costs two regex tests.
const LEADING = /^\s*(set|reset|listen|create|prepare|execute|deallocate|declare|load|discard|select\s+set_config)\b/i;
const ANYWHERE = /advisory|set_config|;\s*\S|--|\/\*/i;

const SESSION_LOCK_FUNCS = new Set(['pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_try_advisory_lock', 'pg_try_advisory_lock_shared']);

const CURSOR_OPT_HOLD = 0x20;

let ready: Promise<void> | null = null;

/** Loads the WASM parser once; call before the first classification. */
export function initParser(): Promise<void> {
  ready ??= loadModule();
  return ready;
}

type Node = Record<string, unknown>;

function isNode(v: unknown): v is Node {
  return typeof v === 'object' && v !== null;
}

/** Finds function calls anywhere in a parse tree (only walked when the prefilter says so). */
function callsAny(tree: unknown, names: Set<string>): boolean {
  if (Array.isArray(tree)) return tree.some((t) => callsAny(t, names));
  if (!isNode(tree)) return false;
  const fc = tree.FuncCall;
  if (isNode(fc) && Array.isArray(fc.funcname)) {
    const last = fc.funcname[fc.funcname.length - 1] as { String?: { sval?: string } } | undefined;
    const name = last?.String?.sval;
    if (name !== undefined && names.has(name.toLowerCase())) return true;
  }
  for (const v of Object.values(tree)) if (isNode(v) && callsAny(v, names)) return true;
  return false;
}

function isTemp(rel: unknown): boolean {
  return isNode(rel) && rel.relpersistence === 't';
}

/**
 * Tracks session effects per statement text. Results are cached (bounded), so the parser
 * runs once per distinct text that passes the prefilter.
 */
export class SessionStateTracker {
  private readonly cache = new Map<string, SessionEffects>();
  constructor(private readonly maxEntries = 5000) {}

  effects(sql: string): SessionEffects {
    if (!LEADING.test(sql) && !ANYWHERE.test(sql)) return NONE;
    const hit = this.cache.get(sql);
    if (hit !== undefined) return hit;
    const fx = classify(sql);
    if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(sql, fx);
    return fx;
  }
}

export function classify(sql: string): SessionEffects {
  let stmts: Array<{ stmt?: Node; stmt_location?: number; stmt_len?: number }>;
  try {
    stmts = (parseSync(sql) as unknown as { stmts?: typeof stmts }).stmts ?? [];
  } catch {
    return { ...NONE, settings: [], unparsed: true };
  }
  const fx: SessionEffects = { settings: [], resetAll: false, needsReset: false, listen: false, sqlPrepared: false, deallocateAll: false, unparsed: false };
  const bytes = Buffer.from(sql, 'utf8');
  for (const raw of stmts) {
    const node = raw.stmt;
    if (!node) continue;
    const [kind, body] = Object.entries(node)[0] as [string, Node];
    switch (kind) {
      case 'VariableSetStmt': {
        if (body.is_local === true) break;
        const name = typeof body.name === 'string' ? body.name.toLowerCase() : '';
        const k = body.kind;
        if (k === 'VAR_RESET_ALL') { fx.resetAll = true; fx.settings = []; break; }
        if (k === 'VAR_SET_MULTI') {
          // SET TRANSACTION is transaction-scoped; SET SESSION CHARACTERISTICS is not.
          if (name === 'session characteristics') fx.needsReset = true;
          break;
        }
        if (k === 'VAR_RESET' || k === 'VAR_SET_DEFAULT') { fx.settings.push([name, null]); break; }
        const start = raw.stmt_location ?? 0;
        const end = raw.stmt_len !== undefined && raw.stmt_len > 0 ? start + raw.stmt_len : bytes.length;
        fx.settings.push([name, bytes.toString('utf8', start, end).trim()]);
        break;
      }
      case 'DiscardStmt':
        fx.needsReset = true;
        if (body.target === 'DISCARD_ALL') { fx.resetAll = true; fx.settings = []; fx.deallocateAll = true; }
        break;
      case 'ListenStmt':
        fx.listen = true;
        break;
      case 'CreateStmt':
      case 'CreateSeqStmt':
        if (isTemp(body.relation) || isTemp(body.sequence)) fx.needsReset = true;
        break;
      case 'ViewStmt':
        if (isTemp(body.view)) fx.needsReset = true;
        break;
      case 'CreateTableAsStmt':
        if (isNode(body.into) && isTemp(body.into.rel)) fx.needsReset = true;
        break;
      case 'SelectStmt':
        if (isNode(body.intoClause) && isTemp(body.intoClause.rel)) fx.needsReset = true;
        break;
      case 'DeclareCursorStmt':
        if (typeof body.options === 'number' && (body.options & CURSOR_OPT_HOLD) !== 0) fx.needsReset = true;
        break;
      case 'DeallocateStmt':
        if (body.isall === true) fx.deallocateAll = true;
        else fx.sqlPrepared = true;
        break;
      case 'PrepareStmt':
      case 'ExecuteStmt':
        fx.sqlPrepared = true;
        break;
      case 'LoadStmt':
        fx.needsReset = true;
        break;
    }
    if (!fx.needsReset && callsAny(body, SESSION_LOCK_FUNCS)) fx.needsReset = true;
    // set_config(name, value, false) changes a setting the pooler cannot replay by name.
    if (!fx.needsReset && callsAny(body, SET_CONFIG)) fx.needsReset = true;
  }
  return fx;
}

const SET_CONFIG = new Set(['set_config']);
