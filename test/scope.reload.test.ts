/**
 * Policy reload without restart (file edit and SIGHUP), an invalid edit refused while the
 * running policy keeps working, prepared statements re-checked at Bind after a change, and
 * the `scopegate check` CLI.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type pg from 'pg';
import { CLI, type LogLine } from './harness/scopegate.js';
import { errorOf, EXAMPLE_POLICY, ROOT, startFixture, type Fixture } from './scope.fixture.test.js';

const run = promisify(execFile);
const ORIGINAL = readFileSync(EXAMPLE_POLICY, 'utf8');
/** orders:read without select on orders (order_items only). */
const WITHOUT_ORDERS = ORIGINAL.replace('- { actions: [select], tables: [orders, order_items] }', '- { actions: [select], tables: [order_items] }');

describe('policy reload', { timeout: 120_000 }, () => {
  let fx: Fixture;
  let policyFile: string;
  const reloads = (): LogLine[] => fx.sg.logs.filter((l) => l.msg === 'policy reloaded');
  const failures = (): LogLine[] => fx.sg.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('policy reload failed'));
  /** Waits for the next 'policy reloaded' line after `seen` of them. */
  const nextReload = (seen: number): Promise<LogLine> => fx.sg.waitForLog((l) => l.msg === 'policy reloaded' && reloads().indexOf(l) >= seen);

  before(async () => {
    assert.notEqual(WITHOUT_ORDERS, ORIGINAL, 'the edit applies to config/policy.yaml');
    fx = await startFixture({ policy: 'copy', poolSize: 2 });
    policyFile = join(fx.dir, 'policy.yaml');
  });
  after(async () => { await fx?.stop(); });

  test('an edit takes effect for connected clients, prepared statements are re-checked at Bind', async () => {
    const r = await fx.client('orders:read', { sub: 'reloader' });
    const named: pg.QueryConfig = { name: 'count_orders', text: 'SELECT count(*)::int AS n FROM orders WHERE id > $1', values: [0] };
    assert.ok((await r.query(named)).rows[0].n > 0);
    assert.ok((await r.query('SELECT count(*) FROM orders')).rowCount === 1);
    const before = reloads().length;
    const version0 = (await fx.sg.waitForLog((l) => l.msg === 'policy loaded')).version;

    writeFileSync(policyFile, WITHOUT_ORDERS);
    const line = await nextReload(before);
    assert.notEqual(line.version, version0);

    // The same connection, no reconnect: denied now.
    const e = await errorOf(() => r.query('SELECT count(*) FROM orders'));
    assert.equal(e.code, '42501');
    assert.equal(e.message, 'permission denied: select on public.orders');
    // The named statement was parsed under the old policy; pg only sends Bind/Execute now.
    const e2 = await errorOf(() => r.query(named));
    assert.equal(e2.code, '42501', `prepared statement not re-checked at Bind: ${e2.message}`);
    assert.equal(e2.message, 'permission denied: select on public.orders');
    // What the new policy still grants works, on the same connection.
    assert.ok((await r.query('SELECT count(*) FROM order_items')).rowCount === 1);
    // Audit lines carry the new version.
    const audit = await fx.sg.waitForLog((l) => l.stream === 'audit' && l.decision === 'deny' && l.policy_version === line.version);
    assert.equal(audit.sub, 'reloader');
  });

  test('an invalid edit is refused and the running policy keeps working', async () => {
    const r = await fx.client('orders:read', { sub: 'reloader2' });
    const failed = failures().length;
    const before = reloads().length;
    writeFileSync(policyFile, WITHOUT_ORDERS.replace('actions: [select], tables: [order_items]', 'actions: [selekt], tables: [order_items]'));
    await fx.sg.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('policy reload failed') && failures().indexOf(l) >= failed);
    assert.equal(reloads().length, before, 'no reload happened');
    // Still the edited-but-valid policy: order_items yes, orders no.
    assert.ok((await r.query('SELECT count(*) FROM order_items')).rowCount === 1);
    assert.equal((await errorOf(() => r.query('SELECT count(*) FROM orders'))).code, '42501');
    // Broken YAML too.
    const failed2 = failures().length;
    writeFileSync(policyFile, 'scopes: [\n  "orders:read": {');
    await fx.sg.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('policy reload failed') && failures().indexOf(l) >= failed2);
    assert.ok((await r.query('SELECT count(*) FROM order_items')).rowCount === 1);
    assert.equal((await errorOf(() => r.query('SELECT * FROM secrets'))).code, '42501');
    assert.equal(fx.sg.proc.exitCode, null, 'scopegate is still running');
  });

  test('SIGHUP reloads the policy', async () => {
    const r = await fx.client('orders:read', { sub: 'hup' });
    // File edits are also picked up by the 500 ms file poll; SIGHUP sent right after the write
    // normally gets there first. Each round is a real change, so one of them must be SIGHUP's.
    let bySighup: LogLine | null = null;
    const contents = [ORIGINAL, WITHOUT_ORDERS, ORIGINAL, WITHOUT_ORDERS, ORIGINAL];
    for (let i = 0; i < contents.length && bySighup === null; i++) {
      const seen = reloads().length;
      writeFileSync(policyFile, contents[i]!);
      fx.sg.proc.kill('SIGHUP');
      const line = await nextReload(seen);
      if (line.why === 'SIGHUP') bySighup = line;
    }
    assert.ok(bySighup !== null, `no reload was attributed to SIGHUP: ${JSON.stringify(reloads().map((l) => l.why))}`);
    // Whatever the last content was, the client sees it now.
    const last = readFileSync(policyFile, 'utf8');
    if (last === ORIGINAL) assert.ok((await r.query('SELECT count(*) FROM orders')).rowCount === 1);
    else assert.equal((await errorOf(() => r.query('SELECT count(*) FROM orders'))).code, '42501');
  });

  test('restoring the original policy (edit + SIGHUP) brings the grant back', async () => {
    writeFileSync(policyFile, ORIGINAL);
    fx.sg.proc.kill('SIGHUP');
    const r = await fx.client('orders:read', { sub: 'hup2' });
    // Eventually (bounded) the original policy is in effect again.
    let ok = false;
    for (let i = 0; i < 100 && !ok; i++) {
      try { await r.query('SELECT count(*) FROM orders'); ok = true; } catch { await new Promise((res) => setTimeout(res, 50)); }
    }
    assert.ok(ok, 'orders:read can read orders again after restoring the policy');
    assert.equal(fx.sg.proc.exitCode, null);
  });
});

