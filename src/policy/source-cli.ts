/** `scopegate policy push|show` and `scopegate revoke`: writing to and reading the central policy source. */
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import { ConfigError } from '../errors.js';
import { parseDuration } from '../auth/config.js';
import { parsePolicyText } from './schema.js';
import { checkSchemaName, splitSourceUrl, SOURCE_SCHEMA_DEFAULT } from './source-config.js';
import { connectSource, ensureSourceSchema, insertRevocation, latestVersion, pushVersion } from './source.js';

export interface SourceIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

const defaultIo: SourceIo = {
  out: (l) => process.stdout.write(l + '\n'),
  err: (l) => process.stderr.write(l + '\n'),
};

const POLICY_USAGE = `usage: scopegate policy push --source URL [--schema S] FILE
       scopegate policy show --source URL [--schema S]
  URL defaults to $SCOPEGATE_POLICY_SOURCE; the password comes from the URL or $PGPASSWORD`;
const REVOKE_USAGE = `usage: scopegate revoke --source URL [--schema S] (--jti ID | --sub SUBJECT) [--until TIME]
  TIME: an ISO 8601 time (2026-12-31T00:00:00Z) or a duration from now (1h, 30m); default: for good`;

interface Parsed {
  flags: Map<string, string>;
  rest: string[];
}

/** `--name value` / `--name=value` for the known flags; anything else starting with -- is an error. */
function parseArgs(args: readonly string[], known: readonly string[]): Parsed | string {
  const flags = new Map<string, string>();
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--')) { rest.push(a); continue; }
    const eq = a.indexOf('=');
    const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
    if (!known.includes(name)) return `unknown option --${name}`;
    const value = eq < 0 ? args[++i] : a.slice(eq + 1);
    if (value === undefined || value === '') return `--${name} needs a value`;
    flags.set(name, value);
  }
  return { flags, rest };
}

async function openSource(flags: Map<string, string>): Promise<{ client: pg.Client; schema: string }> {
  const url = flags.get('source') ?? process.env.SCOPEGATE_POLICY_SOURCE;
  if (url === undefined || url === '') throw new ConfigError('--source', 'missing (or set SCOPEGATE_POLICY_SOURCE)');
  const split = splitSourceUrl(url, '--source');
  const schema = checkSchemaName(flags.get('schema') ?? SOURCE_SCHEMA_DEFAULT, '--schema');
  let client: pg.Client;
  try {
    client = await connectSource({ url: split.url, password: split.password ?? process.env.PGPASSWORD ?? null }, 'scopegate policy cli');
  } catch (err) {
    throw new SourceFailure(`cannot connect to ${split.url}: ${(err as Error).message}`);
  }
  try {
    await ensureSourceSchema(client, schema);
  } catch (err) {
    await client.end().catch(() => undefined);
    throw new SourceFailure(`cannot create ${schema}'s tables: ${(err as Error).message}`);
  }
  return { client, schema };
}

/** The source could not be reached or written (exit 1, unlike a usage or policy error). */
class SourceFailure extends Error {}

async function withSource(cmd: string, io: SourceIo, flags: Map<string, string>, fn: (c: pg.Client, schema: string) => Promise<number>): Promise<number> {
  let opened: { client: pg.Client; schema: string };
  try {
    opened = await openSource(flags);
  } catch (err) {
    io.err(`scopegate ${cmd}: ${(err as Error).message}`);
    return err instanceof ConfigError ? 2 : 1;
  }
  try {
    return await fn(opened.client, opened.schema);
  } catch (err) {
    io.err(`scopegate ${cmd}: ${(err as Error).message}`);
    return 1;
  } finally {
    await opened.client.end().catch(() => undefined);
  }
}

/** `scopegate policy push|show ...`; `args` excludes the word "policy". Exit 0 done, 1 source failure, 2 usage or invalid policy. */
export async function runPolicy(args: string[], io: SourceIo = defaultIo): Promise<number> {
  const [sub, ...rest] = args;
  const parsed = parseArgs(rest, ['source', 'schema']);
  if (typeof parsed === 'string') { io.err(`scopegate policy: ${parsed}`); io.err(POLICY_USAGE); return 2; }
  if (sub === 'push') {
    const file = parsed.rest[0];
    if (file === undefined || parsed.rest.length !== 1) { io.err(POLICY_USAGE); return 2; }
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
      // The same validation as a policy file, in full, before anything is stored.
      parsePolicyText(text);
    } catch (err) {
      const why = err instanceof ConfigError ? err.message : `cannot read: ${(err as Error).message}`;
      io.err(`scopegate policy push: invalid policy ${file}: ${why}`);
      return 2;
    }
    return withSource('policy push', io, parsed.flags, async (c, schema) => {
      const version = await pushVersion(c, schema, text);
      io.out(`pushed ${file} as version ${version}`);
      return 0;
    });
  }
  if (sub === 'show') {
    if (parsed.rest.length !== 0) { io.err(POLICY_USAGE); return 2; }
    return withSource('policy show', io, parsed.flags, async (c, schema) => {
      const latest = await latestVersion(c, schema);
      if (latest === null) { io.err(`scopegate policy show: no policy in ${schema}.policy_versions yet`); return 1; }
      io.out(`# version ${latest.version}, pushed ${latest.created_at.toISOString()} by ${latest.created_by}`);
      io.out(latest.document.replace(/\n$/, ''));
      return 0;
    });
  }
  io.err(POLICY_USAGE);
  return 2;
}

/** `TIME`: an ISO 8601 time, or a duration from now. */
function parseUntil(v: string, now: number): Date | null {
  if (/^\d+(\.\d+)?(ms|s|m|h|d)?$/.test(v)) {
    try {
      return new Date(now + parseDuration(v, '--until'));
    } catch {
      return null;
    }
  }
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : new Date(t);
}

/** `scopegate revoke ...`; `args` excludes the word "revoke". Exit 0 done, 1 source failure, 2 usage. */
export async function runRevoke(args: string[], io: SourceIo = defaultIo): Promise<number> {
  const parsed = parseArgs(args, ['source', 'schema', 'jti', 'sub', 'until']);
  if (typeof parsed === 'string') { io.err(`scopegate revoke: ${parsed}`); io.err(REVOKE_USAGE); return 2; }
  const jti = parsed.flags.get('jti') ?? null;
  const sub = parsed.flags.get('sub') ?? null;
  if ((jti === null) === (sub === null) || parsed.rest.length !== 0) { io.err('scopegate revoke: give exactly one of --jti and --sub'); io.err(REVOKE_USAGE); return 2; }
  const untilText = parsed.flags.get('until');
  const until = untilText === undefined ? null : parseUntil(untilText, Date.now());
  if (untilText !== undefined && until === null) { io.err(`scopegate revoke: --until: not a time or duration: ${JSON.stringify(untilText)}`); return 2; }
  return withSource('revoke', io, parsed.flags, async (c, schema) => {
    await insertRevocation(c, schema, { jti, sub, until });
    io.out(`revoked ${jti !== null ? `token jti ${jti}` : `subject ${sub}`}${until === null ? '' : ` until ${until.toISOString()}`}`);
    return 0;
  });
}
