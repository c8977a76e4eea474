/** The lexical environment scopegate pins on every server connection, and the refusal for changing it. */
import { SqlError, SQLSTATE } from '../errors.js';

/**
 * Settings that decide how the server splits a text into tokens. libpg-query reads every
 * statement as UTF8 with standard_conforming_strings on; a server that read it otherwise
 * would run a different statement from the one checked. They keep these values.
 */
const PINNED: ReadonlyMap<string, { allowed: RegExp; supported: string }> = new Map([
  ['standard_conforming_strings', { allowed: /^(on|true|yes|1)$/i, supported: 'on' }],
  ['client_encoding', { allowed: /^(utf-?8|unicode)$/i, supported: 'UTF8' }],
  ['backslash_quote', { allowed: /^safe_encoding$/i, supported: 'safe_encoding' }],
]);

/** The refusal for setting a pinned parameter to `value` (null for RESET: back to scopegate's), or null when allowed. */
export function pinnedRefusal(name: string, value: string | null, severity: 'ERROR' | 'FATAL' = 'ERROR'): SqlError | null {
  const pin = PINNED.get(name.toLowerCase());
  if (pin === undefined || value === null || pin.allowed.test(value.trim())) return null;
  return new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, `parameter "${name.toLowerCase()}" cannot be changed through scopegate`, {
    severity,
    hint: `scopegate reads every statement as the server will, so ${name.toLowerCase()} stays ${pin.supported}.`,
  });
}

/**
 * Settings that cannot be carried to another server connection: transaction_* apply to the
 * current transaction only, and `RESET seed` is an error. Their SET resets the connection;
 * as startup parameters they are refused.
 */
const NOT_CARRIED = new Set(['transaction_isolation', 'transaction_read_only', 'transaction_deferrable', 'seed']);

export function isNotCarried(name: string): boolean {
  return NOT_CARRIED.has(name.toLowerCase());
}

export function isPinned(name: string): boolean {
  return PINNED.has(name.toLowerCase());
}

/** What every server connection is started with (startup packet) and must keep. */
export const SERVER_LEXICAL: Readonly<Record<string, string>> = Object.freeze({
  client_encoding: 'UTF8',
  standard_conforming_strings: 'on',
  backslash_quote: 'safe_encoding',
});

/**
 * A server that reports (ParameterStatus) a pinned setting with another value than
 * scopegate's no longer reads text as scopegate checked it: the error that ends the
 * connection, or null when the value is the pinned one or the parameter is not pinned.
 */
export function lexicalBreach(name: string, value: string): SqlError | null {
  const want = SERVER_LEXICAL[name];
  if (want === undefined || PINNED.get(name)!.allowed.test(value)) return null;
  return new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, `server connection reports ${name} = "${value}"; scopegate needs "${want}" to read statements as the server does, so the connection is closed`, {
    severity: 'FATAL',
    hint: `Something on the server changed ${name} (a function calling set_config, ALTER ROLE/DATABASE ... SET, a login event trigger). Remove it.`,
  });
}
