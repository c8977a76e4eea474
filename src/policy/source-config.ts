/** The `policy_source:` config section: where the central policy lives and how often to poll it. */
import { ConfigError } from '../errors.js';
import { parseDuration } from '../auth/config.js';

export interface PolicySourceConfig {
  /** The connection URL without its password (safe to log and show). */
  url: string;
  /** The password (from the URL, `password:` with env:/file:, or PGPASSWORD); null: none. */
  password: string | null;
  /** Schema holding policy_versions and revocations. */
  schema: string;
  /** Safety-net poll interval (ms), for a notification that was missed. */
  poll: number;
}

export const SOURCE_SCHEMA_DEFAULT = 'scopegate';
export const SOURCE_POLL_DEFAULT = 30_000;

/** Schema names are put into SQL: plain lower-case identifiers only. */
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Splits a postgres:// URL into the URL without password and the password. Throws ConfigError. */
export function splitSourceUrl(text: string, key: string): { url: string; password: string | null } {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new ConfigError(key, 'not a valid postgres:// URL');
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw new ConfigError(key, 'must start with postgres://');
  const password = u.password === '' ? null : decodeURIComponent(u.password);
  u.password = '';
  return { url: u.toString(), password };
}

export function checkSchemaName(v: unknown, key: string): string {
  if (typeof v !== 'string' || !SCHEMA_NAME.test(v)) throw new ConfigError(key, `expected a lower-case SQL identifier (${SCHEMA_NAME.source}), got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Parses `policy_source: { url, password, schema, poll }`. `secret` resolves env:/file:
 * indirections as elsewhere in the config.
 */
export function parsePolicySource(raw: unknown, secret: (v: string, key: string) => string): PolicySourceConfig {
  if (typeof raw === 'string') raw = { url: raw };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError('policy_source', 'expected { url, schema, poll }');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!['url', 'password', 'schema', 'poll'].includes(k)) throw new ConfigError(`policy_source.${k}`, 'unknown key (expected one of: url, password, schema, poll)');
  }
  if (typeof o.url !== 'string' || o.url === '') throw new ConfigError('policy_source.url', 'missing (postgres://user@host:port/dbname)');
  const split = splitSourceUrl(o.url, 'policy_source.url');
  let password = split.password;
  if (o.password !== undefined) {
    if (typeof o.password !== 'string' || o.password === '') throw new ConfigError('policy_source.password', 'expected a non-empty string (env:NAME or file:PATH)');
    password = secret(o.password, 'policy_source.password');
  }
  password ??= process.env.PGPASSWORD ?? null;
  const schema = o.schema === undefined ? SOURCE_SCHEMA_DEFAULT : checkSchemaName(o.schema, 'policy_source.schema');
  const poll = o.poll === undefined ? SOURCE_POLL_DEFAULT : parseDuration(o.poll, 'policy_source.poll');
  if (poll < 1_000) throw new ConfigError('policy_source.poll', 'must be at least 1s');
  return { url: split.url, password, schema, poll };
}
