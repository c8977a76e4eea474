/**
 * The scope policy, end to end: a table of statements run THROUGH scopegate against a real
 * PostgreSQL, with real tokens for five scope sets, in three protocols (pg simple Query, pg
 * extended Parse/Bind/Execute, postgres.js named prepared statements).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import postgres from 'postgres';
import { DB, startFixture, type Fixture } from './scope.fixture.test.js';

/**
 * Expected outcome per scope set, in the order of SETS:
 *  a  allowed by scopegate and succeeds in PostgreSQL
 *  d  denied by scopegate: 42501 `permission denied: ...` with a hint
 *  s  denied by scopegate as unparseable: 42601
 *  q  allowed by scopegate, refused by PostgreSQL itself (second line of defence)
 *  n  refused by scopegate with 0A000 (SQL-level PREPARE/EXECUTE in transaction pooling mode)
 *  -  not run for this set (it would damage the fixture for the others)
 */
type Letter = 'a' | 'd' | 's' | 'q' | 'n' | '-';
const SETS = ['', 'orders:read', 'orders:write', 'admin', 'orders:read orders:write'] as const;
const SET_NAMES = ['none', 'read', 'write', 'admin', 'read+write'];

interface Case {
  group: string;
  sql: string;
  expect: string; // five letters
  /** Exact message expected for the orders:read set (when it is denied). */
  readMsg?: string;
  /** Several statements in one message: extended protocol cannot carry it (42601 when allowed). */
  multi?: boolean;
}

const C = (group: string, sql: string, expect: string, more: Partial<Case> = {}): Case => ({ group, sql, expect, ...more });

