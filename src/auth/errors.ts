/** Authentication failures: what the client is told (SQLSTATE 28000 family) and what the log keeps. */
import { SqlError, SQLSTATE, type SqlState } from '../errors.js';

/**
 * Stable names of the checks that can reject a token or a login. They appear in logs
 * (`check` field) and, as text, in the client's error message; the token never does.
 */
export type AuthCheck =
  | 'bad signature'
  | 'unknown signing key'
  | 'wrong issuer'
  | 'wrong audience'
  | 'token expired'
  | 'token not yet valid'
  | 'token issued in the future'
  | 'malformed token'
  | 'missing scope claim'
  | 'missing subject'
  | 'missing expiry'
  | 'algorithm not allowed'
  | 'token inactive'
  | 'signing keys unavailable'
  | 'introspection unavailable'
  | 'user does not match token'
  | 'malformed oauthbearer message'
  | 'authzid not allowed'
  | 'channel binding not supported'
  | 'transport not allowed'
  | 'token required';

/** A failed authentication. SQLSTATE 28000 unless the client broke the protocol (08P01). */
export class AuthError extends SqlError {
  readonly check: AuthCheck;
  constructor(check: AuthCheck, opts: { code?: SqlState; message?: string; detail?: string; hint?: string } = {}) {
    const message = opts.message ?? `OAuth authentication failed: ${check}`;
    super(opts.code ?? SQLSTATE.INVALID_AUTHORIZATION, message, {
      severity: 'FATAL',
      ...(opts.detail !== undefined ? { detail: opts.detail } : {}),
      ...(opts.hint !== undefined ? { hint: opts.hint } : {}),
    });
    this.name = 'AuthError';
    this.check = check;
  }
}

export function isAuthError(err: unknown): err is AuthError {
  return err instanceof AuthError;
}
