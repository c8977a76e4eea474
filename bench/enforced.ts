/** The enforcing scopegate setup shared by the benchmarks: HS256 dev-token auth, a select-only policy on the pgbench tables, its roles, and tokens minted by the CLI. */
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { TestPostgres } from '../test/harness/postgres.js';
import { CLI } from '../test/harness/scopegate.js';

export const SECRET = 'bench-dev-secret-0123456789abcdef0123';
export const SECRET_ENV = { SG_SECRET: SECRET };
export const AUTH = { method: 'oauth', issuer: 'https://issuer.bench.test', audience: 'scopegate', secret: 'env:SG_SECRET', algorithms: ['HS256'] };
export const TABLES = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history'];
/** The scope pgbench's token carries, and the role its statements run under. */
export const SCOPE = 'bench';
export const READER_ROLE = 'bench_reader';
/** scopegate's login role: it may only SET ROLE to the scope's role. */
export const AUTHENTICATOR = { user: 'authenticator', password: 'auth-pw' };
export const POLICY = `default_schema: public
catalog: read
mode: enforce
scopes:
  "${SCOPE}":
    role: ${READER_ROLE}
    allow:
      - { actions: [select], tables: [${TABLES.join(', ')}] }
`;

/** Creates the authenticator and the scope's role (after `pgbench -i`, which creates the tables). */
export async function createEnforcementRoles(pg: TestPostgres): Promise<void> {
  await pg.sql(`
    CREATE ROLE ${AUTHENTICATOR.user} LOGIN NOINHERIT PASSWORD '${AUTHENTICATOR.password}';
    CREATE ROLE ${READER_ROLE} NOLOGIN;
    GRANT ${READER_ROLE} TO ${AUTHENTICATOR.user};
    GRANT SELECT ON ${TABLES.join(', ')} TO ${READER_ROLE};
    ALTER ROLE ${AUTHENTICATOR.user} SET search_path = public;`);
}

export function writePolicy(dir: string): string {
  const file = join(dir, 'policy.yaml');
  writeFileSync(file, POLICY);
  return file;
}

/** A token minted by `scopegate token` against the instance's own config. */
export function mintToken(configFile: string, scope: string, sub: string): string {
  return execFileSync(process.execPath, [CLI, 'token', '--config', configFile, '--scope', scope, '--sub', sub], {
    env: { ...process.env, ...SECRET_ENV },
    encoding: 'utf8',
    timeout: 30_000,
  }).trim();
}

export interface AuditCount {
  /** When each line was written (ms since the epoch), in file order. */
  times: number[];
  /** Lines that allowed a statement under the scope's role. */
  allowedAsReader: number;
  /** Lines with any other decision (or role). */
  other: number;
}

/** Reads the audit file's lines, a chunk at a time (a fast run writes more than one string can hold): their times, and how many allowed under the scope's role. */
export function countAudit(file: string): AuditCount {
  const count: AuditCount = { times: [], allowedAsReader: 0, other: 0 };
  const fd = openSync(file, 'r');
  try {
    const chunk = Buffer.allocUnsafe(4 << 20);
    const decoder = new StringDecoder('utf8');
    let rest = '';
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      const text = rest + (n === 0 ? decoder.end() : decoder.write(chunk.subarray(0, n)));
      const lines = text.split('\n');
      // The last piece may be a line cut by the chunk's end (or '' after the last newline).
      rest = n === 0 ? '' : lines.pop()!;
      for (const line of lines) {
        if (line === '') continue;
        const rec = JSON.parse(line) as { time?: unknown; decision?: unknown; role?: unknown };
        count.times.push(typeof rec.time === 'string' ? Date.parse(rec.time) : Number.NaN);
        if (rec.decision === 'allow' && rec.role === READER_ROLE) count.allowedAsReader++;
        else count.other++;
      }
      if (n === 0) return count;
    }
  } finally {
    closeSync(fd);
  }
}
