/**
 * The audit stream through the proxy: one JSON line (stream 'audit') per decision, with the
 * client's identity and the decision, literals removed from the statement; denials are logged
 * even with audit_sample 0; and `mode: audit` lets would-be-denied statements run (the
 * database grants still apply) while logging them as would_deny.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { startScopegate, type LogLine, type RunningScopegate } from './harness/scopegate.js';
import { AUTH, AUTH_PASSWORD, DB, errorOf, EXAMPLE_POLICY, SECRET, startFixture, type Fixture } from './scope.fixture.test.js';

const LITERAL = 'zz-secret-literal';

function isAudit(l: LogLine): boolean {
  return l.stream === 'audit';
}

describe('audit lines', { timeout: 120_000 }, () => {
  let fx: Fixture;
  const extra: RunningScopegate[] = [];
  const clients: pg.Client[] = [];

  /** Another scopegate on the same PostgreSQL, with `over` merged into the config. */
  const another = async (over: Record<string, unknown>): Promise<RunningScopegate> => {
    const sg = await startScopegate({
      databases: { [DB]: { url: fx.pg.url(DB, 'authenticator', AUTH_PASSWORD), pool_size: 2 } },
      auth: AUTH,
      policy: EXAMPLE_POLICY,
      log: { level: 'info' },
      ...over,
    }, { SG_SECRET: SECRET });
    extra.push(sg);
    return sg;
  };
  const connect = async (sg: RunningScopegate, scope: string, sub: string): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: sub, password: await fx.token(scope, sub), database: DB });
    c.on('error', () => undefined);
    await c.connect();
    clients.push(c);
    return c;
  };

  before(async () => { fx = await startFixture({ poolSize: 2 }); });
  after(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    for (const sg of extra) await sg.stop().catch(() => null);
    await fx?.stop();
  });

  test('allowed and denied statements each produce one complete audit line without literals', async () => {
    const c = await fx.client('orders:read', { sub: 'auditor' });
    await c.query(`SELECT id AS allowed_marker FROM orders WHERE status = '${LITERAL}'`);
    const e = await errorOf(() => c.query(`SELECT value AS denied_marker FROM secrets WHERE value = '${LITERAL}-2'`));
    assert.equal(e.code, '42501');
    await c.query({ text: 'SELECT id AS ext_marker FROM orders WHERE status = $1', values: [LITERAL] });

    const allow = await fx.sg.waitForLog((l) => isAudit(l) && String(l.statement).includes('allowed_marker'));
    const deny = await fx.sg.waitForLog((l) => isAudit(l) && String(l.statement).includes('denied_marker'));
    const ext = await fx.sg.waitForLog((l) => isAudit(l) && String(l.statement).includes('ext_marker'));

    for (const l of [allow, deny, ext]) {
      assert.equal(l.sub, 'auditor');
      assert.deepEqual(l.scopes, ['orders:read']);
      assert.equal(l.db, DB);
      assert.ok('role' in l, 'role field');
      assert.equal(typeof l.fingerprint, 'string');
      assert.ok(String(l.fingerprint).length > 0);
      assert.equal(typeof l.policy_version, 'string');
      assert.ok(String(l.policy_version).length > 0);
      assert.equal(typeof l.reason, 'string');
      assert.ok(!String(l.statement).includes(LITERAL), `literal in ${String(l.statement)}`);
    }
    assert.equal(allow.decision, 'allow');
    assert.equal(allow.role, 'app_reader');
    assert.match(String(allow.reason), /^granted/);
    assert.match(String(allow.statement), /status = \$1/);
    assert.equal(deny.decision, 'deny');
    assert.match(String(deny.reason), /permission denied: select on public\.secrets/);
    assert.match(String(deny.statement), /value = \$1/);
    assert.equal(ext.decision, 'allow');

    // Nowhere in scopegate's output (process log or audit) does the literal appear.
    for (const l of fx.sg.logs) assert.ok(!JSON.stringify(l).includes(LITERAL), `literal leaked in ${JSON.stringify(l)}`);
    // Exactly one line per decision.
    assert.equal(fx.audit().filter((l) => String(l.statement).includes('allowed_marker')).length, 1);
    assert.equal(fx.audit().filter((l) => String(l.statement).includes('denied_marker')).length, 1);
  });

  test('a denied statement padded with a megabyte of comment costs the audit a bounded line: text cut at 4096 characters, its length recorded', async () => {
    const c = await fx.client('orders:read', { sub: 'padder' });
    const pad = `/* ${'x'.repeat(1_000_000)} */`;
    const e = await errorOf(() => c.query(`SELECT value AS padded_marker FROM secrets ${pad}`));
    assert.equal(e.code, '42501');
    const line = await fx.sg.waitForLog((l) => isAudit(l) && l.sub === 'padder' && l.decision === 'deny');
    const statement = String(line.statement);
    assert.ok(statement.length <= 4096 + 3, `statement of ${statement.length} characters in the audit line`);
    assert.match(statement, /padded_marker/);
    assert.equal(typeof line.statement_length, 'number');
    assert.ok((line.statement_length as number) > 1_000_000, `statement_length ${String(line.statement_length)}`);
    assert.ok(JSON.stringify(line).length < 8192, 'the whole line stays small');
  });

  test('every statement of a run is audited exactly once (simple and extended)', async () => {
    const c = await fx.client('orders:read orders:write', { sub: 'counter' });
    const N = 30;
    for (let i = 0; i < N; i++) {
      if (i % 3 === 0) await c.query(`SELECT id AS m_${i} FROM orders LIMIT 1`);
      else if (i % 3 === 1) await c.query({ text: `SELECT id AS m_${i} FROM order_items WHERE id > $1 LIMIT 1`, values: [i] });
      else await errorOf(() => c.query(`SELECT value AS m_${i} FROM secrets`));
    }
    await fx.sg.waitForLog((l) => isAudit(l) && new RegExp(`\\bm_${N - 1}\\b`).test(String(l.statement)));
    for (let i = 0; i < N; i++) {
      const lines = fx.audit().filter((l) => new RegExp(`\\bm_${i}\\b`).test(String(l.statement)));
      assert.equal(lines.length, 1, `m_${i}: ${lines.length} audit lines`);
      const l = lines[0]!;
      assert.equal(l.sub, 'counter');
      assert.deepEqual([...(l.scopes as string[])].sort(), ['orders:read', 'orders:write']);
      assert.equal(l.decision, i % 3 === 2 ? 'deny' : 'allow', `m_${i}`);
      if (i % 3 !== 2) assert.equal(l.role, 'app_reader', `m_${i}: reads run under the first scope in policy order`);
    }
  });

  test('a prepared statement run N times is audited N times: its Parse once, each later Bind as "execute"', async () => {
    const c = await fx.client('orders:read', { sub: 'preparer' });
    const N = 5;
    // node-postgres prepares a named statement once per connection, then only binds it.
    for (let i = 0; i < N; i++) await c.query({ name: 'exec_marker_q', text: 'SELECT id AS exec_marker FROM orders WHERE id > $1 LIMIT 1', values: [i] });
    await c.query('SELECT 1 AS exec_marker_done');
    await fx.sg.waitForLog((l) => isAudit(l) && String(l.statement).includes('exec_marker_done'));
    const lines = fx.audit().filter((l) => String(l.statement).includes('exec_marker FROM'));
    assert.deepEqual(lines.map((l) => l.audit), ['statement', ...Array<string>(N - 1).fill('execute')]);
    for (const l of lines) {
      assert.equal(l.sub, 'preparer');
      assert.equal(l.decision, 'allow');
      assert.equal(l.role, 'app_reader');
      assert.equal(typeof l.policy_version, 'string');
    }
  });

  test('audit_sample 0: allowed statements are not audited, denials always are', async () => {
    const sg = await another({ log: { level: 'info', audit_sample: 0 } });
    const c = await connect(sg, 'orders:read', 'sampled');
    for (let i = 0; i < 10; i++) await c.query(`SELECT id AS s_ok_${i} FROM orders LIMIT 1`);
    for (let i = 0; i < 5; i++) assert.equal((await errorOf(() => c.query(`DELETE FROM orders WHERE id = -${i} /* s_no_${i} */ RETURNING id AS s_no_${i}`))).code, '42501');
    await sg.waitForLog((l) => isAudit(l) && String(l.statement).includes('s_no_4'));
    const audit = sg.logs.filter(isAudit);
    for (let i = 0; i < 5; i++) {
      const lines = audit.filter((l) => String(l.statement).includes(`s_no_${i}`));
      assert.equal(lines.length, 1, `denial s_no_${i}`);
      assert.equal(lines[0]!.decision, 'deny');
      assert.equal(lines[0]!.sub, 'sampled');
    }
    assert.equal(audit.filter((l) => String(l.statement).includes('s_ok_')).length, 0, 'allowed statements were audited with audit_sample 0');
  });

  test('mode: audit lets would-be-denied statements run and logs would_deny', async () => {
    const policy = join(fx.dir, 'audit-mode-policy.yaml');
    writeFileSync(policy, readFileSync(EXAMPLE_POLICY, 'utf8').replace(/^mode: enforce/m, 'mode: audit'));
    assert.match(readFileSync(policy, 'utf8'), /^mode: audit/m);
    const sg = await another({ policy });
    const w = await connect(sg, 'orders:write', 'audit-mode');
    // The policy does not grant the sequence to orders:write, the database does (serial default).
    const r = await w.query('SELECT nextval(\'orders_id_seq\') AS v, current_user AS u');
    assert.ok(Number(r.rows[0].v) > 0);
    assert.equal(r.rows[0].u, 'app_writer');
    const line = await sg.waitForLog((l) => isAudit(l) && String(l.statement).includes('nextval'));
    assert.equal(line.decision, 'would_deny');
    assert.equal(line.role, 'app_writer');
    assert.match(String(line.reason), /permission denied/);
    // Where the database itself does not grant it, PostgreSQL refuses: the second line of defence.
    const rd = await connect(sg, 'orders:read', 'audit-mode-reader');
    const e = await errorOf(() => rd.query('SELECT value AS am_marker FROM secrets'));
    assert.equal(e.code, '42501');
    assert.match(e.message, /permission denied for table secrets/, 'PostgreSQL, not scopegate, refused it');
    const l2 = await sg.waitForLog((l) => isAudit(l) && String(l.statement).includes('am_marker'));
    assert.equal(l2.decision, 'would_deny');
    // Allowed statements are still plain allows.
    await rd.query('SELECT id AS am_ok FROM orders LIMIT 1');
    const l3 = await sg.waitForLog((l) => isAudit(l) && String(l.statement).includes('am_ok'));
    assert.equal(l3.decision, 'allow');
  });
});
