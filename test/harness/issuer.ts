/**
 * Test authorization servers on loopback.
 *
 * - startIssuer(): a real OAuth 2.0 / OIDC authorization server (oidc-provider) that issues
 *   client_credentials access tokens for the resource `urn:scopegate` (audience `scopegate`),
 *   as RS256 JWTs, or opaque tokens for introspection.
 * - startJwksServer(): a tiny HTTP server publishing a JWKS (and optionally a discovery
 *   document) for keys generated locally with jose; used for negative cases and rotation.
 */
import { createServer, type Server } from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload, type CryptoKey } from 'jose';
import { freePort } from './ports.js';

export const AUDIENCE = 'scopegate';
export const RESOURCE_JWT = 'urn:scopegate';
export const RESOURCE_OPAQUE = 'urn:scopegate:opaque';
export const ISSUER_SCOPES = 'orders:read orders:write admin';

export interface TestIssuer {
  issuer: string;
  port: number;
  jwksUrl: string;
  discoveryUrl: string;
  introspectionUrl: string;
  tokenUrl: string;
  revocationUrl: string;
  clientId: string;
  clientSecret: string;
  /** Gets an access token with the client_credentials grant. */
  token(opts: { scope: string; opaque?: boolean }): Promise<string>;
  /** Revokes a (opaque) token at the revocation endpoint. */
  revoke(token: string): Promise<void>;
  stop(): Promise<void>;
}

/** Minimal view of the untyped oidc-provider module that the harness uses. */
interface ProviderInstance {
  listen(port: number, host: string, cb: () => void): Server;
  on(event: string, fn: (...args: unknown[]) => void): void;
}
type ProviderCtor = new (issuer: string, config: Record<string, unknown>) => ProviderInstance;

async function loadProvider(): Promise<ProviderCtor> {
  // oidc-provider ships no type declarations; load it through a non-literal specifier so the
  // compiler does not look for them, and describe the little we use with ProviderInstance.
  const name: string = 'oidc-provider';
  const mod = (await import(name)) as { default: ProviderCtor };
  return mod.default;
}

function closeServer(srv: Server): Promise<void> {
  return new Promise((resolve) => {
    srv.close(() => resolve());
    srv.closeAllConnections();
  });
}

/**
 * Starts oidc-provider on 127.0.0.1 (plain http). `port` lets a test restart the issuer on
 * the same address after stopping it; `signingKey` keeps the same key across restarts.
 */
export async function startIssuer(opts: { port?: number; signingJwk?: JWK } = {}): Promise<TestIssuer> {
  const Provider = await loadProvider();
  const port = opts.port ?? (await freePort());
  const issuer = `http://127.0.0.1:${port}`;
  const clientId = 'scopegate-test-client';
  const clientSecret = randomBytes(24).toString('base64url');
  let signingJwk = opts.signingJwk;
  if (!signingJwk) {
    const { privateKey } = await generateKeyPair('RS256', { extractable: true });
    signingJwk = { ...(await exportJWK(privateKey)), kid: `op-${randomUUID().slice(0, 8)}`, alg: 'RS256', use: 'sig' };
  }
  const resourceInfo = (opaque: boolean) => ({
    audience: AUDIENCE,
    scope: ISSUER_SCOPES,
    accessTokenTTL: 600,
    accessTokenFormat: opaque ? 'opaque' : 'jwt',
    ...(opaque ? {} : { jwt: { sign: { alg: 'RS256' } } }),
  });
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: ISSUER_SCOPES,
      },
    ],
    jwks: { keys: [signingJwk] },
    scopes: ISSUER_SCOPES.split(' '),
    cookies: { keys: [randomBytes(16).toString('hex')] },
    ttl: { ClientCredentials: 600 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true, allowedPolicy: async () => true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE_JWT,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx: unknown, resource: string) => {
          if (resource === RESOURCE_JWT) return resourceInfo(false);
          if (resource === RESOURCE_OPAQUE) return resourceInfo(true);
          throw new Error(`unknown resource ${resource}`);
        },
      },
    },
  });
  const srv = await new Promise<Server>((resolve) => {
    const s: Server = provider.listen(port, '127.0.0.1', () => resolve(s));
  });
  const basic = 'Basic ' + Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64');
  const tokenUrl = `${issuer}/token`;
  const post = async (url: string, form: Record<string, string>): Promise<Response> =>
    fetch(url, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form).toString(),
    });
  return {
    issuer,
    port,
    jwksUrl: `${issuer}/jwks`,
    discoveryUrl: `${issuer}/.well-known/openid-configuration`,
    introspectionUrl: `${issuer}/token/introspection`,
    tokenUrl,
    revocationUrl: `${issuer}/token/revocation`,
    clientId,
    clientSecret,
    async token({ scope, opaque }) {
      const res = await post(tokenUrl, {
        grant_type: 'client_credentials',
        scope,
        resource: opaque ? RESOURCE_OPAQUE : RESOURCE_JWT,
      });
      const body = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
      if (!res.ok || typeof body.access_token !== 'string') {
        throw new Error(`token request failed: ${res.status} ${body.error ?? ''} ${body.error_description ?? ''}`);
      }
      return body.access_token;
    },
    async revoke(token) {
      const res = await post(`${issuer}/token/revocation`, { token, token_type_hint: 'access_token' });
      if (!res.ok) throw new Error(`revocation failed: ${res.status}`);
    },
    stop: () => closeServer(srv),
  };
}

export interface LocalKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

/** Generates a key pair for local signing (RS256 by default). */
export async function makeKey(alg = 'RS256', kid: string = `k-${randomUUID().slice(0, 8)}`): Promise<LocalKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicJwk };
}

/** Signs `claims` with a local key; header overrides allow forged kids. */
export async function signWith(key: { privateKey: CryptoKey | Uint8Array; alg: string; kid?: string }, claims: JWTPayload): Promise<string> {
  const header = { alg: key.alg, typ: 'JWT', ...(key.kid !== undefined ? { kid: key.kid } : {}) };
  return new SignJWT(claims).setProtectedHeader(header).sign(key.privateKey);
}

export interface JwksServer {
  url: string;
  /** An issuer URL whose discovery document points to `jwksUrl`. */
  issuer: string;
  jwksUrl: string;
  /** Replaces the published key set. */
  publish(keys: JWK[]): void;
  /** Number of JWKS GETs served so far. */
  readonly jwksHits: number;
  readonly discoveryHits: number;
  stop(): Promise<void>;
}

/** A small HTTP server that serves `/.well-known/openid-configuration` and `/jwks`. */
export async function startJwksServer(keys: JWK[], opts: { port?: number } = {}): Promise<JwksServer> {
  const port = opts.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  let published: JWK[] = keys;
  let jwksHits = 0;
  let discoveryHits = 0;
  const srv = createServer((req, res) => {
    if (req.url === '/jwks') {
      jwksHits++;
      res.writeHead(200, { 'content-type': 'application/jwk-set+json' });
      res.end(JSON.stringify({ keys: published }));
    } else if (req.url === '/.well-known/openid-configuration') {
      discoveryHits++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ issuer: url, jwks_uri: `${url}/jwks` }));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve) => srv.listen(port, '127.0.0.1', () => resolve()));
  return {
    url,
    issuer: url,
    jwksUrl: `${url}/jwks`,
    publish(k) { published = k; },
    get jwksHits() { return jwksHits; },
    get discoveryHits() { return discoveryHits; },
    stop: () => closeServer(srv),
  };
}
