/**
 * Signing-key sources for JWT verification: remote JWKS (with a cache that survives an
 * issuer outage), OIDC discovery, a JWKS file, a PEM public key, an HS secret, or the
 * public half of the development private key.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { createLocalJWKSet, type JSONWebKeySet, type JWSHeaderParameters, type FlattenedJWSInput } from 'jose';
import type { AuthConfig, KeySourceConfig } from './config.js';
import { AuthError } from './errors.js';
import { algorithmsForKey } from './algorithms.js';

export { algorithmsForKey };

type JoseKey = Awaited<ReturnType<ReturnType<typeof createLocalJWKSet>>>;
export type GetKey = (header: JWSHeaderParameters, token: FlattenedJWSInput) => Promise<JoseKey | KeyObject | Uint8Array>;

export interface KeyProvider {
  readonly kind: KeySourceConfig['kind'];
  /** Algorithms this source can verify at all (intersected with the config's allow-list). */
  readonly algorithms: string[];
  getKey: GetKey;
  /** Number of HTTP fetches of key material (JWKS + discovery), for tests and metrics. */
  readonly fetches: number;
}

function isJwkSet(v: unknown): v is JSONWebKeySet {
  return typeof v === 'object' && v !== null && Array.isArray((v as { keys?: unknown }).keys)
    && (v as { keys: unknown[] }).keys.every((k) => typeof k === 'object' && k !== null && !Array.isArray(k));
}

async function fetchJson(url: string, timeoutMs: number): Promise<unknown> {
  const res = await fetch(url, {
    headers: { accept: 'application/json, application/jwk-set+json' },
    redirect: 'error',
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new Error(`HTTP ${res.status} from ${url}`);
  }
  return res.json();
}

/**
 * A remote JWKS. Unlike jose's createRemoteJWKSet (which, once its cacheMaxAge has passed,
 * awaits a reload and fails every verification while the issuer is unreachable), this keeps
 * verifying with the last good key set when a refresh fails:
 * - first use loads the set (retried lazily, at most once per second, if the issuer is down);
 * - an unknown `kid` triggers a refresh unless one was attempted within `cooldownMs`;
 * - a set older than `maxAgeMs` is refreshed in the background (stale-while-revalidate);
 * - a failed refresh never discards the cached keys.
 */
export class RemoteJwks {
  private local: ReturnType<typeof createLocalJWKSet> | null = null;
  private fetchedAt = Number.NEGATIVE_INFINITY;
  private lastAttempt = Number.NEGATIVE_INFINITY;
  private pending: Promise<void> | null = null;
  private lastError: string | null = null;
  fetches = 0;

  constructor(
    readonly url: string,
    private readonly opts: { maxAgeMs: number; cooldownMs: number; timeoutMs: number },
  ) {}

  /** Fetches the key set now (concurrent callers share one request). */
  refresh(): Promise<void> {
    if (this.pending) return this.pending;
    this.lastAttempt = Date.now();
    this.fetches++;
    const p = (async () => {
      try {
        const json = await fetchJson(this.url, this.opts.timeoutMs);
        if (!isJwkSet(json)) throw new Error(`${this.url} did not return a JWK Set`);
        this.local = createLocalJWKSet(json);
        this.fetchedAt = Date.now();
        this.lastError = null;
      } catch (err) {
        this.lastError = err instanceof Error ? err.message : String(err);
        throw err;
      } finally {
        this.pending = null;
      }
    })();
    this.pending = p;
    return p;
  }

  get hasKeys(): boolean {
    return this.local !== null;
  }

  get error(): string | null {
    return this.lastError;
  }

  readonly getKey: GetKey = async (header, token) => {
    const now = Date.now();
    if (this.local === null) {
      if (this.pending === null && now - this.lastAttempt < Math.min(this.opts.cooldownMs, 1000)) {
        throw new AuthError('signing keys unavailable', { detail: 'the key set could not be fetched recently; retrying shortly' });
      }
      try {
        await this.refresh();
      } catch {
        throw new AuthError('signing keys unavailable', { detail: 'the issuer key set could not be fetched' });
      }
    } else if (now - this.fetchedAt > this.opts.maxAgeMs && this.pending === null && now - this.lastAttempt >= this.opts.cooldownMs) {
      this.refresh().catch(() => { /* keep the cached keys */ });
    }
    const local = this.local;
    if (local === null) throw new AuthError('signing keys unavailable');
    try {
      return await local(header, token);
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'ERR_JWKS_NO_MATCHING_KEY') throw err;
      if (Date.now() - this.lastAttempt < this.opts.cooldownMs && this.pending === null) throw err;
      try {
        await this.refresh();
      } catch {
        throw err; // issuer unreachable: the kid stays unknown
      }
      return this.local!(header, token);
    }
  };
}

