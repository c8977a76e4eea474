/** Revoked tokens (by jti) and subjects (by sub), as read from the policy source. */
import type { Identity } from '../auth/index.js';

export interface RevocationRow {
  jti: string | null;
  sub: string | null;
  /** Revoked until this time (ms since the epoch); null: for good. */
  until: number | null;
}

/**
 * One immutable snapshot per read of the revocation table, swapped whole: a check sees
 * either the old list or the new one. An entry whose `until` has passed no longer revokes.
 */
export class RevocationList {
  private byJti = new Map<string, number | null>();
  private bySub = new Map<string, number | null>();
  private rows = 0;

  /** Entries in force at the last replace (SHOW POLICY). */
  get size(): number {
    return this.rows;
  }

  replace(rows: readonly RevocationRow[]): void {
    const jti = new Map<string, number | null>();
    const sub = new Map<string, number | null>();
    for (const r of rows) {
      if (r.jti !== null) merge(jti, r.jti, r.until);
      if (r.sub !== null) merge(sub, r.sub, r.until);
    }
    this.byJti = jti;
    this.bySub = sub;
    this.rows = rows.length;
  }

  /** Why this identity is revoked ("token jti ..." / "subject ..."), or null when it is not. */
  revoked(id: Pick<Identity, 'sub' | 'claims'>, now: number = Date.now()): string | null {
    if (this.byJti.size !== 0) {
      const jti = id.claims.jti;
      if (typeof jti === 'string' && active(this.byJti, jti, now)) return 'access token revoked';
    }
    if (this.bySub.size !== 0 && active(this.bySub, id.sub, now)) return `subject "${id.sub}" revoked`;
    return null;
  }
}

/** Two rows for one key: the longer revocation wins (null = for good). */
function merge(m: Map<string, number | null>, key: string, until: number | null): void {
  const had = m.get(key);
  if (had === undefined) m.set(key, until);
  else if (had !== null) m.set(key, until === null ? null : Math.max(had, until));
}

function active(m: Map<string, number | null>, key: string, now: number): boolean {
  const until = m.get(key);
  return until !== undefined && (until === null || now < until);
}
