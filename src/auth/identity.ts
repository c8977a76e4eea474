/** The authenticated principal behind a verified access token. */
export interface Identity {
  /** `sub`, or `client_id` for client-credentials tokens that carry no subject. */
  sub: string;
  scopes: string[];
  claims: Record<string, unknown>;
  /** Token expiry in ms since the epoch; null when the token does not expire (introspection without exp). */
  expiresAt: number | null;
  /** sha256 of the token, hex. Safe to log; the token itself never is. */
  tokenHash: string;
  via: 'jwt' | 'introspection';
}

/** True once `nowMs` is past the token's expiry plus `toleranceMs`. Tokens without expiry never expire. */
export function isExpired(identity: Pick<Identity, 'expiresAt'>, nowMs: number = Date.now(), toleranceMs = 0): boolean {
  return identity.expiresAt !== null && nowMs >= identity.expiresAt + toleranceMs;
}
