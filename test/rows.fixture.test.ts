/**
 * Shared fixture for the row/column-rule end-to-end tests (test/rows.*.test.ts).
 *
 * Defines no tests (named *.test.ts only to live next to the files that import it).
 *
 * - a real PostgreSQL with tenant tables: orders (tenant_id), order_items, customers (whose
 *   physical column order differs from the policy's column list, with a dropped column),
 *   and `ledger`, isolated by a PostgreSQL RLS policy over scopegate.claims only;
 * - a copy of config/policy-tenants.yaml with two scopes appended (orders:manage for DELETE,
 *   ledger:read for the RLS-only table);
 * - the real scopegate CLI in front (oauth, HS256 dev secret), tokens minted by the CLI
 *   with `--claim` arguments.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import postgres from 'postgres';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { CLI, startScopegate, type LogLine, type RunningScopegate } from './harness/scopegate.js';

const run = promisify(execFile);

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const TENANT_POLICY = join(ROOT, 'config', 'policy-tenants.yaml');
export const DB = 'app';
export const AUTH_PASSWORD = 'authenticator-pw';
export const SECRET = 'rows-e2e-dev-secret-0123456789abcdef';
export const AUTH = { method: 'oauth', issuer: 'https://issuer.rows.test', audience: 'scopegate', secret: 'env:SG_SECRET', algorithms: ['HS256'] };

export const EXTRA_SCOPES = `
  "orders:manage":
    role: app_manager
    allow:
      - { actions: [select, update, delete], tables: [orders] }
    row_filters:
      orders: "tenant_id = claim('tenant')"
  "ledger:read":
    role: app_reader
    allow:
      - { actions: [select], tables: [ledger] }
`;

export const ROLES_SQL = `
CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD '${AUTH_PASSWORD}';
CREATE ROLE app_reader NOLOGIN;
CREATE ROLE app_writer NOLOGIN;
CREATE ROLE app_manager NOLOGIN;
GRANT app_reader, app_writer, app_manager TO authenticator;
`;

export const SCHEMA_SQL = `
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO app_reader, app_writer, app_manager;
-- Physical order differs from the policy's [id, name, country]; a dropped column in between.
CREATE TABLE customers (id serial PRIMARY KEY, country text, gone int, email text, name text NOT NULL);
ALTER TABLE customers DROP COLUMN gone;
INSERT INTO customers (country, email, name) VALUES
  ('UK', 'ada@example.test', 'Ada'), ('US', 'grace@example.test', 'Grace'), ('FI', 'linus@example.test', 'Linus');
CREATE TABLE orders (id serial PRIMARY KEY, tenant_id text NOT NULL, customer_id int REFERENCES customers,
                     total numeric NOT NULL DEFAULT 0, status text NOT NULL DEFAULT 'new');
CREATE TABLE order_items (id serial PRIMARY KEY, order_id int REFERENCES orders ON DELETE CASCADE, sku text, qty int NOT NULL DEFAULT 1);
INSERT INTO orders (tenant_id, customer_id, total, status) VALUES
  ('acme', 1, 10, 'new'), ('globex', 2, 20, 'new'), ('acme', 2, 30, 'paid'), ('globex', 3, 40, 'paid'),
  ('acme', 3, 50, 'new'), ('initech', 1, 60, 'new'), ('globex', 1, 70, 'new'), ('acme', 1, 80, 'paid'),
  ('initech', 2, 90, 'paid'), ('o''brien', 3, 100, 'new');
INSERT INTO order_items (order_id, sku, qty) SELECT o.id, o.tenant_id || '-' || o.id || '-' || k, k FROM orders o, generate_series(1, 2) k;
CREATE TABLE ledger (id int PRIMARY KEY, tenant_id text NOT NULL, amount int NOT NULL);
INSERT INTO ledger VALUES (1, 'acme', 100), (2, 'globex', 200), (3, 'acme', 300), (4, 'initech', 400), (5, 'globex', 500);
ALTER TABLE ledger ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ledger
  USING (tenant_id = current_setting('scopegate.claims', true)::jsonb ->> 'tenant');

GRANT SELECT ON orders, order_items, ledger TO app_reader;
GRANT SELECT (id, name, country) ON customers TO app_reader;
GRANT SELECT, INSERT, UPDATE ON orders TO app_writer;
GRANT SELECT (email) ON customers TO app_writer;
GRANT USAGE ON SEQUENCE orders_id_seq TO app_writer;
GRANT SELECT, UPDATE, DELETE ON orders TO app_manager;
ALTER ROLE authenticator SET search_path = public;
`;

export interface RowsFixture {
  pg: TestPostgres;
  sg: RunningScopegate;
  policyFile: string;
  /** Token for `scope` and `sub` with the given claims (values given as for `--claim k=v`). */
  token(scope: string, sub: string, claims?: Record<string, string>): Promise<string>;
  /** A connected pg.Client through scopegate. */
  client(scope: string, sub: string, claims?: Record<string, string>): Promise<pg.Client>;
  /** A postgres.js pool (max 1) through scopegate. */
  pgjs(scope: string, sub: string, claims?: Record<string, string>, opts?: postgres.Options<Record<string, never>>): Promise<postgres.Sql>;
  /** Superuser SQL on `app`, directly. */
  su(text: string, values?: unknown[]): Promise<pg.QueryResult>;
  audit(): LogLine[];
  dir: string;
  stop(): Promise<void>;
}

