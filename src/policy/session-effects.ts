/** What a statement would do to a pooled server session (SET, RESET, temp objects, LISTEN ...), from its parse tree. */
import { classifySql } from './index.js';
import { LruCache } from './cache.js';
import { numericShape } from './shapes.js';
import { isNotCarried, isPinned, pinnedRefusal } from './lexical.js';
import { SqlError, type SqlState } from '../errors.js';

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
  /** State no reset undoes (the random seed): the server connection is closed after this client. */
  needsClose: boolean;
  /** May advance sequences: the next client's lastval()/currval() must not see them. */
  sequences: boolean;
  /** Ends the transaction or rolls back to a savepoint: a role set inside it may revert. */
  undo: boolean;
  /** LISTEN: needs a session of its own. */
  listen: boolean;
  /** SQL-level PREPARE / EXECUTE / DEALLOCATE name: cannot follow the client across backends. */
  sqlPrepared: boolean;
  /** DEALLOCATE ALL or DISCARD ALL: every prepared statement on the server goes. */
  deallocateAll: boolean;
  /** The text did not parse: Postgres will reject it, nothing to track. */
  unparsed: boolean;
  /** A change of a setting that decides how the server reads text (refused). */
  pinned: SqlError | null;
  /** The text is one BEGIN/START, COMMIT or ROLLBACK (scopegate may answer it itself). */
  control: 'begin' | 'commit' | 'rollback' | null;
  /** Any of the above asks something of the pooler. */
  tracked: boolean;
  /** What the above says depends on a literal of the text (a SET's value, set_config's
   * arguments, a pinned setting): texts of the same numeric shape may differ. */
  literal: boolean;
}


/**
 * Tracks session effects per statement text, always from the parse tree: a text filter
 * before it would miss `U&"pg_advisory_lock"` and friends. Results are cached (bounded);
 * the parse itself is the policy's cached one. Texts that differ only in numeric literals
 * (simple-protocol `... WHERE aid = 48213`) share one result unless it depends on a literal
 * (`literal`: a SET's value, set_config's arguments, a pinned setting, a text that does not
 * parse): everything else (kind, functions called, settings named) is the same for all of
 * them, so the parser runs once per shape, not once per text.
 */
export class SessionStateTracker {
  private readonly cache: LruCache<string, SessionEffects>;
  /** Effects by numeric shape, for results that depend on no literal. */
  private readonly shapes: LruCache<string, SessionEffects>;
  constructor(maxEntries = 5000) {
    this.cache = new LruCache(maxEntries, TRACKER_CACHE_BYTES);
    this.shapes = new LruCache(maxEntries, TRACKER_CACHE_BYTES);
  }

  effects(sql: string): SessionEffects {
    // The text first: the shape costs a scan of it.
    const own = this.cache.get(sql);
    if (own !== undefined) return own;
    const shape = numericShape(sql);
    const shared = shape === null ? undefined : this.shapes.get(shape);
    if (shared !== undefined) return shared;
    const fx = classify(sql);
    this.keep(sql, shape, fx);
    return fx;
  }

  /** Whether effects() would answer from the cache. */
  has(sql: string): boolean {
    if (this.cache.get(sql) !== undefined) return true;
    const shape = numericShape(sql);
    return shape !== null && this.shapes.get(shape) !== undefined;
  }

  /** Takes effects worked out elsewhere (a decision worker, by classify()) into the cache. */
  adopt(sql: string, fx: SessionEffects): void {
    this.keep(sql, numericShape(sql), fx);
  }

  private keep(sql: string, shape: string | null, fx: SessionEffects): void {
    if (shape !== null && !fx.literal) this.shapes.set(shape, fx, shape.length);
    else this.cache.set(sql, fx, sql.length);
  }
}

/** Texts kept by the tracker, by size. */
const TRACKER_CACHE_BYTES = 32 * 1024 * 1024;

/** SessionEffects as plain data (a worker's message cannot carry an SqlError). */
export type WireEffects = Omit<SessionEffects, 'pinned'> & { pinned: { code: SqlState; message: string; hint: string | undefined } | null };

