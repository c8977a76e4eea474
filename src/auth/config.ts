/**
 * The `auth` section of the scopegate config: strict validation into an AuthConfig.
 * Every problem throws ConfigError('auth.<key>', problem).
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import { parseCidr, type Cidr } from './net.js';
import { algorithmsForKey } from './algorithms.js';

export type Mechanism = 'password' | 'oauthbearer';
export const MECHANISMS: readonly Mechanism[] = ['password', 'oauthbearer'];

export const SYMMETRIC_ALGS = ['HS256', 'HS384', 'HS512'] as const;
export const ASYMMETRIC_ALGS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
] as const;
const DEFAULT_ASYMMETRIC_ALGS = ['RS256', 'PS256', 'ES256', 'EdDSA', 'Ed25519'];

export interface JwkSetJson {
  keys: Array<Record<string, unknown>>;
}

/** Where the token-signing keys come from. Exactly one source is active. */
export type KeySourceConfig =
  | { kind: 'discovery' }
  | { kind: 'jwks_url'; url: string }
  | { kind: 'jwks_file'; path: string; jwks: JwkSetJson }
  | { kind: 'public_key_file'; path: string; pem: string }
  | { kind: 'secret'; secret: Uint8Array }
  | { kind: 'dev_private_key_file'; path: string; pem: string };

export interface IntrospectionConfig {
  url: string;
  clientId: string;
  clientSecret: string;
  /** Upper bound for caching an active introspection answer (the token's exp bounds it too). */
  cacheTtlMs: number;
}

export interface MechanismRule {
  /** null = any */
  databases: string[] | null;
  users: string[] | null;
  addresses: Cidr[] | null;
  mechanism: Mechanism;
}

export interface FailureDelayConfig {
  /** Failures tolerated within `windowMs` before answers are delayed. */
  after: number;
  delayMs: number;
  maxDelayMs: number;
  windowMs: number;
  /** Bound on the number of client addresses remembered. */
  maxClients: number;
}

export interface AuthConfig {
  method: 'oauth' | 'trust';
  mechanisms: Mechanism[];
  issuer: string | null;
  audience: string[];
  keySource: KeySourceConfig | null;
  introspection: IntrospectionConfig | null;
  algorithms: string[];
  scopeClaim: string;
  userClaim: string | null;
  clockToleranceMs: number;
  allowInsecure: boolean;
  rules: MechanismRule[];
  failureDelay: FailureDelayConfig;
  /** Scope sent to OAUTHBEARER clients in the failure/discovery answer ('' = omitted). */
  oauthbearerScope: string;
  tokenCacheSize: number;
  jwksCacheMaxAgeMs: number;
  jwksCooldownMs: number;
  httpTimeoutMs: number;
  /** Directory relative paths were resolved against. */
  baseDir: string;
}

const TOP_KEYS = new Set([
  'method', 'mechanisms', 'issuer', 'audience', 'jwks_url', 'jwks_file', 'public_key_file', 'secret',
  'dev_private_key_file', 'introspection', 'algorithms', 'scope_claim', 'user_claim', 'clock_tolerance',
  'allow_insecure', 'rules', 'failure_delay', 'oauthbearer_scope', 'token_cache_size', 'jwks_cache_max_age',
  'jwks_cooldown', 'http_timeout',
]);
const INTROSPECTION_KEYS = new Set(['url', 'client_id', 'client_secret', 'cache_ttl']);
const RULE_KEYS = new Set(['database', 'user', 'address', 'mechanism']);
const FAILURE_KEYS = new Set(['after', 'delay', 'max_delay', 'window', 'max_clients']);

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(obj: Obj, allowed: Set<string>, prefix: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.has(k)) throw new ConfigError(`${prefix}.${k}`, 'unknown key');
  }
}

function str(obj: Obj, key: string, path: string): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new ConfigError(path, `must be a string, got ${typeName(v)}`);
  if (v.trim() === '') throw new ConfigError(path, 'must not be empty');
  return v;
}

function bool(obj: Obj, key: string, path: string, dflt: boolean): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw new ConfigError(path, `must be true or false, got ${typeName(v)}`);
  return v;
}