export async function mintToken(configFile: string, scope: string, sub: string, claims: Record<string, string> = {}): Promise<string> {
  const args = [CLI, 'token', '--config', configFile, '--scope', scope, '--sub', sub];
  for (const [k, v] of Object.entries(claims)) args.push('--claim', `${k}=${v}`);
  const { stdout } = await run(process.execPath, args, { env: { ...process.env, SG_SECRET: SECRET }, timeout: 30_000 });
  return stdout.trim();
}

/** The tenant policy copied into `dir`, with EXTRA_SCOPES appended. */
export function writeTenantPolicy(dir: string): string {
  const file = join(dir, 'policy-tenants.yaml');
  writeFileSync(file, readFileSync(TENANT_POLICY, 'utf8').replace(/\s*$/, '\n') + EXTRA_SCOPES);
  return file;
}

export async function startRows(opts: { poolSize?: number; config?: Record<string, unknown> } = {}): Promise<RowsFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'rows-e2e-'));
  const pgsrv = await startPostgres();
  let sg: RunningScopegate;
  const policyFile = writeTenantPolicy(dir);
  try {
    await pgsrv.sql(ROLES_SQL);
    await pgsrv.sql(`CREATE DATABASE ${DB}`);
    await pgsrv.sql(SCHEMA_SQL, DB);
    sg = await startScopegate({
      databases: { [DB]: { url: pgsrv.url(DB, 'authenticator', AUTH_PASSWORD), pool_size: opts.poolSize ?? 1 } },
      auth: AUTH,
      log: { level: 'info' },
      policy: policyFile,
      ...(opts.config ?? {}),
    }, { SG_SECRET: SECRET });
  } catch (err) {
    await pgsrv.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const running = sg;
  const tokens = new Map<string, Promise<string>>();
  const token = (scope: string, sub: string, claims: Record<string, string> = {}): Promise<string> => {
    const key = JSON.stringify([scope, sub, claims]);
    let t = tokens.get(key);
    if (t === undefined) {
      t = mintToken(running.configFile, scope, sub, claims);
      tokens.set(key, t);
    }
    return t;
  };
  const clients: pg.Client[] = [];
  const pools: postgres.Sql[] = [];
  const suPool = new pg.Pool({ connectionString: pgsrv.url(DB), max: 2 });
  return {
    pg: pgsrv,
    sg: running,
    policyFile,
    dir,
    token,
    async client(scope, sub, claims = {}) {
      const c = new pg.Client({ host: '127.0.0.1', port: running.port, user: sub, password: await token(scope, sub, claims), database: DB });
      c.on('error', () => undefined);
      await c.connect();
      clients.push(c);
      return c;
    },
    async pgjs(scope, sub, claims = {}, o = {}) {
      const sql = postgres({
        host: '127.0.0.1', port: running.port, database: DB, username: sub, pass: await token(scope, sub, claims),
        max: 1, onnotice: () => undefined, ...o,
      });
      pools.push(sql);
      return sql;
    },
    su: (text, values) => suPool.query(text, values),
    audit: () => running.logs.filter((l) => l.stream === 'audit'),
    async stop() {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      await Promise.all(pools.map((p) => p.end({ timeout: 5 }).catch(() => undefined)));
      await suPool.end().catch(() => undefined);
      await running.stop().catch(() => null);
      await pgsrv.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs `fn` and returns the error it throws (fails if it does not throw). */
export async function errorOf(fn: () => Promise<unknown>): Promise<Error & { code?: string; hint?: string }> {
  try {
    await fn();
  } catch (err) {
    return err as Error & { code?: string };
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

/**
 * The oracle: the superuser runs `text` in a transaction where a temp table `orders` (first on
 * the search_path) holds only `tenant`'s rows, so unqualified `orders` means that tenant's orders.
 */
export async function tenantOracle(pgsrv: TestPostgres, tenant: string): Promise<{ rows(text: string): Promise<unknown[]>; end(): Promise<void> }> {
  const c = new pg.Client({ connectionString: pgsrv.url(DB) });
  await c.connect();
  return {
    async rows(text) {
      await c.query('BEGIN');
      try {
        await c.query('CREATE TEMP TABLE orders ON COMMIT DROP AS SELECT * FROM public.orders WHERE tenant_id = $1', [tenant]);
        return (await c.query(text)).rows;
      } finally {
        await c.query('COMMIT');
      }
    },
    end: () => c.end(),
  };
}