const CORPUS: Case[] = [
  // plain reads
  C('read', 'SELECT * FROM orders', 'daaaa'),
  C('read', 'SELECT id, total FROM orders WHERE total > 10 ORDER BY created_at', 'daaaa'),
  C('read', 'SELECT * FROM order_items', 'daaaa'),
  C('read', 'SELECT * FROM customers', 'dddad', { readMsg: 'permission denied: select on public.customers.*' }),
  C('read', 'SELECT id, name, country FROM customers', 'dadaa'),
  C('read', 'SELECT email FROM customers', 'dddad', { readMsg: 'permission denied: select on public.customers.email' }),
  C('read', 'SELECT c.email FROM customers c', 'dddad', { readMsg: 'permission denied: select on public.customers.email' }),
  C('read', 'SELECT count(*) FROM customers', 'dadaa'),
  C('read', "SELECT name FROM customers WHERE email = 'x'", 'dddad'),
  C('read', 'SELECT name FROM customers ORDER BY email', 'dddad'),
  C('read', 'SELECT * FROM secrets', 'dddad', { readMsg: 'permission denied: select on public.secrets' }),
  C('read', 'TABLE orders', 'daaaa'),
  C('read', 'TABLE secrets', 'dddad'),
  C('read', 'SELECT 1', 'aaaaa'),
  C('read', 'SELECT now()', 'aaaaa'),
  C('read', 'VALUES (1), (2)', 'aaaaa'),
  C('read', 'SELECT current_user', 'aaaaa'),
  C('read', "SELECT has_database_privilege(current_database(), 'connect')", 'aaaaa'),
  C('read', 'SELECT * FROM ONLY orders', 'daaaa'),
  C('read', 'SELECT * FROM orders o, order_items i WHERE i.order_id = o.id', 'daaaa'),
  C('read', 'SELECT (SELECT count(*) FROM order_items) AS n', 'daaaa'),
  C('read', 'SELECT count(*) FILTER (WHERE total > 5) FROM orders', 'daaaa'),
  C('read', 'SELECT id FROM orders ORDER BY total DESC LIMIT 3', 'daaaa'),
  C('read', 'SELECT name, country FROM customers WHERE id = 1', 'dadaa'),
  C('read', "SELECT c.name FROM customers c WHERE c.country = 'UK'", 'dadaa'),
  C('read', 'SELECT * FROM customers WHERE false', 'dddad'),
  C('read', "SELECT id FROM customers c WHERE c.email LIKE '%@%'", 'dddad'),
  C('read', 'SELECT customers.email FROM customers', 'dddad'),
  C('read', 'SELECT 1 FROM secrets LIMIT 0', 'dddad'),
  C('read', 'SELECT lower(name) FROM customers', 'dadaa'),
  C('read', "SELECT pg_catalog.lower('X')", 'aaaaa'),
  C('read', 'SELECT upper(value) FROM secrets', 'dddad'),
  C('read', "SELECT length(string_agg(value, ',')) FROM secrets", 'dddad'),
  C('read', 'SELECT xmlforest(value) FROM secrets', 'dddad'),
  // whole-row references of a column-restricted table
  C('whole-row', 'SELECT c FROM customers c', 'dddad'),
  C('whole-row', 'SELECT row_to_json(c) FROM customers c', 'dddad'),
  C('whole-row', 'SELECT to_jsonb(customers) FROM customers', 'dddad'),
  C('whole-row', 'SELECT c.* FROM customers c', 'dddad'),
  C('whole-row', 'SELECT row_to_json(o) FROM orders o', 'daaaa'),
  C('whole-row', 'SELECT x.a FROM customers x(a)', 'dddad'),
  // joins
  C('join', 'SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id', 'dadaa'),
  C('join', 'SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id', 'dddad'),
  C('join', 'SELECT * FROM orders JOIN order_items ON order_items.order_id = orders.id', 'daaaa'),
  C('join', 'SELECT * FROM orders o JOIN secrets s ON true', 'dddad'),
  C('join', 'SELECT o.id FROM orders o LEFT JOIN secrets s ON s.id = o.id', 'dddad'),
  C('join', 'SELECT * FROM (VALUES (1)) v(id) JOIN secrets USING (id)', 'dddad'),
  C('join', 'SELECT * FROM orders, LATERAL (SELECT value FROM secrets WHERE secrets.id = orders.id) s', 'dddad'),
  // case, quoting, U& identifiers
  C('case', 'SeLeCt * FrOm OrDeRs', 'daaaa'),
  C('case', 'SELECT * FROM ORDERS', 'daaaa'),
  C('case', 'SELECT * FROM "orders"', 'daaaa'),
  C('case', 'SELECT "email" FROM customers', 'dddad'),
  C('case', 'SELECT * FROM U&"\\0073ecrets"', 'dddad', { readMsg: 'permission denied: select on public.secrets' }),
  C('case', "SELECT * FROM U&\"!0073ecrets\" UESCAPE '!'", 'dddad'),
  C('case', 'SELECT U&"\\0065mail" FROM customers', 'dddad', { readMsg: 'permission denied: select on public.customers.email' }),
  C('case', 'select * from public."secrets"', 'dddad'),
  C('case', 'SELECT NAME, "name" FROM CUSTOMERS', 'dadaa'),
  C('case', 'SELECT * FROM "public".SECRETS', 'dddad'),
  C('case', 'SELECT * FROM PUBLIC.secrets', 'dddad'),
  C('case', 'SELECT "customers"."email" FROM "public"."customers"', 'dddad'),
  // schema and catalog qualification
  C('schema', 'SELECT * FROM public.orders', 'daaaa'),
  C('schema', 'SELECT * FROM "public"."orders"', 'daaaa'),
  C('schema', `SELECT * FROM ${DB}.public.orders`, 'daaaa'),
  C('schema', `SELECT * FROM ${DB}.public.secrets`, 'dddad'),
  C('schema', 'SELECT * FROM public.secrets', 'dddad'),
  C('schema', 'SELECT relname FROM pg_catalog.pg_class LIMIT 1', 'daaaa'),
  C('schema', 'SELECT relname FROM pg_class LIMIT 1', 'daaaa'),
  C('schema', 'SELECT table_name FROM information_schema.tables LIMIT 1', 'daaaa'),
  // comments
  C('comment', 'SELECT * FROM /* orders */ secrets', 'dddad'),
  C('comment', 'SELECT * FROM orders -- ; DELETE FROM orders', 'daaaa'),
  C('comment', 'SELECT /* nested /* comment */ still comment */ * FROM secrets', 'dddad'),
  C('comment', 'SELECT * FROM orders /* nested /* ; */ DELETE FROM orders */', 'daaaa'),
  C('comment', '/* x */ DELETE /* y */ FROM orders WHERE id = -1', 'dddad', { readMsg: 'permission denied: delete on public.orders' }),
  C('comment', 'SELECT * FROM orders WHERE id = 1 --\n; DELETE FROM orders WHERE id = -1', 'dddad', { multi: true }),
  C('comment', 'select/**/*/**/from/**/secrets', 'dddad'),
  C('comment', 'SELECT * FROM\tsecrets', 'dddad'),
  C('comment', 'SELECT * FROM\nsecrets--', 'dddad'),
  C('comment', 'SELECT * FROM "public"."secrets" /* ; SELECT 1 */', 'dddad'),
  // dollar quoting and string forms
  C('quote', 'SELECT $$; DELETE FROM orders$$', 'aaaaa'),
  C('quote', 'SELECT $x$ $$ $x$, * FROM secrets', 'dddad'),
  C('quote', "SELECT E'\\\\'; DELETE FROM orders WHERE id = -1; --'", 'dddad', { multi: true }),
  C('quote', "SELECT 'a'';DELETE FROM orders' FROM orders", 'daaaa'),
  C('quote', 'SELECT $tag$a$tag$ || value FROM secrets', 'dddad'),
  C('quote', "SELECT E'\\x41' || value FROM secrets", 'dddad'),
  C('quote', 'SELECT * FROM orders WHERE status = $$x$$ UNION SELECT id, null, 0, value, now() FROM secrets', 'dddad'),
  // CTEs
  C('cte', 'WITH x AS (SELECT * FROM secrets) SELECT 1', 'dddad'),
  C('cte', 'WITH orders AS (SELECT 1 AS id) SELECT * FROM orders', 'aaaaa'),
  C('cte', 'WITH secrets AS (SELECT id FROM orders) SELECT * FROM secrets', 'daaaa'),
  C('cte', 'WITH d AS (DELETE FROM orders WHERE id = -1 RETURNING id) SELECT * FROM d', 'dddad', { readMsg: 'permission denied: delete on public.orders' }),
  C('cte', 'WITH u AS (UPDATE orders SET status = status WHERE id = -1 RETURNING id) SELECT count(*) FROM u', 'ddaaa'),
  C('cte', 'WITH d AS (DELETE FROM order_items WHERE id = -1 RETURNING id) SELECT * FROM d', 'ddaaa'),
  C('cte', 'WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t', 'aaaaa'),
  C('cte', 'WITH i AS (INSERT INTO secrets SELECT id, value FROM secrets WHERE false RETURNING 1) SELECT 1', 'dddad'),
  C('cte', 'WITH a AS (SELECT id FROM orders), b AS (SELECT id FROM a) SELECT * FROM b', 'daaaa'),
  C('cte', 'WITH a AS (SELECT 1) SELECT * FROM secrets', 'dddad'),
  C('cte', 'WITH a AS MATERIALIZED (SELECT * FROM secrets) SELECT count(*) FROM a', 'dddad'),
  // nested subqueries
  C('subquery', 'SELECT * FROM orders WHERE id IN (SELECT id FROM secrets)', 'dddad'),
  C('subquery', 'SELECT (SELECT value FROM secrets LIMIT 1)', 'dddad'),
  C('subquery', 'SELECT * FROM (SELECT * FROM (SELECT * FROM secrets) a) b', 'dddad'),
  C('subquery', "SELECT * FROM orders WHERE EXISTS (SELECT 1 FROM customers c WHERE c.email = 'x')", 'dddad'),
  C('subquery', 'SELECT * FROM orders o WHERE EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id)', 'daaaa'),
  C('subquery', 'SELECT * FROM generate_series(1, (SELECT count(*) FROM secrets))', 'dddad'),
  C('subquery', 'SELECT EXISTS (SELECT 1 FROM secrets)', 'dddad'),
  C('subquery', 'SELECT array(SELECT value FROM secrets)', 'dddad'),
  C('subquery', 'SELECT * FROM orders WHERE total > ALL (SELECT id FROM secrets)', 'dddad'),
  C('subquery', "SELECT id FROM orders WHERE customer_id IN (SELECT c.id FROM customers c WHERE c.country = 'UK')", 'dadaa'),
  // set operations
  C('setop', 'SELECT id FROM orders UNION SELECT id FROM secrets', 'dddad'),
  C('setop', 'SELECT id FROM orders UNION ALL SELECT id FROM order_items', 'daaaa'),
  C('setop', 'SELECT id FROM orders INTERSECT SELECT id FROM customers', 'dadaa'),
  C('setop', 'SELECT id FROM orders EXCEPT SELECT id FROM secrets', 'dddad'),
  C('setop', 'SELECT name FROM customers UNION SELECT email FROM customers', 'dddad'),
  // writes
  C('write', 'INSERT INTO orders (customer_id, total) VALUES (1, 5)', 'ddaaa', { readMsg: 'permission denied: insert on public.orders.customer_id' }),
  C('write', 'INSERT INTO orders (customer_id, total) VALUES (1, 5) RETURNING id', 'ddaaa'),
  C('write', "UPDATE orders SET status = 'paid' WHERE id = -1", 'ddaaa', { readMsg: 'permission denied: update on public.orders.status' }),
  C('write', 'DELETE FROM orders WHERE id = -1', 'dddad', { readMsg: 'permission denied: delete on public.orders' }),
  C('write', 'DELETE FROM order_items WHERE id = -1', 'ddaaa'),
  C('write', 'INSERT INTO secrets SELECT id, value FROM secrets WHERE false', 'dddad'),
  C('write', 'UPDATE secrets SET value = value WHERE false', 'dddad'),
  C('write', 'TRUNCATE orders', 'ddd-d', { readMsg: 'permission denied: truncate on public.orders' }),
  C('write', 'MERGE INTO orders o USING (SELECT -1 AS id) s ON o.id = s.id WHEN MATCHED THEN DELETE', 'dddad'),
  C('write', "MERGE INTO orders o USING (SELECT -1 AS id) s ON o.id = s.id WHEN MATCHED THEN UPDATE SET status = 'x'", 'ddaaa'),
  C('write', 'INSERT INTO orders (id, customer_id, total) VALUES (-5, 1, 1) ON CONFLICT (id) DO UPDATE SET total = excluded.total', 'ddaaa'),
  C('write', 'UPDATE orders SET total = total WHERE id IN (SELECT id FROM secrets)', 'dddad'),
  C('write', "UPDATE orders o SET status = 'x' FROM customers c WHERE c.id = o.customer_id AND c.email = 'nobody'", 'dddad'),
  C('write', "UPDATE orders o SET status = o.status FROM customers c WHERE c.id = o.customer_id AND c.name = 'nobody'", 'dddad'),
  C('write', 'DELETE FROM order_items i USING orders o WHERE o.id = i.order_id AND o.id = -1', 'ddaaa'),
  C('write', "INSERT INTO order_items (order_id, sku) SELECT id, 'x' FROM orders WHERE false", 'ddaaa'),
  C('write', "INSERT INTO order_items (order_id, sku) VALUES (1, 'x') RETURNING *", 'ddaaa'),
  C('write', 'UPDATE order_items SET qty = qty WHERE id = -1 RETURNING id', 'ddaaa'),
  C('write', 'UPDATE customers SET name = name WHERE id = -1', 'dddad'),
  C('write', 'DELETE FROM customers WHERE id = -1', 'dddad'),
  C('write', 'DELETE FROM secrets WHERE id = -1', 'dddad'),
  C('write', 'INSERT INTO orders (customer_id, total) SELECT id, 1 FROM customers WHERE false', 'dddad'),
  C('write', "INSERT INTO customers (name) VALUES ('x') RETURNING email", 'dddad'),
  C('write', 'SELECT * FROM orders FOR UPDATE', 'ddaaa', { readMsg: 'permission denied: lock on public.orders' }),
  C('write', 'SELECT * FROM orders WHERE id = 1 FOR UPDATE OF orders', 'ddaaa'),
  C('write', 'SELECT * FROM orders FOR SHARE', 'ddaaa'),
  C('write', 'SELECT id, name FROM customers FOR UPDATE', 'dddad'),
  C('write', 'SELECT public.place_order(1, 9.5)', 'ddaaa', { readMsg: 'permission denied: execute on function public.place_order' }),
  C('write', 'SELECT place_order(1, 9.5)', 'ddaaa'),
  C('write', 'SELECT * FROM place_order(1, 2)', 'ddaaa'),
  C('write', 'SELECT place_order(1, 1) FROM secrets LIMIT 0', 'dddad'),
  C('write', "SELECT nextval('orders_id_seq')", 'dddad'),
  C('write', 'NOTIFY ch', 'dddad'),
  C('write', "SELECT pg_notify('ch', 'x')", 'dddad'),
  // EXPLAIN
  C('explain', 'EXPLAIN SELECT * FROM orders', 'daaaa'),
  C('explain', 'EXPLAIN SELECT * FROM secrets', 'dddad'),
  C('explain', 'EXPLAIN ANALYZE DELETE FROM orders WHERE id = -1', 'dddad', { readMsg: 'permission denied: delete on public.orders' }),
  C('explain', 'EXPLAIN (ANALYZE, FORMAT JSON) UPDATE secrets SET value = value WHERE false', 'dddad'),
  C('explain', "EXPLAIN ANALYZE INSERT INTO order_items (order_id, sku) VALUES (1, 'x')", 'ddaaa'),
  C('explain', 'explain analyze with d as (delete from orders where id = -1 returning 1) select 1', 'dddad'),
  C('explain', 'EXPLAIN (ANALYZE) UPDATE orders SET status = status WHERE id = -1', 'ddaaa'),
  // multi-statement messages
  C('multi', 'SELECT 1; DELETE FROM orders WHERE id = -1', 'dddad', { multi: true, readMsg: 'permission denied: delete on public.orders' }),
  C('multi', 'SELECT * FROM orders; SELECT * FROM secrets', 'dddad', { multi: true }),
  C('multi', 'SELECT * FROM orders; SELECT * FROM order_items', 'daaaa', { multi: true }),
  C('multi', 'BEGIN; SELECT 1 FROM orders; COMMIT; DELETE FROM orders WHERE id = -1', 'dddad', { multi: true }),
  C('multi', 'SELECT 1; COMMIT; DELETE FROM orders WHERE id = -1', 'dddad', { multi: true }),
  C('multi', 'SELECT * FROM orders; UPDATE orders SET status = status WHERE id = -1', 'ddaaa', { multi: true }),
  C('multi', 'SELECT id, name FROM customers; UPDATE orders SET status = status WHERE id = -1', 'dddad', { multi: true }),
  C('multi', 'SELECT 1;;; DELETE FROM order_items WHERE id = -1', 'ddaaa', { multi: true }),
  C('multi', 'SELECT 1 FROM orders; SET ROLE app_admin', 'ddd-d', { multi: true }),
  C('multi', "SELECT 'x'; DROP TABLE secrets", 'ddd-d', { multi: true }),
  C('multi', "SELECT 1; SELECT set_config('role', 'app_admin', false)", 'ddd-d', { multi: true }),
  // role and session changes (always forbidden without `all`)
  C('forbidden', 'SET ROLE app_admin', 'ddd-d', { readMsg: 'permission denied: SET ROLE' }),
  C('forbidden', 'SET ROLE NONE', 'ddd-d'),
  C('forbidden', 'RESET ROLE', 'ddd-d', { readMsg: 'permission denied: RESET ROLE' }),
  C('forbidden', 'SET "role" TO app_admin', 'ddd-d'),
  C('forbidden', 'SET LOCAL ROLE app_admin', 'ddd-d'),
  C('forbidden', 'SET SESSION AUTHORIZATION app_admin', 'ddd-d', { readMsg: 'permission denied: SET SESSION AUTHORIZATION' }),
  C('forbidden', 'SET SESSION AUTHORIZATION DEFAULT', 'ddd-d'),
  C('forbidden', 'RESET SESSION AUTHORIZATION', 'ddd-d'),
  C('forbidden', "SELECT set_config('role', 'app_admin', false)", 'ddd-d', { readMsg: 'permission denied: execute on function pg_catalog.set_config' }),
  C('forbidden', "SELECT pg_catalog.set_config('role', 'app_admin', false)", 'ddd-d'),
  C('forbidden', "SELECT PG_CATALOG.SET_CONFIG('role', 'app_admin', true)", 'ddd-d'),
  C('forbidden', "SELECT \"set_config\"('role', 'app_admin', false)", 'ddd-d'),
  C('forbidden', "SELECT * FROM orders WHERE set_config('role', 'app_admin', true) IS NOT NULL", 'ddd-d'),
  C('forbidden', "SELECT set_config('search_path', 'pg_temp', false)", 'ddd-d'),
  C('forbidden', 'SET search_path TO pg_temp, public', 'ddd-d'),
  C('forbidden', 'SET scopegate.bypass = on', 'ddd-d'),
  C('forbidden', 'DO $$ BEGIN DELETE FROM orders WHERE id = -1; END $$', 'dddad', { readMsg: 'permission denied: DO (anonymous code block)' }),
  C('forbidden', "DO LANGUAGE plpgsql 'BEGIN NULL; END'", 'dddad'),
  C('forbidden', 'DO $body$ BEGIN EXECUTE $q$SET ROLE app_admin$q$; END $body$', 'ddd-d'),
  C('forbidden', 'PREPARE p AS DELETE FROM orders', 'nnnnn'),
  C('forbidden', 'EXECUTE p', 'nnnnn'),
  C('forbidden', 'DEALLOCATE p', 'nnnnn'),
  C('forbidden', "COPY orders FROM PROGRAM 'true'", 'dddqd', { readMsg: 'permission denied: COPY to or from PROGRAM' }),
  C('forbidden', "COPY orders TO '/tmp/scope-e2e-orders'", 'dddqd'),
  C('forbidden', "COPY (SELECT 1) TO PROGRAM 'cat'", 'dddqd'),
  C('forbidden', "COPY secrets FROM '/etc/hostname'", 'dddqd'),
  C('forbidden', "SELECT lo_import('/etc/passwd')", 'dddqd', { readMsg: 'permission denied: execute on function pg_catalog.lo_import' }),
  C('forbidden', "SELECT lo_export(1, '/tmp/x')", 'dddqd'),
  C('forbidden', "SELECT pg_read_file('/etc/passwd')", 'dddqd', { readMsg: 'permission denied: execute on function pg_catalog.pg_read_file' }),
  C('forbidden', "SELECT pg_catalog.pg_read_file('/etc/passwd')", 'dddqd'),
  C('forbidden', "SELECT pg_read_binary_file('/etc/passwd')", 'dddqd'),
  C('forbidden', "SELECT pg_ls_dir('.')", 'dddqd'),
  C('forbidden', "SELECT dblink('dbname=app', 'DELETE FROM orders')", 'dddqd', { readMsg: 'permission denied: execute on function pg_catalog.dblink' }),
  C('forbidden', "SELECT * FROM public.dblink('dbname=app', 'SELECT 1') AS t(x int)", 'dddqd'),
  C('forbidden', "SELECT dblink_exec('dbname=app', 'DELETE FROM orders')", 'dddqd'),
  C('forbidden', 'SELECT pg_terminate_backend(pg_backend_pid())', 'ddd-d'),
  C('forbidden', 'SELECT pg_reload_conf()', 'dddqd'),
  C('forbidden', 'SELECT pg_stat_reset()', 'dddqd'),
  C('forbidden', "SELECT query_to_xml('select * from secrets', true, true, '')", 'dddad'),
  C('forbidden', "SELECT table_to_xml('secrets', true, true, '')", 'dddad'),
  C('forbidden', "ALTER SYSTEM SET work_mem = '1MB'", 'dddqd'),
  C('forbidden', 'CREATE ROLE scope_evil', 'dddqd'),
  C('forbidden', 'GRANT app_admin TO app_reader', 'dddqd'),
  C('forbidden', 'GRANT SELECT ON secrets TO app_reader', 'ddd-d'),
  C('forbidden', "LOAD 'plpgsql'", 'ddd-d'),
  C('forbidden', 'CHECKPOINT', 'dddqd'),
  C('forbidden', "CREATE OR REPLACE FUNCTION public.sg_f() RETURNS int LANGUAGE sql AS 'SELECT 1'", 'dddad'),
  C('forbidden', 'VACUUM orders', 'ddd-d'),
  // DDL
  C('ddl', 'DROP TABLE secrets', 'ddd-d', { readMsg: 'permission denied: ddl on public.secrets' }),
  C('ddl', 'CREATE TABLE IF NOT EXISTS sg_scratch (id int)', 'dddad'),
  C('ddl', 'ALTER TABLE orders ADD COLUMN evil int', 'ddd-d'),
  C('ddl', 'CREATE INDEX IF NOT EXISTS sg_idx ON orders (total)', 'ddd-d'),
  // session settings and transaction control (always allowed)
  C('session', 'SHOW work_mem', 'aaaaa'),
  C('session', 'SET statement_timeout = 0', 'aaaaa'),
  C('session', "SET application_name = 'scope-e2e'", 'aaaaa'),
  C('session', 'SET LOCAL statement_timeout = 0', 'aaaaa'),
  C('session', 'RESET statement_timeout', 'aaaaa'),
  // unparseable
  C('syntax', 'SELEC * FROM orders', 'sssss'),
  C('syntax', 'SELECT * FROM orders WHERE', 'sssss'),
  C('syntax', 'SELECT 1; DELETE FROM', 'sssss', { multi: true }),
];