export function effectsToWire(fx: SessionEffects): WireEffects {
  const p = fx.pinned;
  return { ...fx, pinned: p === null ? null : { code: p.code, message: p.message, hint: p.hint } };
}

export function effectsFromWire(w: WireEffects): SessionEffects {
  const p = w.pinned;
  return Object.freeze({ ...w, pinned: p === null ? null : new SqlError(p.code, p.message, p.hint === undefined ? {} : { hint: p.hint }) });
}

/**
 * What a text too deeply nested to walk may do: anything, so its server connection is not
 * reused (with a policy it is refused anyway; without one Postgres judges it).
 */
const UNKNOWN_EFFECTS: SessionEffects = Object.freeze({ settings: [], resetAll: false, needsReset: true, needsClose: true, sequences: true, undo: true, listen: false, sqlPrepared: false, deallocateAll: false, unparsed: true, pinned: null, control: null, tracked: true, literal: true });

/** Maps the policy module's statement classification onto what the pooler must do. */
export function classify(sql: string): SessionEffects {
  try {
    return classifyTree(sql);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    return UNKNOWN_EFFECTS;
  }
}

function classifyTree(sql: string): SessionEffects {
  const fx: SessionEffects = { settings: [], resetAll: false, needsReset: false, needsClose: false, sequences: false, undo: false, listen: false, sqlPrepared: false, deallocateAll: false, unparsed: false, pinned: null, control: null, tracked: false, literal: false };
  // Any SET of a pinned setting counts as tracked, allowed value or not, and as literal.
  let lexical = false;
  let literalEffect = false;
  const infos = classifySql(sql);
  if (infos.some((i) => i.kind === 'parser_failed')) return UNKNOWN_EFFECTS;
  const t = infos.length === 1 ? infos[0]!.transaction : null;
  fx.control = t === 'begin' || t === 'start' ? 'begin' : t === 'commit' || t === 'rollback' ? t : null;
  for (const info of infos) {
    if (info.kind === 'unparseable') fx.unparsed = true;
    if (info.lexical !== null) lexical = true;
    // A value that is not one plain constant counts as a change (refused).
    if (info.lexical !== null) fx.pinned ??= pinnedRefusal(info.lexical.name, info.lexical.value ?? '');
    for (const e of info.sessionEffects) {
      if (e.type === 'set' || e.type === 'set_config' || e.type === 'session_characteristics') literalEffect = true;
      switch (e.type) {
        case 'set': {
          const name = e.name.toLowerCase();
          if (isPinned(name)) break; // judged above; never replayed: every connection has scopegate's value
          if (isNotCarried(name)) fx.needsReset = true;
          else fx.settings.push([name, e.text.trim()]);
          break;
        }
        case 'reset': fx.settings.push([e.name.toLowerCase(), null]); break;
        case 'reset_all': fx.resetAll = true; fx.settings = []; break;
        case 'discard':
          fx.needsReset = true;
          if (e.target === 'all') { fx.resetAll = true; fx.settings = []; fx.deallocateAll = true; }
          break;
        case 'listen': fx.listen = true; break;
        case 'seed': fx.needsClose = true; break;
        case 'sequences': fx.sequences = true; break;
        case 'undo': fx.undo = true; break;
        case 'unlisten': break;
        case 'prepare': fx.sqlPrepared = true; break;
        case 'deallocate':
          if (e.name === null) fx.deallocateAll = true;
          else fx.sqlPrepared = true;
          break;
        // SET SESSION CHARACTERISTICS, temp objects, session advisory locks, set_config
        // (the pooler cannot replay it by name), WITH HOLD cursors, LOAD.
        default: fx.needsReset = true;
      }
    }
    if (info.nodeType === 'ExecuteStmt') fx.sqlPrepared = true;
  }
  fx.literal = lexical || fx.unparsed || fx.settings.length !== 0 || literalEffect;
  fx.tracked = lexical || fx.pinned !== null || fx.settings.length !== 0 || fx.resetAll || fx.needsReset || fx.needsClose || fx.sequences || fx.undo || fx.listen || fx.sqlPrepared || fx.deallocateAll;
  return Object.freeze(fx);
}