function int(obj: Obj, key: string, path: string, dflt: number, min: number): number {
  const v = obj[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new ConfigError(path, `must be an integer, got ${typeName(v)}`);
  if (v < min) throw new ConfigError(path, `must be at least ${min}`);
  return v;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'a mapping' : `${typeof v} ${JSON.stringify(v)}`;
}

function stringList(v: unknown, path: string): string[] {
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length === 0) throw new ConfigError(path, 'must be a string or a non-empty list of strings');
  return list.map((item, i) => {
    if (typeof item !== 'string' || item === '') throw new ConfigError(`${path}[${i}]`, 'must be a non-empty string');
    return item;
  });
}

const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `500ms`, `30s`, `5m`, `1h`, `1d`, or a number of seconds, into milliseconds. */
export function parseDuration(v: unknown, path: string): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) throw new ConfigError(path, 'must be a non-negative number of seconds');
    return Math.round(v * 1000);
  }
  if (typeof v !== 'string') throw new ConfigError(path, `must be a duration like 30s, 500ms, 1h, got ${typeName(v)}`);
  const m = DURATION_RE.exec(v.trim());
  if (!m) throw new ConfigError(path, `must be a duration like 30s, 500ms, 1h, got ${JSON.stringify(v)}`);
  return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 's']!);
}

function duration(obj: Obj, key: string, path: string, dfltMs: number): number {
  const v = obj[key];
  if (v === undefined || v === null) return dfltMs;
  return parseDuration(v, path);
}

function resolvePath(baseDir: string, p: string): string {
  return isAbsolute(p) ? p : resolve(baseDir, p);
}