/** Resolves `<issuer>/.well-known/openid-configuration` (then RFC 8414's oauth-authorization-server) to the jwks_uri. */
export class DiscoveryKeys {
  private remote: RemoteJwks | null = null;
  private pending: Promise<RemoteJwks> | null = null;
  private lastAttempt = Number.NEGATIVE_INFINITY;
  private discoveryFetches = 0;

  constructor(
    readonly issuer: string,
    private readonly opts: { maxAgeMs: number; cooldownMs: number; timeoutMs: number },
  ) {}

  get fetches(): number {
    return this.discoveryFetches + (this.remote?.fetches ?? 0);
  }

  get jwksUri(): string | null {
    return this.remote?.url ?? null;
  }

  private discover(): Promise<RemoteJwks> {
    if (this.pending) return this.pending;
    this.lastAttempt = Date.now();
    const base = this.issuer.replace(/\/+$/, '');
    const p = (async () => {
      try {
        let doc: unknown;
        try {
          this.discoveryFetches++;
          doc = await fetchJson(`${base}/.well-known/openid-configuration`, this.opts.timeoutMs);
        } catch (err) {
          if (!(err instanceof Error && err.message.startsWith('HTTP 404'))) throw err;
          this.discoveryFetches++;
          doc = await fetchJson(`${base}/.well-known/oauth-authorization-server`, this.opts.timeoutMs);
        }
        const d = doc as { issuer?: unknown; jwks_uri?: unknown };
        if (typeof d !== 'object' || d === null || typeof d.jwks_uri !== 'string') throw new Error('discovery document has no jwks_uri');
        if (d.issuer !== this.issuer) throw new Error(`discovery document names issuer ${JSON.stringify(d.issuer)}, expected ${JSON.stringify(this.issuer)}`);
        const remote = new RemoteJwks(d.jwks_uri, this.opts);
        this.remote = remote;
        return remote;
      } finally {
        this.pending = null;
      }
    })();
    this.pending = p;
    return p;
  }

  readonly getKey: GetKey = async (header, token) => {
    let remote = this.remote;
    if (remote === null) {
      if (this.pending === null && Date.now() - this.lastAttempt < Math.min(this.opts.cooldownMs, 1000)) {
        throw new AuthError('signing keys unavailable', { detail: 'OIDC discovery failed recently; retrying shortly' });
      }
      try {
        remote = await this.discover();
      } catch {
        throw new AuthError('signing keys unavailable', { detail: 'OIDC discovery of the issuer failed' });
      }
    }
    return remote.getKey(header, token);
  };
}

/** The preferred signing algorithm for a development private key. */
export function signingAlgorithmFor(key: KeyObject, allowed: string[]): string | null {
  const algs = algorithmsForKey(key).filter((a) => allowed.includes(a));
  return algs[0] ?? null;
}

function staticProvider(kind: KeySourceConfig['kind'], key: KeyObject | Uint8Array, algorithms: string[]): KeyProvider {
  return { kind, algorithms, getKey: async () => key, fetches: 0 };
}

/** Builds the key provider for a parsed config (method oauth). */
export function createKeyProvider(cfg: AuthConfig): KeyProvider {
  const src = cfg.keySource;
  const opts = { maxAgeMs: cfg.jwksCacheMaxAgeMs, cooldownMs: cfg.jwksCooldownMs, timeoutMs: cfg.httpTimeoutMs };
  const asymmetric = cfg.algorithms.filter((a) => !a.startsWith('HS'));
  if (src === null) throw new Error('auth: no key source configured');
  switch (src.kind) {
    case 'discovery': {
      if (cfg.issuer === null) throw new Error('auth: discovery needs an issuer');
      const d = new DiscoveryKeys(cfg.issuer, opts);
      return { kind: 'discovery', algorithms: asymmetric, getKey: d.getKey, get fetches() { return d.fetches; } };
    }
    case 'jwks_url': {
      const r = new RemoteJwks(src.url, opts);
      return { kind: 'jwks_url', algorithms: asymmetric, getKey: r.getKey, get fetches() { return r.fetches; } };
    }
    case 'jwks_file': {
      const local = createLocalJWKSet(src.jwks as JSONWebKeySet);
      return { kind: 'jwks_file', algorithms: asymmetric, getKey: (h, t) => local(h, t), fetches: 0 };
    }
    case 'public_key_file': {
      const key = createPublicKey(src.pem);
      return staticProvider('public_key_file', key, algorithmsForKey(key).filter((a) => cfg.algorithms.includes(a)));
    }
    case 'dev_private_key_file': {
      const key = createPublicKey(createPrivateKey(src.pem));
      return staticProvider('dev_private_key_file', key, algorithmsForKey(key).filter((a) => cfg.algorithms.includes(a)));
    }
    case 'secret':
      return staticProvider('secret', src.secret, cfg.algorithms.filter((a) => a.startsWith('HS')));
  }
}
