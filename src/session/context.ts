/** Which role and claims a server connection must carry to act for one client, and the statement that sets them. */
import type { Identity } from '../auth/index.js';
import type { Backend } from '../backend/backend.js';
import type { RoleChoice } from '../policy/gate.js';
import { TX_FAILED } from '../protocol/codes.js';
import { quoteLiteral } from './settings.js';

/** A client's side of the role/claims context: fixed at login. */
export class ClientContext {
  constructor(
    readonly identity: Identity | null,
    /** Which client's claims a backend carries: the token hash ('' without a token). */
    readonly key: string,
    /** Role for statements that need none of their own: the first held scope's. */
    readonly defaultRole: string | null,
    /** server_login: role: the backend logged in as the role; only the claims are set. */
    readonly loginRoles = false,
  ) {}

  /** The role the next message needs, or undefined when the backend already acts for us. */
  needed(b: Backend, role: RoleChoice): string | null | undefined {
    if (b.txStatus === TX_FAILED) return undefined; // everything but ROLLBACK fails anyway
    if (this.loginRoles) return b.contextKey !== this.key ? b.db.user : undefined;
    if (b.contextKey !== this.key) return role !== undefined ? role : this.defaultRole;
    if (role !== undefined && role !== b.role) return role;
    return undefined;
  }

  /** One SELECT that sets the role and, when the backend carries another client's, the claims. */
  statement(b: Backend, role: string | null): string {
    const parts = this.loginRoles ? [] : [`pg_catalog.set_config('role', ${quoteLiteral(role ?? 'none')}, false)`];
    if (b.contextKey !== this.key) {
      const id = this.identity;
      parts.push(`pg_catalog.set_config('scopegate.claims', ${quoteLiteral(id ? JSON.stringify(id.claims) : '')}, false)`);
      parts.push(`pg_catalog.set_config('scopegate.sub', ${quoteLiteral(id ? id.sub : '')}, false)`);
    }
    return `SELECT ${parts.join(', ')}`;
  }

  /** The statement from statement() ran (or will run before anything else) on `b`. */
  applied(b: Backend, role: string | null): void {
    b.setContext(role, this.key);
  }
}
