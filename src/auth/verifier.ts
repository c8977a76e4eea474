/**
 * TokenVerifier: turns an access token into an Identity, or throws AuthError (28000) naming
 * the failed check. JWTs are verified locally with jose; opaque tokens go to RFC 7662
 * introspection when configured. Successful results are cached by sha256(token) until the
 * token expires, so a reconnect with the same token costs a hash and a map lookup.
 */
import { createHash } from 'node:crypto';
import { decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import type { Logger } from 'pino';
import type { AuthConfig } from './config.js';
import { ExpiringLru } from './cache.js';
import { AuthError, type AuthCheck } from './errors.js';
import type { Identity } from './identity.js';
import { introspectToken } from './introspection.js';
import { createKeyProvider, type KeyProvider } from './keys.js';
import { extractScopes } from './scopes.js';

export type { Identity } from './identity.js';

/** Longest token accepted (PostgreSQL caps SASL messages at 65535 bytes too). */
export const MAX_TOKEN_LENGTH = 16 * 1024;
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export interface VerifyContext {
  /** Client address, for logs. */
  address?: string;
  user?: string;
}

export interface VerifierStats {
  /** JWT signature verifications actually run (cache misses that reached the crypto). */
  signatureChecks: number;
  /** Introspection requests sent. */
  introspections: number;
  cacheHits: number;
  failures: number;
}

export function sha256Hex(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

function joseCode(err: unknown): string | undefined {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

/** Maps a jose error to the name of the failed check. */
function checkForJoseError(err: unknown): AuthCheck {
  if (err instanceof AuthError) return err.check;
  switch (joseCode(err)) {
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED': return 'bad signature';
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS': return 'unknown signing key';
    case 'ERR_JWT_EXPIRED': return 'token expired';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED': return 'algorithm not allowed';
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID': return 'signing keys unavailable';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': {
      const claim = (err as { claim?: unknown }).claim;
      const reason = (err as { reason?: unknown }).reason;
      if (claim === 'iss') return 'wrong issuer';
      if (claim === 'aud') return 'wrong audience';
      if (claim === 'nbf') return 'token not yet valid';
      if (claim === 'exp' && reason === 'missing') return 'missing expiry';
      if (claim === 'exp') return 'token expired';
      if (claim === 'iat') return 'token issued in the future';
      return 'malformed token';
    }
    default:
      // TypeError from a key/alg mismatch (e.g. an HMAC alg against a public key).
      if (err instanceof TypeError) return 'algorithm not allowed';
      return 'malformed token';
  }
}

export interface TokenVerifierOptions {
  logger?: Logger;
  /** Replaces the key source built from the config (tests, custom key stores). */
  keyProvider?: KeyProvider;
  now?: () => number;
}

export class TokenVerifier {
  readonly stats: VerifierStats = { signatureChecks: 0, introspections: 0, cacheHits: 0, failures: 0 };
  private readonly cache: ExpiringLru<Identity>;
  private readonly keys: KeyProvider | null;
  private readonly logger: Logger | undefined;
  private readonly now: () => number;
  private readonly algorithms: string[];
  /** Verifications in progress, so concurrent logins with one token share one check. */
  private readonly inflight = new Map<string, Promise<Identity>>();

  constructor(readonly cfg: AuthConfig, opts: TokenVerifierOptions = {}) {
    if (cfg.method !== 'oauth') throw new Error('TokenVerifier needs auth.method oauth');
    this.cache = new ExpiringLru<Identity>(cfg.tokenCacheSize);
    this.keys = opts.keyProvider ?? (cfg.keySource ? createKeyProvider(cfg) : null);
    this.algorithms = this.keys ? cfg.algorithms.filter((a) => this.keys!.algorithms.includes(a)) : [];
    this.logger = opts.logger;
    this.now = opts.now ?? Date.now;
  }

  /** Keys currently in the verified-token cache (sha256 hex digests, never tokens). */
  cacheKeys(): string[] {
    return this.cache.keys();
  }

  /** Number of HTTP fetches of key material so far (JWKS/discovery). */
  get keyFetches(): number {
    return this.keys?.fetches ?? 0;
  }

  clearCache(): void {
    this.cache.clear();
  }

  async verify(token: string, ctx: VerifyContext = {}): Promise<Identity> {
    const started = this.now();
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
      throw this.fail(new AuthError('malformed token', { detail: 'The token is empty or too long.' }), null, ctx);
    }
    const hash = sha256Hex(token);
    const hit = this.cache.get(hash, started);
    if (hit !== undefined) {
      this.stats.cacheHits++;
      return hit;
    }
    const running = this.inflight.get(hash);
    if (running !== undefined) return running;
    const p = this.verifyUncached(token, hash, started, ctx);
    this.inflight.set(hash, p);
    try {
      return await p;
    } finally {
      this.inflight.delete(hash);
    }
  }

  private async verifyUncached(token: string, hash: string, started: number, ctx: VerifyContext): Promise<Identity> {
    try {
      const identity = JWT_SHAPE.test(token) ? await this.verifyJwt(token, hash) : await this.verifyOpaque(token, hash);
      // JWTs: until exp. Introspection answers: until exp, but no longer than cache_ttl.
      const ttlCap = identity.via === 'introspection' ? started + (this.cfg.introspection?.cacheTtlMs ?? 0) : Number.POSITIVE_INFINITY;
      const expiry = Math.min(identity.expiresAt ?? Number.POSITIVE_INFINITY, ttlCap);
      if (expiry > started) this.cache.set(hash, identity, expiry);
      this.logger?.debug({ sub: identity.sub, via: identity.via, token: hash.slice(0, 16), address: ctx.address }, 'token accepted');
      return identity;
    } catch (err) {
      const authErr = err instanceof AuthError ? err : new AuthError(checkForJoseError(err));
      throw this.fail(authErr, hash, ctx, err);
    }
  }

  private fail(err: AuthError, hash: string | null, ctx: VerifyContext, cause?: unknown): AuthError {
    this.stats.failures++;
    this.logger?.warn(
      {
        check: err.check,
        token: hash?.slice(0, 16),
        address: ctx.address,
        user: ctx.user,
        ...(cause !== undefined && !(cause instanceof AuthError) ? { reason: cause instanceof Error ? cause.message : String(cause) } : {}),
        ...(err.detail ? { detail: err.detail } : {}),
      },
      `token rejected: ${err.check}`,
    );
    return err;
  }

  private async verifyJwt(token: string, hash: string): Promise<Identity> {
    if (this.keys === null) throw new AuthError('malformed token', { detail: 'JWTs are not accepted: no key source is configured.' });
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new AuthError('malformed token', { detail: 'The JWT header cannot be decoded.' });
    }
    if (typeof alg !== 'string' || !this.algorithms.includes(alg)) {
      throw new AuthError('algorithm not allowed', { detail: `Accepted algorithms: ${this.algorithms.join(', ')}.` });
    }
    this.stats.signatureChecks++;
    const { payload } = await jwtVerify(token, this.keys.getKey, {
      issuer: this.cfg.issuer ?? undefined,
      audience: this.cfg.audience,
      algorithms: this.algorithms,
      clockTolerance: this.cfg.clockToleranceMs / 1000,
      requiredClaims: ['exp'],
      currentDate: new Date(this.now()),
    });
    const nowSec = this.now() / 1000;
    if (typeof payload.iat === 'number' && payload.iat > nowSec + this.cfg.clockToleranceMs / 1000) {
      throw new AuthError('token issued in the future');
    }
    return this.identityFrom(payload, hash, 'jwt');
  }

  private async verifyOpaque(token: string, hash: string): Promise<Identity> {
    const intro = this.cfg.introspection;
    if (intro === null) throw new AuthError('malformed token', { detail: 'The token is not a JWT and introspection is not configured.' });
    this.stats.introspections++;
    const body = await introspectToken(intro, token, this.cfg.httpTimeoutMs);
    if (body.active !== true) throw new AuthError('token inactive');
    if (body.iss !== undefined && body.iss !== this.cfg.issuer) throw new AuthError('wrong issuer');
    if (body.aud !== undefined) {
      const auds = Array.isArray(body.aud) ? body.aud : [body.aud];
      if (!auds.some((a) => typeof a === 'string' && this.cfg.audience.includes(a))) throw new AuthError('wrong audience');
    }
    const tol = this.cfg.clockToleranceMs;
    const now = this.now();
    if (body.exp !== undefined) {
      if (typeof body.exp !== 'number') throw new AuthError('malformed token', { detail: 'exp is not a number' });
      if (now > body.exp * 1000 + tol) throw new AuthError('token expired');
    }
    if (body.nbf !== undefined) {
      if (typeof body.nbf !== 'number') throw new AuthError('malformed token', { detail: 'nbf is not a number' });
      if (now < body.nbf * 1000 - tol) throw new AuthError('token not yet valid');
    }
    return this.identityFrom(body, hash, 'introspection');
  }

  private identityFrom(claims: JWTPayload | Record<string, unknown>, hash: string, via: Identity['via']): Identity {
    const c = claims as Record<string, unknown>;
    const sub = typeof c.sub === 'string' && c.sub !== '' ? c.sub : typeof c.client_id === 'string' && c.client_id !== '' ? c.client_id : null;
    if (sub === null) throw new AuthError('missing subject', { detail: 'The token has neither sub nor client_id.' });
    const scopes = extractScopes(c, this.cfg.scopeClaim);
    const expiresAt = typeof c.exp === 'number' ? c.exp * 1000 : null;
    // fromEntries, not a spread: V8 gives a frozen spread copy a hidden class of its own
    // (~300 bytes per token held), while objects built property by property share one.
    // Like the spread it defines own properties, so a "__proto__" claim stays a claim.
    // The issuer (the same text in every token) is kept once, as the config's string.
    const issuer = this.cfg.issuer;
    const copy = Object.freeze(Object.fromEntries(Object.entries(c).map(([k, v]) => [k, k === 'iss' && v === issuer ? issuer : v])));
    return Object.freeze({ sub, scopes: Object.freeze([...scopes]) as string[], claims: copy, expiresAt, tokenHash: hash, via });
  }
}