type Runner = (sql: string) => Promise<unknown>;
interface Failure { code?: string; message: string; hint?: string }

function check(letter: Letter, c: Case, setIdx: number, proto: string, res: { ok: true } | { ok: false; err: Failure }): string | null {
  const where = `[${proto}/${SET_NAMES[setIdx]}] ${JSON.stringify(c.sql)}`;
  const extended = proto !== 'simple';
  // Several statements in one extended-protocol Parse: PostgreSQL refuses them itself.
  const effective: Letter = extended && c.multi && letter === 'a' ? 'q' : letter;
  const e = res.ok ? null : res.err;
  switch (effective) {
    case 'a':
      return e === null ? null : `${where}: expected success, got ${e.code} ${e.message}`;
    case 'q':
      if (e === null) return `${where}: expected PostgreSQL to refuse it, got success`;
      if (/^permission denied: /.test(e.message) || /^unparseable statement/.test(e.message)) return `${where}: expected a PostgreSQL error, got scopegate's ${e.code} ${e.message}`;
      return null;
    case 'n':
      return e?.code === '0A000' ? null : `${where}: expected 0A000, got ${e === null ? 'success' : `${e.code} ${e.message}`}`;
    case 's':
      if (e === null) return `${where}: expected 42601, got success`;
      if (e.code !== '42601' || !/^unparseable statement/.test(e.message)) return `${where}: expected scopegate's 42601 unparseable, got ${e.code} ${e.message}`;
      return null;
    case 'd': {
      if (e === null) return `${where}: expected 42501, got success`;
      if (e.code !== '42501') return `${where}: expected 42501, got ${e.code} ${e.message}`;
      if (!/^permission denied: \S/.test(e.message)) return `${where}: message format: ${e.message}`;
      if (/ on /.test(e.message) && !/^permission denied: [a-z]+ on (function ([a-z_]+\.)?[a-z_]+|[a-z_]+\.[a-z_]+(\.([a-z_]+|\*))?|channel [a-z_]+)$/.test(e.message) && !/different roles/.test(e.message)) {
        return `${where}: message format: ${e.message}`;
      }
      if (typeof e.hint !== 'string' || e.hint === '') return `${where}: no hint with ${e.message}`;
      if (!/^(scope "[^"]+" grants it|no scope grants it|no single scope grants the whole statement.*|statements are granted by different scopes.*)$/.test(e.hint)) return `${where}: hint format: ${e.hint}`;
      if (setIdx === 1 && c.readMsg !== undefined && e.message !== c.readMsg) return `${where}: expected message ${c.readMsg}, got ${e.message}`;
      return null;
    }
    default:
      return null;
  }
}

describe('scope corpus through the proxy', { timeout: 240_000 }, () => {
  let fx: Fixture;
  const pgClients: pg.Client[] = [];
  const pjs: Array<ReturnType<typeof postgres>> = [];

  before(async () => {
    fx = await startFixture({ poolSize: 4 });
    await Promise.all(SETS.map((s) => fx.token(s)));
  });
  after(async () => {
    for (const s of pjs) await s.end({ timeout: 5 }).catch(() => undefined);
    await fx?.stop();
  });

  test('the corpus is big enough and well-formed', () => {
    assert.ok(CORPUS.length >= 150, `only ${CORPUS.length} statements`);
    for (const c of CORPUS) assert.match(c.expect, /^[adsqn-]{5}$/, c.sql);
    const texts = new Set(CORPUS.map((c) => c.sql));
    assert.equal(texts.size, CORPUS.length, 'duplicate statements');
  });

  const protocols: Array<{ name: string; make: (scope: string) => Promise<Runner> }> = [
    {
      name: 'simple',
      make: async (scope) => {
        const c = await fx.client(scope);
        pgClients.push(c);
        return (sql) => c.query(sql);
      },
    },
    {
      name: 'extended',
      make: async (scope) => {
        const c = await fx.client(scope);
        pgClients.push(c);
        return (sql) => c.query({ text: sql, queryMode: 'extended' } as pg.QueryConfig & { queryMode: 'extended' });
      },
    },
    {
      name: 'postgres.js',
      make: async (scope) => {
        const sql = postgres({ host: '127.0.0.1', port: fx.sg.port, user: 'alice', pass: await fx.token(scope), database: DB, max: 1, onnotice: () => undefined, fetch_types: false, connection: { application_name: 'scope-corpus' } });
        pjs.push(sql);
        // args.length === 0 would make postgres.js use the simple protocol: force Parse/Bind.
        return (text) => sql.unsafe(text, [], { prepare: true, simple: false } as { prepare: boolean });
      },
    },
  ];

  for (const proto of protocols) {
    test(`${CORPUS.length} statements × ${SETS.length} scope sets, ${proto.name} protocol`, async () => {
      const failures: string[] = [];
      let ran = 0;
      for (let s = 0; s < SETS.length; s++) {
        const runner = await proto.make(SETS[s]!);
        for (const c of CORPUS) {
          const letter = c.expect[s] as Letter;
          if (letter === '-') continue;
          let res: { ok: true } | { ok: false; err: Failure };
          try {
            await runner(c.sql);
            res = { ok: true };
          } catch (err) {
            const e = err as Failure;
            res = { ok: false, err: { code: e.code, message: String(e.message), hint: e.hint } };
          }
          ran++;
          const f = check(letter, c, s, proto.name, res);
          if (f !== null) failures.push(f);
        }
        // The connection is still usable after all those errors.
        await runner('SELECT 1');
      }
      assert.ok(ran > 700, `ran ${ran}`);
      assert.deepEqual(failures, [], `${failures.length} mismatches:\n${failures.join('\n')}`);
    });
  }

  test('none of the denied writes reached the tables: only allowed writers wrote', async () => {
    // Every INSERT/UPDATE/DELETE that executed left a row in write_log with its role.
    const r = await fx.su("SELECT DISTINCT tbl, op, split_part(by_role, '/', 2) AS role FROM write_log ORDER BY 1, 2, 3");
    for (const row of r.rows as Array<{ tbl: string; op: string; role: string }>) {
      if (row.tbl === 'secrets' || row.tbl === 'customers' || (row.tbl === 'orders' && row.op === 'DELETE')) {
        assert.equal(row.role, 'app_admin', `${row.op} on ${row.tbl} ran as ${row.role}`);
      } else {
        assert.ok(['app_writer', 'app_admin'].includes(row.role), `${row.op} on ${row.tbl} ran as ${row.role}`);
      }
    }
    const secrets = await fx.su('SELECT count(*)::int AS n FROM secrets');
    assert.equal(secrets.rows[0].n, 2);
  });
});
