/** Startup warnings about the authenticator role (superuser, INHERIT, own objects, missing scope roles). */
import pg from 'pg';
import type { Logger } from 'pino';
import type { DatabaseConfig } from '../config.js';
import { connectPgClient } from './connect.js';

/**
 * Looks at how the login role is set up and warns about what weakens the database's own
 * wall: a superuser login (SET ROLE gives it nothing to lose), INHERIT (it holds every scope
 * role's rights all the time), privileges or objects of its own, and scope roles it cannot
 * switch to. Warnings only: scopegate still starts, as PgBouncer would.
 */
export async function checkLoginRole(db: DatabaseConfig, roles: readonly string[], log: Logger): Promise<void> {
  let c: pg.Client | null = null;
  try {
    c = await connectPgClient(db, 5_000);
    const me = await c.query<{ rolsuper: boolean; rolinherit: boolean; grants: string; owned: string }>(
      `SELECT r.rolsuper, r.rolinherit,
              (SELECT count(*) FROM information_schema.role_table_grants g WHERE g.grantee = current_user) AS grants,
              (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid AND c.relnamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema'))) AS owned
         FROM pg_roles r WHERE r.rolname = current_user`,
    );
    const row = me.rows[0];
    if (row) {
      const where = { db: db.name, login: db.user };
      if (row.rolsuper) log.warn(where, 'the login role is a superuser: database GRANTs and RLS are no second wall; use a NOINHERIT role without privileges (docs/policy.md)');
      if (row.rolinherit && roles.length > 0) log.warn(where, 'the login role has INHERIT: it holds every granted scope role\'s privileges even before SET ROLE; create it NOINHERIT');
      if (Number(row.grants) > 0 || Number(row.owned) > 0) log.warn({ ...where, grants: Number(row.grants), owned: Number(row.owned) }, 'the login role has privileges or objects of its own; RESET ROLE would fall back to them');
    }
    if (roles.length > 0) {
      const r = await c.query<{ rolname: string; member: boolean | null }>(
        `SELECT want AS rolname, (SELECT pg_has_role(current_user, p.oid, 'MEMBER') FROM pg_roles p WHERE p.rolname = want) AS member
           FROM unnest($1::text[]) AS want`,
        [roles],
      );
      for (const x of r.rows) {
        if (x.member === null) log.warn({ db: db.name, role: x.rolname }, 'a policy role does not exist in the database; statements granted by its scope will fail');
        else if (!x.member) log.warn({ db: db.name, role: x.rolname, login: db.user }, 'the login role cannot SET ROLE to a policy role; GRANT it to the login role');
      }
    }
  } catch (err) {
    log.warn({ db: db.name, err: (err as Error).message }, 'could not inspect the login role');
  } finally {
    await c?.end().catch(() => undefined);
  }
}