function readFileFor(path: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(path, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/**
 * Resolves a secret reference: `env:NAME` (environment variable) or `file:PATH` (file
 * contents, one trailing newline removed; relative to baseDir). Literal secrets are refused
 * so they never end up in a config file.
 */
export function resolveSecret(v: unknown, path: string, baseDir: string): string {
  if (typeof v !== 'string') throw new ConfigError(path, `must be env:NAME or file:PATH, got ${typeName(v)}`);
  if (v.startsWith('env:')) {
    const name = v.slice(4);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new ConfigError(path, `invalid environment variable name ${JSON.stringify(name)}`);
    const val = process.env[name];
    if (val === undefined || val === '') throw new ConfigError(path, `environment variable ${name} is not set`);
    return val;
  }
  if (v.startsWith('file:')) {
    const file = resolvePath(baseDir, v.slice(5));
    const val = readFileFor(path, file).replace(/\r?\n$/, '');
    if (val === '') throw new ConfigError(path, `${file} is empty`);
    return val;
  }
  throw new ConfigError(path, 'must be a reference env:NAME or file:PATH (literal secrets are not accepted)');
}

function httpUrl(v: string, path: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ConfigError(path, `must be an http(s) URL, got ${JSON.stringify(v)}`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new ConfigError(path, 'must be an http(s) URL');
  if (u.username || u.password) throw new ConfigError(path, 'must not contain credentials');
  return v;
}

function parseRule(raw: unknown, i: number, mechanisms: Mechanism[]): MechanismRule {
  const p = `auth.rules[${i}]`;
  if (!isObj(raw)) throw new ConfigError(p, 'must be a mapping like { database, user, address, mechanism }');
  checkKeys(raw, RULE_KEYS, p);
  const any = (list: string[]): boolean => list.some((x) => x === '*' || x === 'all');
  const names = (key: string): string[] | null => {
    const v = raw[key];
    if (v === undefined || v === null) return null;
    const list = stringList(v, `${p}.${key}`);
    return any(list) ? null : list;
  };
  let addresses: Cidr[] | null = null;
  if (raw.address !== undefined && raw.address !== null) {
    const list = stringList(raw.address, `${p}.address`);
    if (!any(list)) {
      addresses = list.map((a, j) => {
        const c = parseCidr(a);
        if (!c) throw new ConfigError(list.length === 1 && typeof raw.address === 'string' ? `${p}.address` : `${p}.address[${j}]`, `not an address or CIDR: ${JSON.stringify(a)}`);
        return c;
      });
    }
  }
  const mech = raw.mechanism;
  if (mech === undefined) throw new ConfigError(`${p}.mechanism`, 'is required (password or oauthbearer)');
  if (mech !== 'password' && mech !== 'oauthbearer') throw new ConfigError(`${p}.mechanism`, `must be password or oauthbearer, got ${typeName(mech)}`);
  if (!mechanisms.includes(mech)) throw new ConfigError(`${p}.mechanism`, `${mech} is not listed in auth.mechanisms`);
  return { databases: names('database'), users: names('user'), addresses, mechanism: mech };
}

function claimPath(v: string, path: string): string {
  if (v.split('.').some((seg) => seg === '')) throw new ConfigError(path, 'must be a claim name or dotted path like realm_access.roles');
  return v;
}

/** Validates the raw `auth` mapping. `baseDir` anchors relative file paths. */
export function parseAuthConfig(raw: unknown, baseDir: string): AuthConfig {
  if (!isObj(raw)) throw new ConfigError('auth', `must be a mapping, got ${typeName(raw)}`);
  checkKeys(raw, TOP_KEYS, 'auth');

  const method = raw.method;
  if (method === undefined) throw new ConfigError('auth.method', 'is required (oauth or trust)');
  if (method !== 'oauth' && method !== 'trust') throw new ConfigError('auth.method', `must be oauth or trust, got ${typeName(method)}`);

  let mechanisms: Mechanism[] = ['password', 'oauthbearer'];
  if (raw.mechanisms !== undefined && raw.mechanisms !== null) {
    const list = stringList(raw.mechanisms, 'auth.mechanisms');
    mechanisms = list.map((m, i) => {
      if (m !== 'password' && m !== 'oauthbearer') throw new ConfigError(`auth.mechanisms[${i}]`, `must be password or oauthbearer, got ${JSON.stringify(m)}`);
      return m;
    });
    if (new Set(mechanisms).size !== mechanisms.length) throw new ConfigError('auth.mechanisms', 'lists a mechanism twice');
  }

  const issuerRaw = str(raw, 'issuer', 'auth.issuer');
  const issuer = issuerRaw === undefined ? null : httpUrl(issuerRaw, 'auth.issuer');
  const audience = raw.audience === undefined || raw.audience === null ? [] : stringList(raw.audience, 'auth.audience');

  // Key source: at most one; discovery from the issuer when none is given.
  const sources = ['jwks_url', 'jwks_file', 'public_key_file', 'secret', 'dev_private_key_file'].filter(
    (k) => raw[k] !== undefined && raw[k] !== null,
  );
  if (sources.length > 1) throw new ConfigError(`auth.${sources[1]}`, `conflicts with auth.${sources[0]}: configure one key source`);
  let keySource: KeySourceConfig | null = null;
  const src = sources[0];
  if (src === 'jwks_url') {
    keySource = { kind: 'jwks_url', url: httpUrl(str(raw, 'jwks_url', 'auth.jwks_url')!, 'auth.jwks_url') };
  } else if (src === 'jwks_file') {
    const file = resolvePath(baseDir, str(raw, 'jwks_file', 'auth.jwks_file')!);
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileFor('auth.jwks_file', file));
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError('auth.jwks_file', `${file} is not valid JSON`);
    }
    if (!isObj(parsed) || !Array.isArray(parsed.keys) || !parsed.keys.every(isObj)) {
      throw new ConfigError('auth.jwks_file', `${file} is not a JWK Set ({"keys": [...]})`);
    }
    const keys = parsed.keys as Array<Record<string, unknown>>;
    if (keys.some((k) => 'd' in k || k.kty === 'oct')) throw new ConfigError('auth.jwks_file', 'must hold public keys only (found a private or symmetric key)');
    keySource = { kind: 'jwks_file', path: file, jwks: { keys } };
  } else if (src === 'public_key_file' || src === 'dev_private_key_file') {
    const file = resolvePath(baseDir, str(raw, src, `auth.${src}`)!);
    const pem = readFileFor(`auth.${src}`, file);
    const wantPrivate = src === 'dev_private_key_file';
    if (!/-----BEGIN (PUBLIC KEY|PRIVATE KEY)-----/.test(pem)) {
      throw new ConfigError(`auth.${src}`, `${file} must be a PEM ${wantPrivate ? 'PKCS#8 private' : 'SPKI public'} key`);
    }
    if (wantPrivate !== pem.includes('PRIVATE KEY')) {
      throw new ConfigError(`auth.${src}`, `${file} must hold a ${wantPrivate ? 'private' : 'public'} key`);
    }
    let key: KeyObject;
    try {
      key = wantPrivate ? createPublicKey(createPrivateKey(pem)) : createPublicKey(pem);
    } catch (err) {
      throw new ConfigError(`auth.${src}`, `${file} is not a usable key: ${(err as Error).message}`);
    }
    if (algorithmsForKey(key).length === 0) throw new ConfigError(`auth.${src}`, `${file}: unsupported key type ${key.asymmetricKeyType ?? '?'} (use RSA, EC P-256/384/521 or Ed25519)`);
    keySource = src === 'public_key_file' ? { kind: 'public_key_file', path: file, pem } : { kind: 'dev_private_key_file', path: file, pem };
  } else if (src === 'secret') {
    const secret = new TextEncoder().encode(resolveSecret(raw.secret, 'auth.secret', baseDir));
    if (secret.length < 32) throw new ConfigError('auth.secret', 'must be at least 32 bytes for HS256');
    keySource = { kind: 'secret', secret };
  }

  let introspection: IntrospectionConfig | null = null;
  if (raw.introspection !== undefined && raw.introspection !== null) {
    const ri = raw.introspection;
    if (!isObj(ri)) throw new ConfigError('auth.introspection', 'must be a mapping { url, client_id, client_secret }');
    checkKeys(ri, INTROSPECTION_KEYS, 'auth.introspection');
    const url = str(ri, 'url', 'auth.introspection.url');
    if (url === undefined) throw new ConfigError('auth.introspection.url', 'is required');
    const clientId = str(ri, 'client_id', 'auth.introspection.client_id');
    if (clientId === undefined) throw new ConfigError('auth.introspection.client_id', 'is required');
    if (ri.client_secret === undefined || ri.client_secret === null) throw new ConfigError('auth.introspection.client_secret', 'is required');
    introspection = {
      url: httpUrl(url, 'auth.introspection.url'),
      clientId,
      clientSecret: resolveSecret(ri.client_secret, 'auth.introspection.client_secret', baseDir),
      cacheTtlMs: duration(ri, 'cache_ttl', 'auth.introspection.cache_ttl', 300_000),
    };
  }

  if (method === 'oauth') {
    if (issuer === null) throw new ConfigError('auth.issuer', 'is required for method oauth');
    if (audience.length === 0) throw new ConfigError('auth.audience', 'is required for method oauth');
    if (keySource === null) keySource = { kind: 'discovery' };
  }

  const symmetric = keySource?.kind === 'secret';
  let algorithms: string[];
  if (raw.algorithms !== undefined && raw.algorithms !== null) {
    algorithms = stringList(raw.algorithms, 'auth.algorithms');
    algorithms.forEach((a, i) => {
      const p = `auth.algorithms[${i}]`;
      if (a.toLowerCase() === 'none') throw new ConfigError(p, 'alg none is never allowed');
      const isSym = (SYMMETRIC_ALGS as readonly string[]).includes(a);
      const isAsym = (ASYMMETRIC_ALGS as readonly string[]).includes(a);
      if (!isSym && !isAsym) throw new ConfigError(p, `unknown JWS algorithm ${JSON.stringify(a)}`);
      if (keySource !== null && symmetric && !isSym) throw new ConfigError(p, `${a} cannot be used with auth.secret (HS256/HS384/HS512 only)`);
      if (keySource !== null && !symmetric && isSym) throw new ConfigError(p, `${a} needs auth.secret; with public keys only asymmetric algorithms are allowed`);
    });
  } else {
    algorithms = symmetric ? ['HS256'] : [...DEFAULT_ASYMMETRIC_ALGS];
  }

  if (keySource !== null && (keySource.kind === 'public_key_file' || keySource.kind === 'dev_private_key_file')) {
    const key = keySource.kind === 'public_key_file' ? createPublicKey(keySource.pem) : createPublicKey(createPrivateKey(keySource.pem));
    const usable = algorithmsForKey(key).filter((a) => algorithms.includes(a));
    if (usable.length === 0) throw new ConfigError('auth.algorithms', `none of [${algorithms.join(', ')}] fits the ${key.asymmetricKeyType ?? ''} key in auth.${keySource.kind}`);
  }

  const rules: MechanismRule[] = [];
  if (raw.rules !== undefined && raw.rules !== null) {
    if (!Array.isArray(raw.rules)) throw new ConfigError('auth.rules', 'must be a list of rules');
    raw.rules.forEach((r, i) => rules.push(parseRule(r, i, mechanisms)));
  }

  let failureDelay: FailureDelayConfig = { after: 3, delayMs: 1000, maxDelayMs: 10_000, windowMs: 60_000, maxClients: 10_000 };
  if (raw.failure_delay !== undefined && raw.failure_delay !== null) {
    const f = raw.failure_delay;
    if (!isObj(f)) throw new ConfigError('auth.failure_delay', 'must be a mapping { after, delay, max_delay, window }');
    checkKeys(f, FAILURE_KEYS, 'auth.failure_delay');
    failureDelay = {
      after: int(f, 'after', 'auth.failure_delay.after', failureDelay.after, 0),
      delayMs: duration(f, 'delay', 'auth.failure_delay.delay', failureDelay.delayMs),
      maxDelayMs: duration(f, 'max_delay', 'auth.failure_delay.max_delay', failureDelay.maxDelayMs),
      windowMs: duration(f, 'window', 'auth.failure_delay.window', failureDelay.windowMs),
      maxClients: int(f, 'max_clients', 'auth.failure_delay.max_clients', failureDelay.maxClients, 1),
    };
    if (failureDelay.maxDelayMs < failureDelay.delayMs) throw new ConfigError('auth.failure_delay.max_delay', 'must not be smaller than delay');
  }

  const scopeClaim = claimPath(str(raw, 'scope_claim', 'auth.scope_claim') ?? 'scope', 'auth.scope_claim');
  const userClaimRaw = str(raw, 'user_claim', 'auth.user_claim');
  const oauthbearerScope = raw.oauthbearer_scope === undefined || raw.oauthbearer_scope === null
    ? ''
    : stringList(raw.oauthbearer_scope, 'auth.oauthbearer_scope').join(' ');
  if (/[\x00-\x20"\\\x7f]/.test(oauthbearerScope.replace(/ /g, ''))) throw new ConfigError('auth.oauthbearer_scope', 'contains characters not allowed in a scope');

  return {
    method,
    mechanisms,
    issuer,
    audience,
    keySource,
    introspection,
    algorithms,
    scopeClaim,
    userClaim: userClaimRaw === undefined ? null : claimPath(userClaimRaw, 'auth.user_claim'),
    clockToleranceMs: duration(raw, 'clock_tolerance', 'auth.clock_tolerance', 30_000),
    allowInsecure: bool(raw, 'allow_insecure', 'auth.allow_insecure', false),
    rules,
    failureDelay,
    oauthbearerScope,
    tokenCacheSize: int(raw, 'token_cache_size', 'auth.token_cache_size', 10_000, 0),
    jwksCacheMaxAgeMs: duration(raw, 'jwks_cache_max_age', 'auth.jwks_cache_max_age', 600_000),
    jwksCooldownMs: duration(raw, 'jwks_cooldown', 'auth.jwks_cooldown', 30_000),
    httpTimeoutMs: duration(raw, 'http_timeout', 'auth.http_timeout', 5_000),
    baseDir,
  };
}
