// Concern: a prepared statement or portal is judged by the policy in force when it runs, and only the client that made it can run or describe it.
/**
 * Real PostgreSQL 18 behind the real scopegate CLI (test/scope.fixture.test.ts), transaction
 * mode, pool_size 1, raw protocol messages (test/security/wire.ts) so Parse, Bind, Describe
 * and Execute can be split across a policy reload or across clients.
 *
 * (a) The unnamed statement is re-checked at Bind after a policy reload, as named ones are:
 *     orders:read loses customers.country; a statement parsed before the reload must not
 *     return a country after it (the database still grants it: only the policy stands between).
 * (b) With max_prepared_statements: 0 (names pass through), and with tracking on, a client
 *     cannot Bind, Describe or Execute a statement or portal another client left on the shared
 *     server connection: 26000 (34000 for portals), and neither the other client's rows nor
 *     its statement text reach it. `payroll` is granted to app_reader in the database but to
 *     no scope but admin in the policy, so the database would let the reader's role run the
 *     admin's statement: only scopegate stands between.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { serverNameFor } from '../../src/backend/server-statements.js';
import { DB, EXAMPLE_POLICY, startFixture, type Fixture } from '../scope.fixture.test.js';
import { Wire, errorsOf, fe, fe2, rowsOf, type Msg } from './wire.js';

const ORIGINAL = readFileSync(EXAMPLE_POLICY, 'utf8');
const WITHOUT_COUNTRY = ORIGINAL.replace('columns: [id, name, country] }', 'columns: [id, name] }');
const COUNTRY = `country-${randomUUID()}`;
const SALARY = `salary-${randomUUID()}`;
const PAYROLL_SQL = `
CREATE TABLE payroll (id int PRIMARY KEY, salary text NOT NULL);
INSERT INTO payroll VALUES (1, '${SALARY}');
GRANT SELECT ON payroll TO app_reader, app_admin;
UPDATE customers SET country = '${COUNTRY}' WHERE id = 1;
`;
const READ_COUNTRY = 'SELECT id, country FROM customers ORDER BY id';
const READ_PAYROLL = 'SELECT salary FROM payroll ORDER BY id';

const opened: Wire[] = [];
afterEach(() => { for (const w of opened.splice(0)) w.close(); });

async function open(fx: Fixture, scope: string, sub: string): Promise<Wire> {
  const w = await Wire.open(fx.sg.port, sub, DB, await fx.token(scope, sub));
  opened.push(w);
  return w;
}

/** The messages `w` received from index `from` on, as text. */
function textSince(w: Wire, from: number): string {
  return w.received.slice(from).map((m: Msg) => m.body.toString('utf8')).join('\n');
}

