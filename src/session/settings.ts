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

/**
 * Turns startup parameters (and `options=-c ...`) into settings; refuses role changes.
 * `values` keeps the values as sent, for the policy's startup check.
 */
export function startupSettings(params: Map<string, string>, fromOptions: Map<string, string>): { settings: SettingMap; values: Map<string, string> } {
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
  return { settings: out, values };
}

/**
 * The statements that bring a backend from `applied` to `wanted`. Empty when they match,
 * which is the common case: clients of one application send the same parameters.
 */
export function settingsDiff(applied: ReadonlyMap<string, string>, wanted: ReadonlyMap<string, string>): string[] {
  const out: string[] = [];
  for (const [name, stmt] of wanted) if (applied.get(name) !== stmt) out.push(stmt);
  for (const name of applied.keys()) if (!wanted.has(name)) out.push(`RESET ${quoteIdent(name)}`);
  return out;
}
