import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { initParser, PolicyStore } from '../src/policy/index.js';
import { examplePolicyPath } from './policy.helpers.js';
import { PSQL_D, PSQL_D_ORDERS, PSQL_DT } from './policy.psql.js';

/**
 * Expected decisions for the example policy (config/policy.yaml), one letter per scope set:
 * [no scope, orders:read, orders:write, admin], a = allow, d = deny.
 */
type Expect = `${'a' | 'd'}${'a' | 'd'}${'a' | 'd'}${'a' | 'd'}`;
const SETS: readonly (readonly string[])[] = [[], ['orders:read'], ['orders:write'], ['admin']];
const SET_NAMES = ['none', 'orders:read', 'orders:write', 'admin'];

const CORPUS: ReadonlyArray<readonly [string, string, Expect]> = [
  // group, sql, expected
  ['read', 'SELECT * FROM orders', 'daaa'],
  ['read', 'SELECT id, total FROM orders WHERE total > 10 ORDER BY created_at', 'daaa'],
  ['read', 'SELECT * FROM order_items', 'daaa'],
  ['read', 'SELECT * FROM customers', 'ddda'],
  ['read', 'SELECT id, name, country FROM customers', 'dada'],
  ['read', 'SELECT email FROM customers', 'ddda'],
  ['read', 'SELECT c.email FROM customers c', 'ddda'],
  ['read', 'SELECT count(*) FROM customers', 'dada'],
  ['read', 'SELECT name FROM customers WHERE email = \'x\'', 'ddda'],
  ['read', 'SELECT name FROM customers ORDER BY email', 'ddda'],
  ['read', 'SELECT country, count(*) FROM customers GROUP BY country', 'dada'],
  ['read', 'SELECT name AS n FROM customers ORDER BY n', 'dada'],
  ['read', 'SELECT * FROM secrets', 'ddda'],
  ['read', 'SELECT name AS email FROM customers ORDER BY email', 'dada'],
  ['read', "SELECT name AS email FROM customers ORDER BY email || ''", 'ddda'],
  ['read', 'SELECT DISTINCT ON (email) name FROM customers', 'ddda'],
  ['read', 'SELECT name FROM customers WINDOW w AS (ORDER BY email)', 'ddda'],
  ['read', 'SELECT 1 FROM customers WHERE customers.email IS NOT NULL', 'ddda'],
  ['read', "INSERT INTO customers (name) VALUES ('x') RETURNING email", 'ddda'],
  ['read', 'SELECT * FROM generate_series(1, (SELECT count(*) FROM secrets))', 'ddda'],
  ['read', 'EXPLAIN EXECUTE p', 'ddda'],
  ['read', 'SELECT 1', 'aaaa'],
  ['read', 'SELECT now()', 'aaaa'],
  ['read', 'SELECT * FROM public.orders', 'daaa'],
  ['read', 'SELECT * FROM "public"."orders"', 'daaa'],
  ['read', 'SELECT * FROM app.public.orders', 'daaa'],
  ['read', 'SELECT * FROM other.orders', 'ddda'],
  ['read', 'TABLE orders', 'daaa'],
  ['read', 'TABLE secrets', 'ddda'],
  ['read', 'VALUES (1), (2)', 'aaaa'],
  ['read', 'SELECT * FROM orders TABLESAMPLE SYSTEM (10)', 'daaa'],
  // case and quoting
  ['case', 'SeLeCt * FrOm OrDeRs', 'daaa'],
  ['case', 'SELECT * FROM ORDERS', 'daaa'],
  ['case', 'SELECT * FROM "Orders"', 'ddda'],
  ['case', 'SELECT * FROM "ORDERS"', 'ddda'],
  ['case', 'SELECT "Email" FROM customers', 'ddda'],
  ['case', 'SELECT "email" FROM customers', 'ddda'],
  ['case', 'SELECT NAME, "name" FROM CUSTOMERS', 'dada'],
  ['case', 'SELECT * FROM U&"\\0073ecrets"', 'ddda'],
  ['case', 'SELECT * FROM U&"!0073ecrets" UESCAPE \'!\'', 'ddda'],
  ['case', 'SELECT U&"\\0065mail" FROM customers', 'ddda'],
  ['case', 'select * from "secrets"', 'ddda'],
  ['case', 'select * from public."secrets"', 'ddda'],
  // whole-row references
  ['whole-row', 'SELECT c FROM customers c', 'ddda'],
  ['whole-row', 'SELECT customers FROM customers', 'ddda'],
  ['whole-row', 'SELECT row_to_json(c) FROM customers c', 'ddda'],
  ['whole-row', 'SELECT to_jsonb(customers) FROM customers', 'ddda'],
  ['whole-row', 'SELECT (c).email FROM customers c', 'ddda'],
  ['whole-row', 'SELECT c.* FROM customers c', 'ddda'],
  ['whole-row', 'SELECT o FROM orders o', 'daaa'],
  ['whole-row', 'SELECT row_to_json(o) FROM orders o', 'daaa'],
  ['whole-row', 'SELECT o.*, c.name FROM orders o JOIN customers c ON c.id = o.customer_id', 'dada'],
  ['whole-row', 'SELECT x.id FROM customers x(email)', 'ddda'],
  ['whole-row', 'SELECT hstore(c) FROM customers c', 'ddda'],
  // joins and column resolution
  ['join', 'SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id', 'dada'],
  ['join', 'SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id', 'ddda'],
  ['join', 'SELECT name FROM orders o JOIN customers c ON c.id = o.customer_id', 'dada'],
  ['join', 'SELECT email FROM orders o JOIN customers c ON c.id = o.customer_id', 'ddda'],
  ['join', 'SELECT * FROM orders JOIN order_items ON order_items.order_id = orders.id', 'daaa'],
  ['join', 'SELECT * FROM orders o JOIN secrets s ON true', 'ddda'],
  ['join', 'SELECT o.id FROM orders o LEFT JOIN secrets s ON s.id = o.id', 'ddda'],
  ['join', 'SELECT * FROM orders NATURAL JOIN customers', 'ddda'],
  ['join', 'SELECT o.id FROM orders o JOIN customers c USING (id)', 'dada'],
  ['join', 'SELECT j.email FROM (customers c JOIN orders o ON true) AS j', 'ddda'],
  ['join', 'SELECT public.customers.email FROM public.customers', 'ddda'],
  ['join', 'SELECT public.customers.name FROM public.customers', 'dada'],
  ['join', 'SELECT * FROM orders, order_items', 'daaa'],
  // subqueries anywhere
  ['subquery', "SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE country = 'GB')", 'dada'],
  ['subquery', "SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE email LIKE '%x')", 'ddda'],
  ['subquery', 'SELECT (SELECT max(value) FROM secrets) FROM orders', 'ddda'],
  ['subquery', 'SELECT * FROM orders WHERE EXISTS (SELECT 1 FROM secrets)', 'ddda'],
  ['subquery', 'SELECT * FROM (SELECT * FROM (SELECT id FROM secrets) a) b', 'ddda'],
  ['subquery', 'SELECT * FROM (SELECT id, name FROM customers) sub', 'dada'],
  ['subquery', 'SELECT sub.* FROM (SELECT * FROM customers) sub', 'ddda'],
  ['subquery', 'SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id)', 'dada'],
  ['subquery', "SELECT id FROM customers WHERE EXISTS (SELECT 1 FROM orders WHERE email = 'x')", 'ddda'],
  ['subquery', 'SELECT o.id, (SELECT c.name FROM customers c WHERE c.id = o.customer_id) FROM orders o', 'dada'],
  ['subquery', 'SELECT count(*) FROM orders GROUP BY customer_id HAVING count(*) > (SELECT count(*) FROM secrets)', 'ddda'],
  ['subquery', 'SELECT * FROM orders ORDER BY (SELECT max(id) FROM secrets)', 'ddda'],
  ['subquery', 'SELECT * FROM orders o, LATERAL (SELECT * FROM order_items i WHERE i.order_id = o.id) x', 'daaa'],
  ['subquery', 'SELECT * FROM orders WHERE id = ANY (ARRAY(SELECT id FROM secrets))', 'ddda'],
  ['subquery', 'SELECT CASE WHEN EXISTS (SELECT 1 FROM secrets) THEN 1 END', 'ddda'],
  ['subquery', 'SELECT * FROM orders LIMIT (SELECT count(*) FROM secrets)', 'ddda'],
  // CTEs
  ['cte', 'WITH x AS (SELECT * FROM orders) SELECT * FROM x', 'daaa'],
  ['cte', 'WITH x AS (SELECT * FROM secrets) SELECT * FROM x', 'ddda'],
  ['cte', 'WITH secrets AS (SELECT 1 AS id) SELECT * FROM secrets', 'aaaa'],
  ['cte', 'WITH orders AS (SELECT * FROM secrets) SELECT * FROM orders', 'ddda'],
  ['cte', 'WITH orders AS (SELECT * FROM orders) SELECT * FROM orders', 'daaa'],
  ['cte', 'WITH secrets AS (SELECT * FROM secrets) SELECT 1', 'ddda'],
  ['cte', 'WITH a AS (SELECT 1), b AS (SELECT * FROM secrets) SELECT * FROM a, b', 'ddda'],
  ['cte', 'WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT * FROM t', 'aaaa'],
  ['cte', 'SELECT * FROM (WITH s AS (SELECT * FROM secrets) SELECT * FROM s) q', 'ddda'],
  ['cte', 'WITH x AS (SELECT 1) SELECT * FROM orders WHERE id IN (SELECT * FROM x)', 'daaa'],
  ['cte', 'WITH c AS (SELECT id, name FROM customers) SELECT * FROM c', 'dada'],
  ['cte', 'WITH c AS (SELECT id FROM customers) SELECT * FROM c JOIN customers USING (id)', 'ddda'],
  ['cte', 'WITH x AS MATERIALIZED (SELECT * FROM orders) SELECT * FROM x', 'daaa'],
  // writes hidden in reads
  ['cte-write', 'WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x', 'ddda'],
  ['cte-write', 'WITH x AS (DELETE FROM order_items RETURNING *) SELECT * FROM x', 'ddaa'],
  ['cte-write', 'WITH x AS (INSERT INTO orders (total) VALUES (1) RETURNING id) SELECT * FROM x', 'ddaa'],
  ['cte-write', 'WITH x AS (UPDATE orders SET total = 0 RETURNING id) SELECT * FROM x', 'ddaa'],
  ['cte-write', "WITH x AS (UPDATE secrets SET value = '' RETURNING id) SELECT 1", 'ddda'],
  ['cte-write', 'SELECT * FROM orders WHERE id IN (WITH d AS (DELETE FROM order_items RETURNING order_id) SELECT * FROM d)', 'ddaa'],
  // set operations
  ['setop', 'SELECT id FROM orders UNION SELECT id FROM secrets', 'ddda'],
  ['setop', 'SELECT id FROM orders UNION ALL SELECT order_id FROM order_items', 'daaa'],
  ['setop', 'SELECT id FROM orders INTERSECT SELECT id FROM customers', 'dada'],
  ['setop', 'SELECT id FROM orders EXCEPT SELECT email FROM customers', 'ddda'],
  ['setop', '(SELECT 1) UNION (SELECT value FROM secrets) ORDER BY 1', 'ddda'],
  // writes
  ['write', 'INSERT INTO orders (customer_id, total) VALUES (1, 10)', 'ddaa'],
  ['write', 'INSERT INTO orders VALUES (1)', 'ddaa'],
  ['write', "INSERT INTO customers (id, name) VALUES (1, 'x')", 'ddda'],
  ['write', 'INSERT INTO orders (customer_id) SELECT id FROM customers', 'ddda'],
  ['write', 'INSERT INTO orders (total) SELECT total FROM orders', 'ddaa'],
  ['write', 'INSERT INTO orders (id, total) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET total = excluded.total', 'ddaa'],
  ['write', 'INSERT INTO orders (id) VALUES (1) ON CONFLICT DO NOTHING', 'ddaa'],
  ['write', 'INSERT INTO orders (id) VALUES (1) RETURNING *', 'ddaa'],
  ['write', "INSERT INTO secrets VALUES (1, 'x')", 'ddda'],
  ['write', 'INSERT INTO orders (total) VALUES ((SELECT max(id) FROM secrets))', 'ddda'],
  ['write', 'UPDATE orders SET total = 0 WHERE id = 1', 'ddaa'],
  ['write', 'UPDATE orders SET total = total * 2', 'ddaa'],
  ['write', "UPDATE orders o SET total = 0 FROM customers c WHERE c.id = o.customer_id AND c.country = 'GB'", 'ddda'],
  ['write', 'UPDATE orders SET total = (SELECT value::numeric FROM secrets LIMIT 1)', 'ddda'],
  ['write', "UPDATE customers SET name = 'x'", 'ddda'],
  ['write', 'UPDATE orders SET (total, tenant_id) = (SELECT 1, tenant_id FROM orders LIMIT 1)', 'ddaa'],
  ['write', 'DELETE FROM order_items WHERE order_id = 1', 'ddaa'],
  ['write', 'DELETE FROM orders WHERE id = 1', 'ddda'],
  ['write', 'DELETE FROM order_items USING orders WHERE orders.id = order_items.order_id', 'ddaa'],
  ['write', 'DELETE FROM order_items USING secrets WHERE secrets.id = order_items.order_id', 'ddda'],
  ['write', 'DELETE FROM order_items RETURNING *', 'ddaa'],
  ['write', 'MERGE INTO orders o USING order_items i ON o.id = i.order_id WHEN MATCHED THEN UPDATE SET total = i.qty', 'ddaa'],
  ['write', 'MERGE INTO orders o USING order_items i ON o.id = i.order_id WHEN MATCHED THEN DELETE', 'ddda'],
  ['write', 'MERGE INTO orders o USING secrets s ON o.id = s.id WHEN NOT MATCHED THEN INSERT (id) VALUES (s.id)', 'ddda'],
  ['write', 'MERGE INTO order_items t USING orders s ON t.order_id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, \'x\', 1)', 'ddaa'],
  ['write', 'TRUNCATE orders', 'ddda'],
  ['write', 'TRUNCATE order_items', 'ddda'],
  // row locks
  ['lock', 'SELECT * FROM orders FOR UPDATE', 'ddaa'],
  ['lock', 'SELECT * FROM orders FOR SHARE', 'ddaa'],
  ['lock', 'SELECT * FROM orders FOR NO KEY UPDATE SKIP LOCKED', 'ddaa'],
  ['lock', 'SELECT id, name FROM customers FOR UPDATE', 'ddda'],
  ['lock', 'SELECT o.id FROM orders o JOIN order_items i ON i.order_id = o.id FOR UPDATE OF o', 'ddaa'],
  ['lock', 'SELECT * FROM (SELECT * FROM orders) s FOR UPDATE', 'ddaa'],
  ['lock', 'LOCK TABLE orders IN EXCLUSIVE MODE', 'ddaa'],
  ['lock', 'LOCK TABLE secrets', 'ddda'],
  // EXPLAIN
  ['explain', 'EXPLAIN SELECT * FROM orders', 'daaa'],
  ['explain', 'EXPLAIN SELECT * FROM secrets', 'ddda'],
  ['explain', 'EXPLAIN ANALYZE DELETE FROM orders', 'ddda'],
  ['explain', 'EXPLAIN (ANALYZE, BUFFERS) UPDATE orders SET total = 0', 'ddaa'],
  ['explain', 'EXPLAIN DELETE FROM orders', 'ddda'],
  ['explain', 'EXPLAIN ANALYZE SELECT * FROM secrets', 'ddda'],
  ['explain', 'EXPLAIN ANALYZE WITH x AS (DELETE FROM orders RETURNING 1) SELECT 1', 'ddda'],
  ['explain', 'EXPLAIN (ANALYZE) CREATE TABLE x AS SELECT 1', 'ddda'],
  // sequences
  ['sequence', "SELECT nextval('orders_id_seq')", 'ddda'],
  ['sequence', "SELECT currval('public.orders_id_seq')", 'ddda'],
  ['sequence', "SELECT setval('orders_id_seq', 1)", 'ddda'],
  ['sequence', 'SELECT nextval(tenant_id) FROM orders', 'ddda'],
  ['sequence', 'SELECT lastval()', 'aaaa'],
  // functions
  ['function', 'SELECT place_order(1, 10)', 'ddaa'],
  ['function', 'SELECT public.place_order(1, 10)', 'ddaa'],
  ['function', 'CALL place_order(1, 10)', 'ddaa'],
  ['function', 'SELECT * FROM place_order(1, 10)', 'ddaa'],
  ['function', 'SELECT place_order(customer_id, total) FROM orders', 'ddaa'],
  ['function', 'SELECT unknown_fn()', 'ddda'],
  ['function', 'SELECT pg_sleep(1)', 'ddda'],
  ['function', 'SELECT other.place_order(1, 2)', 'ddda'],
  ['function', 'SELECT public.lower(\'A\')', 'ddda'],
  ['function', 'SELECT pg_catalog.lower(\'A\')', 'aaaa'],
  ['function', 'SELECT count(*) FILTER (WHERE unknown_fn(id)) FROM orders', 'ddda'],
  ['function', 'SELECT lower(name), upper(country), length(name) FROM customers', 'dada'],
  ['function', 'SELECT count(*), sum(total), avg(total), min(total), max(total) FROM orders', 'daaa'],
  ['function', "SELECT date_trunc('day', created_at), to_char(now(), 'YYYY') FROM orders", 'daaa'],
  ['function', "SELECT json_build_object('id', id), jsonb_agg(total), string_agg(id::text, ',') FROM orders GROUP BY id", 'daaa'],
  ['function', 'SELECT extract(year from created_at), substring(tenant_id from 1 for 2), trim(tenant_id) FROM orders', 'daaa'],
  ['function', 'SELECT generate_series(1, 3), version(), current_user, session_user, current_timestamp', 'aaaa'],
  ['function', 'SELECT coalesce(total, 0), greatest(total, 1), least(total, 2), nullif(total, 0) FROM orders', 'daaa'],
  ['function', 'SELECT row_number() OVER (PARTITION BY customer_id ORDER BY total) FROM orders', 'daaa'],
  ['function', "SELECT abs(-1), round(1.5), coalesce(NULL, 'x'), md5('x'), gen_random_uuid()", 'aaaa'],
  // always forbidden without `all`
  ['forbidden', 'SET ROLE app_admin', 'ddda'],
  ['forbidden', 'SET ROLE NONE', 'ddda'],
  ['forbidden', 'RESET ROLE', 'ddda'],
  ['forbidden', 'SET SESSION AUTHORIZATION app_admin', 'ddda'],
  ['forbidden', 'RESET SESSION AUTHORIZATION', 'ddda'],
  ['forbidden', 'SET LOCAL ROLE app_admin', 'ddda'],
  ['forbidden', "set role = 'app_admin'", 'ddda'],
  ['forbidden', 'SET "role" TO app_admin', 'ddda'],
  ['forbidden', 'SET "ROLE" TO app_admin', 'ddda'],
  ['forbidden', 'SET search_path = evil, public', 'ddda'],
  ['forbidden', "SET SCHEMA 'evil'", 'ddda'],
  ['forbidden', 'set local search_path to evil', 'ddda'],
  ['forbidden', "SET scopegate.tenant = 'acme'", 'ddda'],
  ['forbidden', 'RESET scopegate.tenant', 'ddda'],
  ['forbidden', "SELECT set_config('role', 'app_admin', false)", 'ddda'],
  ['forbidden', "SELECT pg_catalog.set_config('role', 'app_admin', true)", 'ddda'],
  ['forbidden', 'SELECT "pg_catalog"."set_config"(\'search_path\', \'evil\', false)', 'ddda'],
  ['forbidden', "SELECT PG_CATALOG.SET_CONFIG('role', 'x', false)", 'ddda'],
  ['forbidden', "SELECT * FROM orders WHERE set_config('role', 'app_admin', true) IS NOT NULL", 'ddda'],
  ['forbidden', "SELECT set_config('scopegate.claims', '{}', true)", 'ddda'],
  ['forbidden', 'DO $$ BEGIN PERFORM 1; END $$', 'ddda'],
  ['forbidden', 'DO LANGUAGE plpgsql $x$ BEGIN DELETE FROM orders; END $x$', 'ddda'],
  ['forbidden', 'PREPARE p AS DELETE FROM orders', 'ddda'],
  ['forbidden', 'PREPARE q AS SELECT 1', 'ddda'],
  ['forbidden', 'EXECUTE p', 'ddda'],
  ['forbidden', 'DEALLOCATE ALL', 'ddda'],
  ["forbidden", "COPY orders TO PROGRAM 'cat > /tmp/x'", 'ddda'],
  ['forbidden', "COPY orders FROM '/etc/passwd'", 'ddda'],
  ['forbidden', "COPY (SELECT 1) TO '/tmp/x'", 'ddda'],
  ['forbidden', "SELECT lo_import('/etc/passwd')", 'ddda'],
  ['forbidden', "SELECT lo_export(1, '/tmp/x')", 'ddda'],
  ['forbidden', 'SELECT pg_catalog.lo_get(1)', 'ddda'],
  ['forbidden', "SELECT pg_read_file('/etc/passwd')", 'ddda'],
  ['forbidden', "SELECT pg_read_binary_file('/etc/passwd')", 'ddda'],
  ['forbidden', "SELECT * FROM pg_ls_dir('.')", 'ddda'],
  ['forbidden', "SELECT pg_stat_file('postgresql.conf')", 'ddda'],
  ['forbidden', "SELECT dblink_exec('dbname=app', 'DELETE FROM orders')", 'ddda'],
  ['forbidden', "SELECT * FROM dblink('dbname=app', 'SELECT 1') AS t(x int)", 'ddda'],
  ['forbidden', "SELECT public.dblink('x', 'y')", 'ddda'],
  ['forbidden', 'SELECT pg_terminate_backend(123)', 'ddda'],
  ['forbidden', 'SELECT pg_cancel_backend(123)', 'ddda'],
  ['forbidden', 'SELECT pg_reload_conf()', 'ddda'],
  ['forbidden', "SELECT query_to_xml('select * from secrets', true, false, '')", 'ddda'],
  ['forbidden', "ALTER SYSTEM SET work_mem = '1GB'", 'ddda'],
  ['forbidden', 'CREATE ROLE evil SUPERUSER', 'ddda'],
  ['forbidden', 'CREATE USER evil', 'ddda'],
  ['forbidden', 'ALTER ROLE app_reader SUPERUSER', 'ddda'],
  ['forbidden', 'ALTER USER app_reader SET search_path = evil', 'ddda'],
  ['forbidden', 'DROP ROLE app_reader', 'ddda'],
  ['forbidden', 'GRANT SELECT ON secrets TO app_reader', 'ddda'],
  ['forbidden', 'REVOKE SELECT ON orders FROM app_reader', 'ddda'],
  ['forbidden', 'GRANT app_admin TO app_reader', 'ddda'],
  ["forbidden", "LOAD 'evil'", 'ddda'],
  ['forbidden', "PREPARE TRANSACTION 'x'", 'ddda'],
  ['forbidden', "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'", 'ddda'],
  ['forbidden', 'CREATE TABLE t (a int)', 'ddda'],
  ['forbidden', 'CREATE TEMP TABLE t (a int)', 'ddda'],
  ['forbidden', 'DROP TABLE orders', 'ddda'],
  ['forbidden', 'ALTER TABLE orders ADD COLUMN x int', 'ddda'],
  ['forbidden', 'VACUUM orders', 'ddda'],
  ['forbidden', 'CHECKPOINT', 'ddda'],
  ['forbidden', 'SELECT * INTO new_table FROM orders', 'ddda'],
  ['forbidden', 'CREATE TABLE x AS SELECT * FROM orders', 'ddda'],
  ['forbidden', 'ALTER DATABASE app SET search_path = evil', 'ddda'],
  // LISTEN / NOTIFY
  ['notify', 'LISTEN orders_changed', 'ddda'],
  ['notify', 'NOTIFY orders_changed', 'ddda'],
  ['notify', "SELECT pg_notify('orders_changed', 'x')", 'ddda'],
  ['notify', 'UNLISTEN *', 'aaaa'],
  // transaction control and session settings
  ['session', 'BEGIN', 'aaaa'],
  ['session', 'START TRANSACTION ISOLATION LEVEL SERIALIZABLE', 'aaaa'],
  ['session', 'COMMIT', 'aaaa'],
  ['session', 'ROLLBACK', 'aaaa'],
  ['session', 'SAVEPOINT s1', 'aaaa'],
  ['session', 'RELEASE SAVEPOINT s1', 'aaaa'],
  ['session', 'ROLLBACK TO SAVEPOINT s1', 'aaaa'],
  ['session', 'SET TRANSACTION READ ONLY', 'aaaa'],
  ['session', "SET statement_timeout = '5s'", 'aaaa'],
  ['session', 'SET LOCAL statement_timeout = 0', 'aaaa'],
  ['session', "SET application_name = 'x'", 'aaaa'],
  ['session', "SET TIME ZONE 'UTC'", 'aaaa'],
  ['session', "SET TimeZone = 'UTC'", 'aaaa'],
  ['session', 'RESET statement_timeout', 'aaaa'],
  ['session', 'RESET ALL', 'aaaa'],
  ['session', 'SHOW search_path', 'aaaa'],
  ['session', 'SHOW ALL', 'aaaa'],
  ['session', 'DISCARD ALL', 'aaaa'],
  ['session', "SET NAMES 'UTF8'", 'aaaa'],
  ['session', 'SET CONSTRAINTS ALL DEFERRED', 'aaaa'],
  ['session', '', 'aaaa'],
  ['session', '-- just a comment', 'aaaa'],
  // multi-statement messages
  ['multi', 'SELECT 1; DELETE FROM orders', 'ddda'],
  ['multi', 'SELECT * FROM orders; COMMIT; DELETE FROM orders', 'ddda'],
  ['multi', 'BEGIN; SELECT * FROM orders; COMMIT', 'daaa'],
  ['multi', 'BEGIN; INSERT INTO orders (total) VALUES (1); COMMIT', 'ddaa'],
  ['multi', 'SELECT * FROM orders; SET ROLE app_admin', 'ddda'],
  ['multi', "select 1; select set_config('role', 'app_admin', false)", 'ddda'],
  ['multi', 'SELECT * FROM orders\n;\nDELETE FROM orders', 'ddda'],
  // text tricks
  ['text', 'SELECT /* DELETE FROM orders */ * FROM orders', 'daaa'],
  ['text', 'SELECT /* /* nested */ still comment */ * FROM secrets', 'ddda'],
  ['text', 'SELECT /* /* nested */ still comment; */ * FROM orders', 'daaa'],
  ['text', 'SELECT 1 /* /* */ */; DELETE FROM orders', 'ddda'],
  ['text', 'SELECT $$; DELETE FROM orders; $$', 'aaaa'],
  ['text', "SELECT $tag$ ' $tag$ FROM orders", 'daaa'],
  ['text', "SELECT $a$ $$ $a$; DELETE FROM orders", 'ddda'],
  ['text', "SELECT E'\\'; DELETE FROM orders; --'", 'aaaa'],
  ['text', 'SELECT 1 -- ; DELETE FROM orders', 'aaaa'],
  ['text', 'SELECT 1 --\n; DELETE FROM orders', 'ddda'],
  ['text', "SELECT 'DELETE FROM orders' FROM orders", 'daaa'],
  // the parser must read it, or it is denied (even for admin)
  ['unparseable', 'SELEC * FROM orders', 'dddd'],
  ['unparseable', 'SELECT * FROM orders WHERE', 'dddd'],
  ['unparseable', 'DELETE FROM orders; SELEC 1', 'dddd'],
  ['unparseable', 'SELECT /* unterminated', 'dddd'],
  ['unparseable', "SELECT $$ unterminated", 'dddd'],
  // catalog: read
  ['catalog', PSQL_DT, 'daaa'],
  ['catalog', PSQL_D, 'daaa'],
  ...PSQL_D_ORDERS.map((q) => ['catalog', q, 'daaa'] as const),
  ['catalog', 'SELECT * FROM pg_catalog.pg_class', 'daaa'],
  ['catalog', 'SELECT relname FROM pg_class', 'daaa'],
  ['catalog', 'SELECT * FROM information_schema.tables', 'daaa'],
  ['catalog', 'SELECT * FROM pg_settings', 'daaa'],
  ['catalog', "SELECT has_table_privilege('orders', 'select')", 'aaaa'],
  ['catalog', "SELECT 'orders'::regclass::oid", 'aaaa'],
  ["catalog", "UPDATE pg_catalog.pg_class SET relname = 'x'", 'ddda'],
  ['catalog', 'SELECT * FROM pg_catalog.pg_class c JOIN secrets s ON true', 'ddda'],
];