for (const tracking of [true, false] as const) {
  describe(`(a) the unnamed statement is re-checked at Bind after a policy reload (max_prepared_statements ${tracking ? 'default' : '0'})`, { timeout: 180_000 }, () => {
    let fx: Fixture;
    let policyFile: string;
    const reloads = (): number => fx.sg.logs.filter((l) => l.msg === 'policy reloaded').length;
    const setPolicy = async (text: string): Promise<void> => {
      if (readFileSync(policyFile, 'utf8') === text) return;
      const seen = reloads();
      writeFileSync(policyFile, text);
      fx.sg.proc.kill('SIGHUP');
      await fx.sg.waitForLog((l) => l.msg === 'policy reloaded' && fx.sg.logs.filter((x) => x.msg === 'policy reloaded').indexOf(l) >= seen);
    };

    before(async () => {
      assert.notEqual(WITHOUT_COUNTRY, ORIGINAL, 'the edit applies to config/policy.yaml');
      fx = await startFixture({ policy: 'copy', poolSize: 1, config: tracking ? {} : { pool: { mode: 'transaction', max_prepared_statements: 0 } } });
      policyFile = join(fx.dir, 'policy.yaml');
      await fx.su(PAYROLL_SQL);
    });
    after(async () => { await fx?.stop(); });
    afterEach(async () => { await setPolicy(ORIGINAL); });

    /** Parse '' (+ what `extra` adds) before the reload, then what `afterReload` sends; the country must not come back. */
    async function attempt(what: string, beforeReload: Buffer[], readiesBefore: number, afterReload: Buffer[], readiesAfter: number, between?: () => Promise<void>, codes = ['42501']): Promise<void> {
      const w = await open(fx, 'orders:read', 'reader');
      w.write(...beforeReload);
      const first = await w.untilReady(readiesBefore);
      assert.deepEqual(errorsOf(first.msgs), [], `${what}: the Parse is allowed before the reload`);
      await setPolicy(WITHOUT_COUNTRY);
      if (between) await between();
      const from = w.received.length;
      w.write(...afterReload);
      const { msgs, closed } = await w.untilReady(readiesAfter);
      assert.equal(closed, false);
      assert.ok(!textSince(w, from).includes(COUNTRY), `${what}: the revoked column was served after the reload: ${JSON.stringify(rowsOf(msgs))}`);
      const errs = errorsOf(msgs);
      assert.ok(errs.length >= 1, `${what}: no error after the reload`);
      assert.ok(codes.includes(errs[0]!.C!), JSON.stringify(errs[0]));
      if (errs[0]!.C === '42501') assert.match(errs[0]!.M ?? '', /customers\.country/);
      // The client goes on, under the new policy.
      assert.deepEqual(errorsOf(await w.query('SELECT 1')), []);
      assert.equal(errorsOf(await w.query(READ_COUNTRY))[0]?.C, '42501');
    }

    test('control: before the reload the statement returns the country', async () => {
      const w = await open(fx, 'orders:read', 'reader');
      w.write(fe.parse(READ_COUNTRY), fe.sync());
      await w.untilReady();
      w.write(fe.bind(), fe2.describePortal(), fe.execute(), fe.sync());
      const { msgs } = await w.untilReady();
      assert.ok(rowsOf(msgs).some((r) => r[1] === COUNTRY));
    });

    test('Parse \'\' + Sync, reload, Bind/Describe/Execute/Sync', async () => {
      await attempt('split', [fe.parse(READ_COUNTRY), fe.sync()], 1, [fe.bind(), fe2.describePortal(), fe.execute(), fe.sync()], 1);
    });

    test('Parse \'\' + Describe statement + Sync, reload, Bind/Execute/Sync', async () => {
      await attempt('described', [fe.parse(READ_COUNTRY), fe2.describeStatement(), fe.sync()], 1, [fe.bind(), fe.execute(), fe.sync()], 1);
    });

    test('inside one transaction: BEGIN, Parse \'\', reload, Bind/Execute, COMMIT', async () => {
      await attempt('in a transaction', [fe.query('BEGIN'), fe.parse(READ_COUNTRY), fe.sync()], 2, [fe.bind(), fe.execute(), fe.sync(), fe.query('ROLLBACK')], 2);
    });

    test('pipelined after the reload: Bind/Execute twice and a Query in one write', async () => {
      await attempt('pipelined', [fe.parse(READ_COUNTRY), fe.sync()], 1, [fe.bind(), fe.execute(), fe.sync(), fe.bind([], 'p'), fe.execute('p'), fe.sync(), fe.query('SELECT 1')], 3);
    });

    test('another client ran a statement in between (the unnamed statement is restored on the server)', async () => {
      const other = await open(fx, 'orders:read', 'other');
      await attempt('restored', [fe.parse(READ_COUNTRY), fe.sync()], 1, [fe.bind(), fe.execute(), fe.sync()], 1, async () => {
        other.write(fe2.step('SELECT id FROM orders ORDER BY id'), fe.sync());
        assert.deepEqual(errorsOf((await other.untilReady()).msgs), []);
        // Without tracking the other client's Parse replaced the unnamed statement: 26000 is honest.
      }, tracking ? ['42501'] : ['42501', '26000']);
    });

    if (tracking) {
      test('control: a named statement parsed before the reload is refused at Bind after it', async () => {
        const w = await open(fx, 'orders:read', 'reader');
        w.write(fe.parse(READ_COUNTRY, 's1'), fe.sync());
        await w.untilReady();
        await setPolicy(WITHOUT_COUNTRY);
        const from = w.received.length;
        w.write(fe.bind([], '', 's1'), fe.execute(), fe.sync());
        const { msgs } = await w.untilReady();
        assert.ok(!textSince(w, from).includes(COUNTRY));
        assert.equal(errorsOf(msgs)[0]?.C, '42501');
      });
    }
  });
}

