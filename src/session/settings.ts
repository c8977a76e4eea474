/** Per-client settings as SET statements, startup parameters, safe literals. */
import { SqlError, SQLSTATE } from '../errors.js';
import { isNotCarried, pinnedRefusal } from '../policy/lexical.js';

/**
 * Per-client session settings, kept as the SET statement that establishes each one, so
 * whichever backend serves the client next can be brought to the same state.
 */
export type SettingMap = Map<string, string>;

const NAME = /^[A-Za-z_][A-Za-z0-9_.]*$/;

/** Startup parameters that are not settings, or that only the pooler may decide. */
const NOT_SETTINGS = new Set(['user', 'database', 'options', 'replication']);
const REFUSED = new Set(['role', 'session_authorization']);

/**
 * A string literal that Postgres reads the same whatever standard_conforming_strings says:
 * quotes doubled, and a text with a backslash in the E'' form with backslashes doubled
 * (never \', which backslash_quote may refuse).
 */
export function quoteLiteral(v: string): string {
  const q = v.replace(/'/g, "''");
  return v.includes('\\') ? `E'${q.replace(/\\/g, '\\\\')}'` : `'${q}'`;
}

export function quoteIdent(v: string): string {
  return `"${v.replace(/"/g, '""')}"`;
}

/** set_config takes the value as a GUC string, as a startup parameter is: `a,b` stays a list. */
export function setStatement(name: string, value: string): string {
  return `SELECT pg_catalog.set_config(${quoteLiteral(name)}, ${quoteLiteral(value)}, false)`;
}

/** A map nobody may change once built: startup settings shared by the clients that sent them. */
class SharedMap extends Map<string, string> {
  constructor(from: Map<string, string>) {
    super();
    for (const [k, v] of from) super.set(k, v);
  }
  override set(): this { throw new TypeError('shared startup settings are read-only'); }
  override delete(): boolean { throw new TypeError('shared startup settings are read-only'); }
  override clear(): void { throw new TypeError('shared startup settings are read-only'); }
}

export interface StartupSettings {
  /** name -> SET statement. */
  settings: ReadonlyMap<string, string>;
  /** name -> value as sent. */
  values: ReadonlyMap<string, string>;
}

const NO_STARTUP_SETTINGS: StartupSettings = { settings: new SharedMap(new Map()), values: new SharedMap(new Map()) };
/** Startup settings by their text: the clients of one application send the same ones and share one pair of maps. */
const seenStartupSettings = new Map<string, StartupSettings>();
/** Distinct sets kept; past it (a parameter unique per client) each client gets maps of its own. */
const MAX_SHARED_STARTUP_SETTINGS = 256;

/**
 * Turns startup parameters (and `options=-c ...`) into settings; refuses role changes.
 * `values` keeps the values as sent, for the policy's startup check. The maps returned are
 * read-only and may be shared with other clients that sent the same settings.
 */
export function startupSettings(params: Map<string, string>, fromOptions: Map<string, string>): StartupSettings {
  const out: SettingMap = new Map();
  const values = new Map<string, string>();
  const add = (rawName: string, value: string): void => {
    const name = rawName.toLowerCase();
    if (REFUSED.has(name)) {
      throw new SqlError(SQLSTATE.INSUFFICIENT_PRIVILEGE, `permission denied: startup parameter "${rawName}" cannot be set through scopegate`, { severity: 'FATAL', hint: 'The role a statement runs under is chosen by scopegate from the scopes that grant it.' });
    }
    if (!NAME.test(name)) throw new SqlError(SQLSTATE.INVALID_PARAMETER_VALUE, `invalid startup parameter name "${rawName}"`, { severity: 'FATAL' });
    const pinned = pinnedRefusal(name, value, 'FATAL');
    if (pinned !== null) throw pinned;
    if (isNotCarried(name)) {
      throw new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, `startup parameter "${name}" cannot be carried across pooled server connections`, { severity: 'FATAL', hint: 'Set it inside the transaction that needs it (SET LOCAL, or SET TRANSACTION).' });
    }
    out.set(name, setStatement(name, value));
    values.set(name, value);
  };
  for (const [k, v] of params) if (!NOT_SETTINGS.has(k)) add(k, v);
  for (const [k, v] of fromOptions) add(k, v);
  if (out.size === 0) return NO_STARTUP_SETTINGS;
  let key = '';
  for (const [k, v] of values) key += `${k}\0${v}\0`;
  const seen = seenStartupSettings.get(key);
  if (seen !== undefined) return seen;
  const made: StartupSettings = { settings: new SharedMap(out), values: new SharedMap(values) };
  if (seenStartupSettings.size < MAX_SHARED_STARTUP_SETTINGS) seenStartupSettings.set(key, made);
  return made;
}

/**
 * The statements that bring a backend from `applied` to `wanted`. Empty when they match,
 * which is the common case: clients of one application send the same parameters.
 */
export function settingsDiff(applied: ReadonlyMap<string, string>, wanted: ReadonlyMap<string, string>): string[] {
  // Asked at every checkout: the common answer is found without allocating.
  if (sameSettings(applied, wanted)) return [];
  const out: string[] = [];
  for (const [name, stmt] of wanted) if (applied.get(name) !== stmt) out.push(stmt);
  for (const name of applied.keys()) if (!wanted.has(name)) out.push(`RESET ${quoteIdent(name)}`);
  return out;
}

/** Scratch of sameSettings: forEach with a module-level callback allocates no closure. */
let compareWith: ReadonlyMap<string, string> = new Map();
let compareEqual = true;
function compareEntry(stmt: string, name: string): void {
  if (compareEqual && compareWith.get(name) !== stmt) compareEqual = false;
}

/** Whether the two hold the same entries (equal sizes and every entry of `b` in `a`). */
function sameSettings(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a.size !== b.size) return false;
  if (a.size === 0) return true;
  compareWith = a;
  compareEqual = true;
  b.forEach(compareEntry);
  compareWith = EMPTY_SETTINGS;
  return compareEqual;
}
const EMPTY_SETTINGS: ReadonlyMap<string, string> = new Map();