describe('scopegate check CLI', { timeout: 60_000 }, () => {
  const check = async (scopes: string, sql: string): Promise<{ code: number; out: string }> => {
    try {
      const { stdout } = await run(process.execPath, [CLI, 'check', '--policy', join(ROOT, 'config', 'policy.yaml'), '--scopes', scopes, sql], { timeout: 30_000 });
      return { code: 0, out: stdout };
    } catch (err) {
      const e = err as { code?: number; stdout?: string };
      return { code: typeof e.code === 'number' ? e.code : -1, out: e.stdout ?? '' };
    }
  };

  test('an allowed statement exits 0 and prints allow', async () => {
    const r = await check('orders:read', 'SELECT * FROM orders');
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /decision: allow/);
    assert.match(r.out, /app_reader/);
  });

  test('a denied statement exits 1 and prints the error and hint', async () => {
    const r = await check('orders:read', 'SELECT email FROM customers');
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /decision: deny/);
    assert.match(r.out, /42501 permission denied: select on public\.customers\.email/);
    assert.match(r.out, /hint: scope "admin" grants it/);
    const r2 = await check('orders:read', 'SELECT 1; DELETE FROM orders');
    assert.equal(r2.code, 1);
    assert.match(r2.out, /permission denied: delete on public\.orders/);
  });
});