for (const tracking of [false, true] as const) {
  describe(`(b) statements and portals another client left on the shared server connection (max_prepared_statements ${tracking ? 'default' : '0'})`, { timeout: 180_000 }, () => {
    let fx: Fixture;
    before(async () => {
      fx = await startFixture({ poolSize: 1, config: { pool: { mode: 'transaction', query_wait_timeout: '15s', ...(tracking ? {} : { max_prepared_statements: 0 }) } } });
      await fx.su(PAYROLL_SQL);
      // The policy is the only thing between the reader and payroll: the database allows it.
      const r = await fx.su('SELECT has_table_privilege(\'app_reader\', \'payroll\', \'select\') AS ok');
      assert.equal(r.rows[0].ok, true);
    });
    after(async () => { await fx?.stop(); });

    /** The admin leaves `setup` on the shared server connection and stays connected. */
    async function admin(setup: Buffer[], readies: number): Promise<{ w: Wire; pid: number }> {
      const a = await open(fx, 'admin', 'root');
      // First: a simple Query would drop the unnamed statement the setup may leave.
      const pid = Number(rowsOf(await a.query('SELECT pg_backend_pid()'))[0]![0]);
      a.write(...setup);
      const { msgs } = await a.untilReady(readies);
      assert.deepEqual(errorsOf(msgs), [], 'the admin\'s own statement works');
      return { w: a, pid };
    }

    /** The reader sends `msgs`, on the admin's server connection; it must get `code` and nothing of the admin's. */
    async function assertRefused(pid: number, what: string, send: Buffer[], readies: number, codes: string[]): Promise<void> {
      const b = await open(fx, 'orders:read', 'mallory');
      b.write(...send);
      const { msgs, closed } = await b.untilReady(readies);
      assert.equal(closed, false);
      const seen = b.text();
      assert.ok(!seen.includes(SALARY), `${what}: the reader received the admin's payroll rows: ${JSON.stringify(rowsOf(msgs))}`);
      assert.ok(!/payroll|salary/.test(seen), `${what}: the reader learned the admin's statement (text or columns): ${JSON.stringify(msgs.filter((m) => m.type === 'T' || m.type === 'E').map((m) => m.body.toString('utf8')))}`);
      const errs = errorsOf(msgs);
      assert.ok(errs.length >= 1, `${what}: no error`);
      assert.ok(codes.includes(errs[0]!.C!), `${what}: ${errs[0]!.C} ${errs[0]!.M}, expected ${codes.join(' or ')}`);
      const st = rowsOf(await b.query('SELECT pg_backend_pid(), current_user'));
      assert.deepEqual(st, [[String(pid), 'app_reader']], `${what}: the reader was on the admin's server connection and goes on as app_reader`);
    }

    const NAMED_FORMS: Array<[string, (n: string) => Buffer[], number]> = [
      ['Bind + Execute + Sync', (n) => [fe.bind([], 'pb', n), fe.execute('pb'), fe.sync()], 1],
      ['Bind to the unnamed portal + Describe portal + Execute', (n) => [fe.bind([], '', n), fe2.describePortal(), fe.execute(), fe.sync()], 1],
      ['Describe statement + Sync', (n) => [fe2.describeStatement(n), fe.sync()], 1],
      ['pipelined after a Parse of its own', (n) => [fe.parse('SELECT 1', `mine_${n}`), fe.bind([], '', `mine_${n}`), fe.execute(), fe.bind([], 'pb', n), fe.execute('pb'), fe.sync()], 1],
      ['inside a transaction block', (n) => [fe.query('BEGIN'), fe.bind([], 'pb', n), fe.execute('pb'), fe.sync(), fe.query('ROLLBACK')], 3],
      ['Bind with parameters the statement does not take', (n) => [fe.bind(['1'], 'pb', n), fe.execute('pb'), fe.sync()], 1],
    ];

    for (const [what, send, readies] of NAMED_FORMS) {
      test(`a statement name the admin parsed: ${what}: 26000, nothing of it reaches the reader`, async () => {
        const name = `stmt_${randomUUID().slice(0, 8)}`;
        const { pid } = await admin([fe.parse(READ_PAYROLL, name), fe.bind([], '', name), fe.execute(), fe.sync()], 1);
        await assertRefused(pid, what, send(name), readies, ['26000']);
      });
    }

    const UNNAMED_FORMS: Array<[string, Buffer[], number]> = [
      ['Bind \'\' + Execute + Sync', [fe.bind(), fe.execute(), fe.sync()], 1],
      ['Describe statement \'\' + Sync', [fe2.describeStatement(''), fe.sync()], 1],
      ['Bind \'\' + Describe portal + Execute, twice, pipelined', [fe.bind(), fe2.describePortal(), fe.execute(), fe.sync(), fe.bind(), fe.execute(), fe.sync()], 2],
    ];

    for (const [what, send, readies] of UNNAMED_FORMS) {
      test(`the unnamed statement the admin parsed: ${what}: 26000, nothing of it reaches the reader`, async () => {
        const { pid } = await admin([fe.parse(READ_PAYROLL), fe.sync()], 1);
        await assertRefused(pid, what, send, readies, ['26000']);
      });
    }

    const PORTAL_FORMS: Array<[string, (c: string) => Buffer[], number]> = [
      ['Execute of the portal', (c) => [fe.execute(c), fe.sync()], 1],
      ['Describe portal + Execute', (c) => [fe2.describePortal(c), fe.execute(c), fe.sync()], 1],
      ['FETCH ALL FROM the cursor (simple Query)', (c) => [fe.query(`FETCH ALL FROM ${c}`)], 1],
      ['FETCH in an extended batch', (c) => [fe2.step(`FETCH ALL FROM ${c}`), fe.sync()], 1],
    ];

    for (const [what, send, readies] of PORTAL_FORMS) {
      for (const how of ['simple', 'extended'] as const) {
        test(`a portal the admin created (DECLARE ... WITH HOLD, ${how}): ${what}: refused, nothing of it reaches the reader`, async () => {
          const cursor = `leak_${randomUUID().slice(0, 8)}`;
          const declare = `DECLARE ${cursor} CURSOR WITH HOLD FOR ${READ_PAYROLL}`;
          const { pid } = await admin(how === 'simple' ? [fe.query(declare)] : [fe2.step(declare), fe.sync()], 1);
          await assertRefused(pid, what, send(cursor), readies, ['34000', '26000']);
        });
      }
    }

    if (tracking) {
      test('the server-side name of the admin\'s statement (sg_ + hash of its text), bound by the reader: 26000', async () => {
        const tail = Buffer.concat([Buffer.from(`${READ_PAYROLL}\0`, 'utf8'), Buffer.from([0, 0])]);
        const serverName = serverNameFor(tail);
        assert.match(serverName, /^sg_/);
        const { pid } = await admin([fe.parse(READ_PAYROLL, 'stmt_hash'), fe.bind([], '', 'stmt_hash'), fe.execute(), fe.sync()], 1);
        // The admin's statement is on the server under that name (the oracle).
        const held = await fx.su(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${pid}`);
        assert.equal(held.rows[0].n, 1);
        for (const [what, send] of [
          ['Bind', [fe.bind([], 'pb', serverName), fe.execute('pb'), fe.sync()]],
          ['Describe', [fe2.describeStatement(serverName), fe.sync()]],
        ] as Array<[string, Buffer[]]>) {
          await assertRefused(pid, `${what} ${serverName}`, send, 1, ['26000']);
        }
      });
    }

    test('control: the reader\'s own named and unnamed statements work on the same connection', async () => {
      const name = `stmt_${randomUUID().slice(0, 8)}`;
      await admin([fe.parse(READ_PAYROLL, name), fe.bind([], '', name), fe.execute(), fe.sync()], 1);
      const b = await open(fx, 'orders:read', 'mallory');
      b.write(fe.parse('SELECT count(*)::int FROM orders', `own_${name}`), fe.bind([], '', `own_${name}`), fe.execute(), fe.sync(), fe2.step('SELECT 41 + 1'), fe.sync());
      const { msgs } = await b.untilReady(2);
      assert.deepEqual(errorsOf(msgs), []);
      const n = (await fx.su('SELECT count(*)::int AS n FROM orders')).rows[0].n as number;
      assert.deepEqual(rowsOf(msgs), [[String(n)], ['42']]);
      const e = errorsOf(await b.query(READ_PAYROLL));
      assert.equal(e[0]?.C, '42501', 'the policy refuses payroll to the reader');
    });
  });
}