describe('policy corpus (config/policy.yaml)', () => {
  let store: PolicyStore;
  before(async () => {
    await initParser();
    store = PolicyStore.load(examplePolicyPath());
  });

  test('has at least 150 statements', () => {
    assert.ok(CORPUS.length >= 150, `only ${CORPUS.length}`);
  });

  for (const [group, sql, expected] of CORPUS) {
    test(`[${group}] ${sql.replace(/\s+/g, ' ').slice(0, 100)}`, () => {
      SETS.forEach((scopes, i) => {
        const d = store.check(sql, scopes);
        const want = expected[i] === 'a';
        assert.equal(d.allowed, want, `${SET_NAMES[i]}: expected ${want ? 'allow' : 'deny'}, got ${d.allowed ? 'allow' : 'deny'} (${d.error?.message ?? d.reason}; needs ${d.summary})`);
        if (!d.allowed) {
          assert.ok(d.error !== undefined);
          assert.equal(d.error.code, d.reason === 'unparseable' ? '42601' : '42501');
        }
      });
    });
  }
});

/** Clients holding several scopes: the first scope (policy order) covering the statement wins. */
describe('policy corpus: scope combinations', () => {
  let store: PolicyStore;
  before(async () => {
    await initParser();
    store = PolicyStore.load(examplePolicyPath());
  });
  const RW = ['orders:read', 'orders:write'];
  const cases: ReadonlyArray<readonly [readonly string[], string, string | null, string]> = [
    // scopes, sql, role (null = denied), reason
    [RW, 'SELECT * FROM orders', 'app_reader', 'granted'],
    [['orders:write', 'orders:read'], 'SELECT * FROM orders', 'app_reader', 'granted'],
    [RW, 'SELECT c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer_id', 'app_reader', 'granted'],
    [RW, 'INSERT INTO orders (total) VALUES (1)', 'app_writer', 'granted'],
    [RW, 'SELECT * FROM orders FOR UPDATE', 'app_writer', 'granted'],
    [RW, 'INSERT INTO orders (customer_id) SELECT id FROM customers', null, 'split_scopes'],
    [RW, 'SELECT * FROM orders; INSERT INTO orders (total) VALUES (1)', 'app_writer', 'granted'],
    [RW, 'SELECT c.name FROM customers c; INSERT INTO orders (total) VALUES (1)', null, 'role_conflict'],
    [RW, 'DELETE FROM orders', null, 'denied'],
    [RW, 'SET ROLE app_admin', null, 'forbidden'],
    [RW, 'BEGIN', 'app_reader', 'granted'],
    [['orders:read', 'admin'], 'SELECT * FROM secrets', 'app_admin', 'granted'],
    [['orders:read', 'admin'], 'SELECT * FROM orders', 'app_reader', 'granted'],
    [['admin', 'orders:read'], 'SELECT * FROM orders', 'app_reader', 'granted'],
    [['orders:read', 'admin'], 'SET ROLE app_reader', 'app_admin', 'granted'],
    [['unknown:scope'], 'SELECT * FROM orders', null, 'denied'],
    [['unknown:scope', 'orders:read'], 'SELECT * FROM orders', 'app_reader', 'granted'],
    [[], 'SELECT 1', null, 'granted'],
    [[], 'BEGIN; COMMIT', null, 'granted'],
    [['orders:write'], 'SELECT 1', 'app_writer', 'granted'],
  ];
  for (const [scopes, sql, role, reason] of cases) {
    test(`[${scopes.join(' ')}] ${sql}`, () => {
      const d = store.check(sql, scopes);
      assert.equal(d.reason, reason, d.error?.message);
      assert.equal(d.allowed, reason === 'granted');
      assert.equal(d.role, role);
    });
  }
});
