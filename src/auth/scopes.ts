/** Claims: dotted-path lookup, scope extraction, and the startup-user check. */
import type { AuthConfig } from './config.js';
import { AuthError } from './errors.js';
import type { Identity } from './identity.js';

/**
 * Looks up a claim. An exact top-level key wins (claim names like
 * `https://example.com/roles` contain dots); otherwise the path is walked through objects.
 */
export function claimAt(claims: Record<string, unknown>, path: string): unknown {
  if (Object.prototype.hasOwnProperty.call(claims, path)) return claims[path];
  let cur: unknown = claims;
  for (const seg of path.split('.')) {
    if (typeof cur !== 'object' || cur === null || Array.isArray(cur)) return undefined;
    if (!Object.prototype.hasOwnProperty.call(cur, seg)) return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

/**
 * The token's scopes from `scopeClaim`: a space-separated string (RFC 8693 `scope`) or a
 * list of strings (`scp`). With the default claim `scope`, a token that only has `scp` is
 * understood too. No claim at all → AuthError `missing scope claim`.
 */
export function extractScopes(claims: Record<string, unknown>, scopeClaim: string): string[] {
  let v = claimAt(claims, scopeClaim);
  if (v === undefined && scopeClaim === 'scope') v = claims.scp;
  if (v === undefined || v === null) {
    throw new AuthError('missing scope claim', { detail: `The token has no "${scopeClaim}" claim.` });
  }
  let list: string[];
  if (typeof v === 'string') {
    list = v.split(/\s+/);
  } else if (Array.isArray(v) && v.every((x) => typeof x === 'string')) {
    list = (v as string[]).flatMap((x) => x.split(/\s+/));
  } else {
    throw new AuthError('missing scope claim', { detail: `The "${scopeClaim}" claim is neither a string nor a list of strings.` });
  }
  return [...new Set(list.filter((s) => s !== ''))];
}

/**
 * With `user_claim` configured, the user named in the startup packet must equal that claim
 * (compared exactly). Throws AuthError 28000 `user does not match token`.
 */
export function checkUser(cfg: Pick<AuthConfig, 'userClaim'>, identity: Identity, user: string): void {
  if (cfg.userClaim === null) return;
  const v = claimAt(identity.claims, cfg.userClaim);
  const expected = typeof v === 'string' ? v : typeof v === 'number' ? String(v) : null;
  if (expected === null || expected !== user) {
    throw new AuthError('user does not match token', {
      message: 'OAuth authentication failed: user does not match token',
      detail: `The database user must equal the token's "${cfg.userClaim}" claim.`,
    });
  }
}
