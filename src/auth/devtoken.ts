/**
 * Development tokens: `scopegate token --scope "orders:read" --sub alice [--ttl 1h]
 * [--claim tenant=acme] [--config FILE]`. Signs with the development key of the config:
 * `auth.secret` (HS256) or `auth.dev_private_key_file` (RS256/ES256/EdDSA by key type).
 * The token's iss and aud come from the config, so the same config verifies it.
 */
import { createPrivateKey, createPublicKey, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { SignJWT, type JWTPayload } from 'jose';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';
import { parseAuthConfig, parseDuration, type AuthConfig } from './config.js';
import { signingAlgorithmFor } from './keys.js';

export interface DevTokenOptions {
  sub: string;
  /** Space-separated scopes. */
  scope: string;
  /** Lifetime in ms (default 1h). */
  ttlMs?: number;
  /** Extra claims; keys may be dotted paths (`org.tenant`). Registered claims cannot be overridden. */
  claims?: Record<string, unknown>;
  /** Clock for iat/exp (ms epoch). */
  now?: number;
}

export class DevKeyMissingError extends Error {
  constructor() {
    super('no development key configured: set auth.secret (HS256) or auth.dev_private_key_file');
    this.name = 'DevKeyMissingError';
  }
}

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const segs = path.split('.');
  let cur = obj;
  for (const seg of segs.slice(0, -1)) {
    const next = cur[seg];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) {
      const fresh: Record<string, unknown> = {};
      cur[seg] = fresh;
      cur = fresh;
    } else {
      cur = next as Record<string, unknown>;
    }
  }
  cur[segs[segs.length - 1]!] = value;
}

/** Whether `cfg` has a key that `mintDevToken` can sign with. */
export function hasDevKey(cfg: AuthConfig): boolean {
  return cfg.method === 'oauth' && (cfg.keySource?.kind === 'secret' || cfg.keySource?.kind === 'dev_private_key_file');
}

/** Mints a token that `new TokenVerifier(cfg)` accepts. Throws DevKeyMissingError without a dev key. */
export async function mintDevToken(cfg: AuthConfig, opts: DevTokenOptions): Promise<string> {
  const src = cfg.keySource;
  if (cfg.method !== 'oauth' || cfg.issuer === null || src === null) throw new DevKeyMissingError();
  let key: Uint8Array | ReturnType<typeof createPrivateKey>;
  let alg: string;
  if (src.kind === 'secret') {
    key = src.secret;
    alg = cfg.algorithms.find((a) => a.startsWith('HS')) ?? 'HS256';
  } else if (src.kind === 'dev_private_key_file') {
    key = createPrivateKey(src.pem);
    const a = signingAlgorithmFor(createPublicKey(key), cfg.algorithms);
    if (a === null) throw new Error('auth.algorithms has no algorithm for the development key');
    alg = a;
  } else {
    throw new DevKeyMissingError();
  }
  if (opts.sub === '') throw new Error('sub must not be empty');
  const nowSec = Math.floor((opts.now ?? Date.now()) / 1000);
  const ttlSec = Math.max(1, Math.round((opts.ttlMs ?? 3_600_000) / 1000));
  const payload: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(opts.claims ?? {})) setPath(payload, k, v);
  setPath(payload, cfg.scopeClaim, opts.scope.split(/\s+/).filter((s) => s !== '').join(' '));
  const registered: JWTPayload = {
    iss: cfg.issuer,
    aud: cfg.audience.length === 1 ? cfg.audience[0] : cfg.audience,
    sub: opts.sub,
    iat: nowSec,
    nbf: nowSec,
    exp: nowSec + ttlSec,
    jti: randomUUID(),
  };
  return new SignJWT({ ...payload, ...registered }).setProtectedHeader({ alg, typ: 'JWT' }).sign(key);
}

const TOKEN_USAGE = `usage: scopegate token --scope "orders:read orders:write" --sub alice [--ttl 1h] [--claim key=value ...] [--config FILE]
  Mints a development access token signed with auth.secret or auth.dev_private_key_file.
  --claim values are parsed as JSON when possible (numbers, true, ["a","b"]), else taken as text;
  keys may be dotted paths (org.tenant=acme).`;

function claimValue(v: string): unknown {
  try {
    return JSON.parse(v) as unknown;
  } catch {
    return v;
  }
}

/** Loads the `auth` section of a scopegate YAML config. */
export function loadAuthConfigFile(file: string): AuthConfig {
  const path = resolve(file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('(file)', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError('(yaml)', (err as Error).message.split('\n')[0] ?? 'invalid YAML');
  }
  const raw = typeof doc === 'object' && doc !== null ? (doc as Record<string, unknown>).auth : undefined;
  if (raw === undefined) throw new ConfigError('auth', `missing in ${path}`);
  return parseAuthConfig(raw, dirname(path));
}

export interface TokenIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
}

/** `scopegate token ...`: prints a development token on stdout. Returns the exit code. */
export async function runToken(args: string[], io: TokenIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        scope: { type: 'string' },
        sub: { type: 'string' },
        ttl: { type: 'string', default: '1h' },
        claim: { type: 'string', multiple: true },
        config: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    io.stderr.write(`scopegate token: ${(err as Error).message}\n${TOKEN_USAGE}\n`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(TOKEN_USAGE + '\n');
    return 0;
  }
  if (values.scope === undefined || values.sub === undefined) {
    io.stderr.write(`scopegate token: --scope and --sub are required\n${TOKEN_USAGE}\n`);
    return 2;
  }
  const claims: Record<string, unknown> = {};
  for (const c of values.claim ?? []) {
    const eq = c.indexOf('=');
    if (eq <= 0) {
      io.stderr.write(`scopegate token: --claim expects key=value, got ${JSON.stringify(c)}\n`);
      return 2;
    }
    claims[c.slice(0, eq)] = claimValue(c.slice(eq + 1));
  }
  const file = values.config ?? process.env.SCOPEGATE_CONFIG ?? 'config/scopegate.yaml';
  try {
    const ttlMs = parseDuration(values.ttl, '--ttl');
    const cfg = loadAuthConfigFile(file);
    const token = await mintDevToken(cfg, { sub: values.sub, scope: values.scope, ttlMs, claims });
    io.stdout.write(token + '\n');
    return 0;
  } catch (err) {
    const msg = err instanceof ConfigError ? `invalid config ${file}: ${err.message}` : (err as Error).message;
    io.stderr.write(`scopegate token: ${msg}\n`);
    return 1;
  }
}
