// Concern: `catalog: read` grants schema metadata only: statistics, other sessions' statements, locks, sequence values, settings files and the like need a grant.
/**
 * Real PostgreSQL 18 behind the real scopegate CLI (example policy plus a `stats:read` scope
 * granting pg_catalog.pg_stats), one server connection so every client shares the backend
 * whose prepared statements pg_prepared_statements would show. The database itself would
 * reveal the secrets (app_reader may SELECT secrets, statistics are analysed): the test shows
 * so as the superuser first, then that an `orders:read` token gets 42501 and never the value,
 * while psql's \d family, information_schema and drivers' introspection keep working.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import postgres from 'postgres';
import { DB, EXAMPLE_POLICY, errorOf, startFixture, type Fixture } from '../scope.fixture.test.js';

const PSQL = '/usr/bin/psql';
const SECRET_VALUES = ['the-launch-code', 'another-secret'];
const STMT_LITERAL = 'prepared-literal-4242';

const STATS_SCOPE = `
  "stats:read":
    role: app_reader
    allow:
      - { actions: [select], tables: [pg_catalog.pg_stats] }
`;

/** Everything a client receives for one failed statement, for "the secret is absent" checks. */
function received(e: pg.DatabaseError): string {
  return JSON.stringify({ message: e.message, hint: e.hint, detail: e.detail, where: e.where });
}

function psql(port: number, token: string, command: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(PSQL, ['-X', '-v', 'ON_ERROR_STOP=1', '-d', `host=127.0.0.1 port=${port} user=alice dbname=${DB} sslmode=disable`, '-c', command], {
      env: { ...process.env, PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.on('error', reject);
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('catalog: read is schema, not data', { timeout: 180_000 }, () => {
  let fx: Fixture;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sg-catalog-'));
    const policy = join(dir, 'policy.yaml');
    writeFileSync(policy, readFileSync(EXAMPLE_POLICY, 'utf8') + STATS_SCOPE);
    fx = await startFixture({ policy, poolSize: 1 });
    // The database would show these to app_reader: only the policy stands in the way.
    await fx.su('GRANT SELECT ON secrets TO app_reader; ANALYZE secrets; ANALYZE orders; ANALYZE customers');
  });
  after(async () => {
    await fx?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test('the leak is real: as app_reader, PostgreSQL itself returns the secret values from pg_stats', async () => {
    const r = await fx.su("BEGIN; SET LOCAL ROLE app_reader; SELECT histogram_bounds::text AS h FROM pg_stats WHERE tablename = 'secrets' AND attname = 'value'; COMMIT") as unknown as pg.QueryResult[];
    const rows = r.find((x) => x.command === 'SELECT')!.rows as Array<{ h: string }>;
    assert.equal(rows.length, 1);
    for (const v of SECRET_VALUES) assert.ok(rows[0]!.h.includes(v), `pg_stats shows ${v}`);
  });

  test('statistics relations are denied under every spelling, in simple and extended protocol, and never show a value', async () => {
    const c = await fx.client('orders:read');
    const queries = [
      "SELECT histogram_bounds::text, most_common_vals::text FROM pg_stats WHERE tablename = 'secrets'",
      "SELECT histogram_bounds::text FROM pg_catalog.pg_stats WHERE tablename = 'secrets'",
      'SELECT histogram_bounds::text FROM "pg_stats"',
      'SELECT histogram_bounds::text FROM PG_CATALOG.PG_STATS',
      'SELECT histogram_bounds::text FROM "pg_catalog"."pg_stats"',
      'SELECT histogram_bounds::text FROM U&"pg_st\\0061ts"',
      'SELECT histogram_bounds::text FROM pg_catalog.U&"pg_st\\0061ts"',
      "WITH s AS (SELECT * FROM pg_stats) SELECT histogram_bounds::text FROM s WHERE tablename = 'secrets'",
      "SELECT c.relname, (SELECT string_agg(histogram_bounds::text, ',') FROM pg_stats s WHERE s.tablename = c.relname) FROM pg_class c WHERE c.relname = 'secrets'",
      "SELECT relname FROM pg_class c WHERE EXISTS (SELECT 1 FROM pg_statistic s WHERE s.starelid = c.oid AND s.stavalues1::text LIKE '%launch%')",
      'SELECT stavalues1::text FROM pg_catalog.pg_statistic',
      'SELECT * FROM pg_stats_ext',
      'SELECT * FROM pg_stats_ext_exprs',
      'SELECT * FROM pg_statistic_ext_data',
      'SELECT * FROM pg_catalog.pg_stats_ext',
    ];
    for (const q of queries) {
      for (const extended of [false, true]) {
        const e = await errorOf(() => (extended ? c.query({ text: q, values: [] }) : c.query(q)));
        assert.equal(e.code, '42501', `${q}: ${e.message}`);
        assert.match(e.message, /^permission denied: select on pg_catalog\.pg_stat/, q);
        for (const v of SECRET_VALUES) assert.ok(!received(e).includes(v), `${q}: nothing of ${v}`);
      }
    }
    // The connection stays usable and the metadata next to it readable.
    assert.deepEqual((await c.query("SELECT relname FROM pg_class WHERE relname = 'secrets'")).rows, [{ relname: 'secrets' }]);
  });

  test('another client\'s prepared statement text (shared on the server) is not readable; `all` still reads it', async () => {
    const w = await fx.client('orders:write', { sub: 'walter' });
    await w.query({ name: 'w1', text: `SELECT id FROM orders WHERE status <> '${STMT_LITERAL}' AND id > $1`, values: [0] });
    // Same single backend: with `all` the shared statement and its literal are there.
    const admin = await fx.client('admin', { sub: 'root' });
    const seen = (await admin.query('SELECT statement FROM pg_prepared_statements')).rows as Array<{ statement: string }>;
    assert.ok(seen.some((r) => r.statement.includes(STMT_LITERAL)), 'the literal is in pg_prepared_statements');

    const r = await fx.client('orders:read', { sub: 'mallory' });
    for (const q of [
      'SELECT statement FROM pg_prepared_statements',
      'SELECT statement FROM pg_catalog.pg_prepared_statements',
      'SELECT statement FROM pg_prepared_statement()',
      'SELECT * FROM pg_catalog.pg_prepared_statement()',
      'SELECT (SELECT string_agg(statement, \';\') FROM pg_prepared_statements) AS s',
    ]) {
      for (const extended of [false, true]) {
        const e = await errorOf(() => (extended ? r.query({ text: q, values: [] }) : r.query(q)));
        assert.equal(e.code, '42501', `${q}: ${e.message}`);
        assert.ok(!received(e).includes(STMT_LITERAL), q);
      }
    }
  });

  test('sessions, locks, cursors, sequence values, settings files, memory, passwords and large objects need a grant', async () => {
    const c = await fx.client('orders:read');
    const relations = [
      'pg_stat_activity', 'pg_catalog.pg_stat_activity', 'pg_stat_user_tables', 'pg_stat_all_tables', 'pg_statio_user_tables',
      'pg_stat_io', 'pg_stat_slru', 'pg_stat_database_conflicts', 'pg_stat_user_functions', 'pg_stat_xact_user_tables',
      'pg_locks', 'pg_cursors', 'pg_sequences', 'pg_prepared_xacts', 'pg_file_settings', 'pg_hba_file_rules',
      'pg_ident_file_mappings', 'pg_backend_memory_contexts', 'pg_shmem_allocations', 'pg_authid', 'pg_shadow',
      'pg_user_mappings', 'pg_user_mapping', 'pg_largeobject', 'pg_config', 'pg_db_role_setting', 'pg_subscription',
      'pg_replication_slots', 'information_schema.user_mappings', 'information_schema.user_mapping_options',
    ];
    for (const rel of relations) {
      const e = await errorOf(() => c.query(`SELECT * FROM ${rel}`));
      assert.equal(e.code, '42501', `${rel}: ${e.message}`);
      assert.match(e.message, /^permission denied: select on (pg_catalog|information_schema)\./, rel);
    }
    const calls = [
      "SELECT pg_sequence_last_value('orders_id_seq')",
      "SELECT pg_catalog.pg_sequence_last_value('orders_id_seq'::regclass)",
      "SELECT pg_stat_get_live_tuples('secrets'::regclass)",
      "SELECT pg_stat_get_numscans('secrets'::regclass)",
      "SELECT pg_stat_get_tuples_returned('orders'::regclass)",
      'SELECT * FROM pg_stat_get_activity(NULL)',
      'SELECT pg_catalog.pg_stat_get_backend_idset()',
      'SELECT * FROM pg_lock_status()',
      'SELECT * FROM pg_cursor()',
      'SELECT * FROM pg_show_all_file_settings()',
      'SELECT * FROM pg_get_backend_memory_contexts()',
      "SELECT * FROM pg_get_multixact_members('1'::xid)",
      'SELECT pg_blocking_pids(pg_backend_pid())',
    ];
    for (const q of calls) {
      const e = await errorOf(() => c.query(q));
      assert.equal(e.code, '42501', `${q}: ${e.message}`);
      assert.match(e.message, /^permission denied: execute on function (pg_catalog\.)?pg_/, q);
    }
    // The sequence's value stays hidden; its definition (pg_sequence, information_schema) is metadata.
    const def = (await c.query("SELECT s.seqstart::int AS start, s.seqincrement::int AS inc FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relname = 'orders_id_seq'")).rows;
    assert.deepEqual(def, [{ start: 1, inc: 1 }]);
    const isq = (await c.query("SELECT start_value, increment FROM information_schema.sequences WHERE sequence_name = 'orders_id_seq'")).rows;
    assert.deepEqual(isq, []); // app_reader has no privilege on the sequence: the server's own filter
  });

  test('a scope that grants pg_catalog.pg_stats reads it, and `all` reads everything', async () => {
    const s = await fx.client('stats:read', { sub: 'sam' });
    const own = (await s.query("SELECT attname FROM pg_stats WHERE tablename = 'orders' AND attname = 'status'")).rows;
    assert.deepEqual(own, [{ attname: 'status' }]);
    // The grant is on pg_stats only.
    assert.equal((await errorOf(() => s.query('SELECT * FROM pg_statistic'))).code, '42501');
    assert.equal((await errorOf(() => s.query('SELECT * FROM pg_locks'))).code, '42501');
    const admin = await fx.client('admin', { sub: 'root' });
    const h = (await admin.query("SELECT histogram_bounds::text AS h FROM pg_stats WHERE tablename = 'secrets' AND attname = 'value'")).rows as Array<{ h: string }>;
    assert.ok(h[0]!.h.includes('the-launch-code'));
    assert.ok((await admin.query('SELECT count(*)::int AS n FROM pg_locks')).rows[0].n > 0);
    assert.equal(typeof (await admin.query("SELECT pg_sequence_last_value('orders_id_seq') AS v")).rows[0].v, 'string');
  });

  test('control: psql \\d family works through scopegate with orders:read', async () => {
    const token = await fx.token('orders:read');
    const expect: Array<[string, RegExp[]]> = [
      ['\\dt', [/orders/, /order_items/, /customers/]],
      ['\\dt+', [/orders/, /Size/]],
      ['\\d', [/orders_id_seq/, /sequence/]],
      ['\\d orders', [/customer_id/, /orders_pkey/, /orders_customer_id_fkey/, /orders_w/]],
      ['\\d+ orders', [/Storage/, /created_at/]],
      ['\\d orders_id_seq', [/integer/, /public\.orders\.id/]],
      ['\\dn', [/public/]],
      ['\\df', [/place_order/, /log_write/]],
      ['\\dv', [/Did not find any relations|List of relations/]],
      ['\\di', [/orders_pkey/, /customers_pkey/]],
      ['\\du', [/app_reader/, /authenticator/]],
      ['\\dT', [/List of data types/]],
    ];
    for (const [cmd, patterns] of expect) {
      const r = await psql(fx.sg.port, token, cmd);
      assert.equal(r.code, 0, `${cmd}: ${r.stderr}`);
      for (const p of patterns) assert.match(r.stdout + r.stderr, p, cmd);
    }
  });

  test('control: information_schema and drivers\' introspection (pgjdbc getPrimaryKeys/getColumns, postgres.js type fetch)', async () => {
    const c = await fx.client('orders:read');
    const cols = (await c.query("SELECT column_name, column_default FROM information_schema.columns WHERE table_name = 'orders' ORDER BY ordinal_position")).rows;
    assert.deepEqual(cols.map((r) => r.column_name), ['id', 'customer_id', 'total', 'status', 'created_at']);
    assert.equal(cols.find((r) => r.column_name === 'status')!.column_default, "'new'::text");
    const tables = (await c.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('orders', 'order_items') ORDER BY 1")).rows;
    assert.deepEqual(tables, [{ table_name: 'order_items' }, { table_name: 'orders' }]);
    // pgjdbc PgDatabaseMetaData.getPrimaryKeys (shape of its query).
    const pk = await c.query({
      text: `SELECT NULL AS "TABLE_CAT", n.nspname AS "TABLE_SCHEM", ct.relname AS "TABLE_NAME", a.attname AS "COLUMN_NAME",
               (information_schema._pg_expandarray(i.indkey)).n AS "KEY_SEQ", ci.relname AS "PK_NAME"
             FROM pg_catalog.pg_namespace n, pg_catalog.pg_class ct, pg_catalog.pg_class ci, pg_catalog.pg_attribute a, pg_catalog.pg_index i
             WHERE ct.oid = i.indrelid AND ci.oid = i.indexrelid AND a.attrelid = ci.oid AND i.indisprimary
               AND ct.relname = $1 AND n.oid = ct.relnamespace ORDER BY ct.relname, ci.relname`,
      values: ['orders'],
    });
    assert.ok(pk.rows.length >= 1 && pk.rows.every((r) => r.COLUMN_NAME === 'id' && r.PK_NAME === 'orders_pkey'), JSON.stringify(pk.rows));
    // pgjdbc getColumns (abridged: the catalog joins and helpers it uses).
    const gc = await c.query({
      text: `SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, pg_catalog.pg_get_expr(def.adbin, def.adrelid) AS adsrc,
               dsc.description, t.typbasetype, t.typtype
             FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON (c.relnamespace = n.oid)
             JOIN pg_catalog.pg_attribute a ON (a.attrelid = c.oid) JOIN pg_catalog.pg_type t ON (a.atttypid = t.oid)
             LEFT JOIN pg_catalog.pg_attrdef def ON (a.attrelid = def.adrelid AND a.attnum = def.adnum)
             LEFT JOIN pg_catalog.pg_description dsc ON (c.oid = dsc.objoid AND a.attnum = dsc.objsubid)
             LEFT JOIN pg_catalog.pg_class dc ON (dc.oid = dsc.classoid AND dc.relname = 'pg_class')
             WHERE c.relkind IN ('r','p','v','f','m') AND a.attnum > 0 AND NOT a.attisdropped AND c.relname LIKE $1 ORDER BY a.attnum`,
      values: ['orders'],
    });
    assert.deepEqual(gc.rows.map((r) => r.attname), ['id', 'customer_id', 'total', 'status', 'created_at']);
    // postgres.js fetches array types from pg_type when it connects.
    const sql = postgres({ host: '127.0.0.1', port: fx.sg.port, user: 'alice', password: await fx.token('orders:read'), database: DB, max: 1, onnotice: () => undefined });
    try {
      const rows = await sql`SELECT array_agg(id ORDER BY id) AS ids FROM orders WHERE id <= ${3}`;
      assert.deepEqual(rows[0]!.ids, [1, 2, 3]);
    } finally {
      await sql.end();
    }
  });
});
