/**
 * admin.listen_http through the real scopegate process: /metrics scraped with real HTTP GETs
 * and read with a parser of the Prometheus text format (below), values that follow real
 * activity, /healthz, /readyz against a PostgreSQL that is stopped and started again, and
 * nothing else served. Also the console under auth.method trust.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { errorOf, startFixture, type Fixture } from './scope.fixture.test.js';
import { freePort } from './harness/ports.js';
import { startScopegate } from './harness/scopegate.js';
import { waitFor } from './harness/rawclient.js';
import { startRestartablePostgres } from './faults/support.js';
import { parseConfig } from '../src/config.js';

// ---- the Prometheus text exposition format (version 0.0.4) ---------------------------

interface Sample { name: string; labels: Record<string, string>; value: number }
interface Family { name: string; type: string; help: string; samples: Sample[] }

/**
 * Parses the text format line by line, a label value character by character (escapes \\ \" \n),
 * and checks what a scraper relies on: every sample belongs to a family whose TYPE came first,
 * no series twice, histogram buckets cumulative and ending in +Inf = _count.
 */
function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
  assert.ok(text.endsWith('\n'), 'the body ends with a newline');
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
      if (m === null) continue; // a plain comment
      const f = families.get(m[2]!) ?? { name: m[2]!, type: 'untyped', help: '', samples: [] };
      if (m[1] === 'TYPE') {
        assert.ok(['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3]!), `type ${m[3]}`);
        assert.equal(f.samples.length, 0, `TYPE of ${f.name} after its samples`);
        f.type = m[3]!;
      } else f.help = m[3]!;
      families.set(f.name, f);
      continue;
    }
    const nm = NAME.exec(line);
    assert.ok(nm, `a sample line starts with a name: ${line}`);
    const name = nm[0];
    let i = name.length;
    const labels: Record<string, string> = {};
    if (line[i] === '{') {
      i++;
      while (line[i] !== '}') {
        const ln = NAME.exec(line.slice(i));
        assert.ok(ln, `label name at ${i}: ${line}`);
        i += ln[0].length;
        assert.equal(line.slice(i, i + 2), '="', `label ${ln[0]}: ${line}`);
        i += 2;
        let v = '';
        for (;;) {
          const ch = line[i];
          assert.ok(ch !== undefined, `unterminated label value: ${line}`);
          if (ch === '\\') {
            const e = line[i + 1];
            v += e === 'n' ? '\n' : e === '\\' ? '\\' : e === '"' ? '"' : assert.fail(`bad escape \\${e}: ${line}`);
            i += 2;
          } else if (ch === '"') { i++; break; } else { v += ch; i++; }
        }
        assert.ok(!(ln[0] in labels), `label ${ln[0]} twice: ${line}`);
        labels[ln[0]] = v;
        if (line[i] === ',') i++;
        else assert.equal(line[i], '}', `after a label: ${line}`);
      }
      i++;
    }
    assert.equal(line[i], ' ', `a space before the value: ${line}`);
    const [valueText, timestamp, extra] = line.slice(i + 1).split(' ');
    assert.equal(extra, undefined, line);
    if (timestamp !== undefined) assert.match(timestamp, /^-?\d+$/);
    const value = valueText === '+Inf' ? Infinity : valueText === '-Inf' ? -Infinity : valueText === 'NaN' ? NaN : Number(valueText);
    assert.ok(valueText !== '' && (valueText === 'NaN' || !Number.isNaN(value)), `value ${valueText}: ${line}`);
    const base = families.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
    const f = families.get(base);
    assert.ok(f !== undefined && f.type !== 'untyped', `${name} has no TYPE before it`);
    if (base !== name) assert.ok(f.type === 'histogram' || f.type === 'summary', `${name} suffix on a ${f.type}`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!seen.has(key), `series twice: ${key}`);
    seen.add(key);
    f.samples.push({ name, labels, value });
  }
  for (const f of families.values()) {
    if (f.type !== 'histogram') continue;
    const series = new Map<string, Sample[]>();
    for (const s of f.samples.filter((x) => x.name === `${f.name}_bucket`)) {
      const { le: _le, ...rest } = s.labels;
      const k = JSON.stringify(Object.entries(rest).sort());
      series.set(k, [...(series.get(k) ?? []), s]);
    }
    for (const [k, buckets] of series) {
      for (let j = 1; j < buckets.length; j++) assert.ok(buckets[j]!.value >= buckets[j - 1]!.value, `${f.name} buckets not cumulative`);
      assert.equal(buckets.at(-1)!.labels.le, '+Inf');
      const count = f.samples.find((s) => s.name === `${f.name}_count` && JSON.stringify(Object.entries(s.labels).sort()) === k);
      assert.equal(count?.value, buckets.at(-1)!.value, `${f.name} +Inf bucket equals _count`);
    }
  }
  return families;
}

/** Sum of a family's samples whose labels include `match`. */
function value(m: Map<string, Family>, name: string, match: Record<string, string> = {}): number {
  const f = m.get(name) ?? m.get(name.replace(/_(bucket|sum|count)$/, ''));
  assert.ok(f, `no metric ${name}`);
  return f.samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}

// ---- the fixture ---------------------------------------------------------------------

let fx: Fixture;
let httpPort: number;

before(async () => {
  httpPort = await freePort();
  fx = await startFixture({ config: { admin: { scope: 'scopegate:admin', listen_http: `127.0.0.1:${httpPort}` } } });
});

after(async () => {
  await fx?.stop();
});

async function get(path: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(`http://127.0.0.1:${httpPort}${path}`, { method });
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
}

async function scrape(): Promise<Map<string, Family>> {
  const r = await get('/metrics');
  assert.equal(r.status, 200);
  assert.match(r.type, /^text\/plain; version=0\.0\.4/);
  return parseExposition(r.body);
}

const POOL = { database: 'app', user: 'authenticator' };

test('/metrics: the text format parses, process metrics and every scopegate_* family are there', async () => {
  const m = await scrape();
  assert.equal(m.get('process_cpu_user_seconds_total')?.type, 'counter');
  const expected: Record<string, string> = {
    scopegate_client_connections: 'gauge', scopegate_server_connections: 'gauge', scopegate_clients_waiting: 'gauge',
    scopegate_client_wait_seconds: 'histogram', scopegate_transaction_duration_seconds: 'histogram', scopegate_transactions_total: 'counter',
    scopegate_queries_total: 'counter', scopegate_prepared_statements: 'gauge', scopegate_prepared_statements_reprepared_total: 'counter',
    scopegate_scope_decisions_total: 'counter', scopegate_auth_failures_total: 'counter', scopegate_jwks_fetches_total: 'counter',
    scopegate_policy_info: 'gauge', scopegate_policy_reload_failures_total: 'counter', scopegate_decision_thread_jobs_total: 'counter',
    scopegate_client_output_stalls_total: 'counter', scopegate_partial_message_bytes: 'gauge',
  };
  for (const [name, type] of Object.entries(expected)) assert.equal(m.get(name)?.type, type, name);
  assert.equal(m.get('scopegate_policy_info')!.samples.length, 1);
});

test('values follow activity: transactions, a denial, a failed login, a connected client; no subject in any label', async () => {
  const m0 = await scrape();
  const sub = 'metrics-subject-4711';
  const c = await fx.client('orders:read', { sub });
  await c.query('SELECT count(*) FROM orders');
  await c.query('BEGIN');
  await c.query('SELECT 1');
  await c.query('COMMIT');
  const denied = await errorOf(() => c.query('SELECT value FROM secrets'));
  assert.equal(denied.code, '42501');
  const badLogin = await errorOf(async () => {
    const x = new pg.Client({ host: '127.0.0.1', port: fx.sg.port, user: 'eve', password: 'not-a-token', database: 'app' });
    x.on('error', () => undefined);
    await x.connect();
  });
  assert.equal(badLogin.code, '28000');
  const m1 = await scrape();
  assert.ok(value(m1, 'scopegate_transactions_total', POOL) >= value(m0, 'scopegate_transactions_total', POOL) + 2);
  assert.ok(value(m1, 'scopegate_queries_total', POOL) >= value(m0, 'scopegate_queries_total', POOL) + 4);
  assert.equal(value(m1, 'scopegate_scope_decisions_total', { decision: 'deny' }), value(m0, 'scopegate_scope_decisions_total', { decision: 'deny' }) + 1);
  assert.ok(value(m1, 'scopegate_scope_decisions_total', { decision: 'allow', scope: 'orders:read' }) > value(m0, 'scopegate_scope_decisions_total', { decision: 'allow', scope: 'orders:read' }));
  assert.equal(value(m1, 'scopegate_auth_failures_total'), value(m0, 'scopegate_auth_failures_total') + 1);
  assert.ok(value(m1, 'scopegate_client_connections', { ...POOL, state: 'active' }) >= 1);
  assert.ok(value(m1, 'scopegate_transaction_duration_seconds_count', POOL) >= value(m0, 'scopegate_transaction_duration_seconds_count', POOL) + 2);
  assert.ok(value(m1, 'scopegate_server_connections', POOL) >= 1);
  for (const f of m1.values()) for (const s of f.samples) for (const v of Object.values(s.labels)) assert.ok(!v.includes(sub) && !v.includes('SELECT'), `${s.name} label ${v}`);
  await c.end();
  await waitFor(async () => value(await scrape(), 'scopegate_client_connections', { ...POOL, state: 'active' }) === 0, 'the client gone from the gauge');
});

test('the HTTP listener serves the three paths and nothing else', async () => {
  const health = await get('/healthz');
  assert.equal(health.status, 200);
  assert.equal((await get('/readyz')).status, 200);
  for (const p of ['/', '/metrics/', '/debug', '/config', '/metrics/../config', '/healthz.json', '/%2e%2e/']) {
    const r = await get(p);
    assert.equal(r.status, 404, p);
    assert.equal(r.body, 'not found\n', p);
  }
  assert.equal((await get('/metrics', 'POST')).status, 405);
  assert.equal((await get('/readyz', 'DELETE')).status, 405);
  const body = (await get('/metrics')).body + (await get('/readyz')).body;
  for (const secret of ['scope-e2e-dev-secret', 'authenticator-pw', 'env:SG_SECRET']) assert.ok(!body.includes(secret), secret);
});

test('/readyz: 503 before a pool reached its server and while the server is down, 200 once it is up', async () => {
  const pgsrv = await startRestartablePostgres();
  const http = await freePort();
  const sg = await startScopegate({
    databases: { app: { url: pgsrv.url('postgres'), pool_size: 2 }, nowhere: { url: `postgres://u:p@127.0.0.1:${await freePort()}/x`, pool_size: 1 } },
    auth: { method: 'trust' },
    admin: { scope: 'scopegate:admin', listen_http: `127.0.0.1:${http}` },
    log: { level: 'info' },
  });
  const ready = async (): Promise<number> => (await fetch(`http://127.0.0.1:${http}/readyz`)).status;
  const connect = async (): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'postgres', database: 'app' });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  try {
    assert.equal(await ready(), 503);
    const c = await connect();
    await c.query('SELECT 1');
    // `nowhere` never answers: not ready while any pool is failing or never reached.
    assert.equal(await ready(), 503);
    const body = await (await fetch(`http://127.0.0.1:${http}/readyz`)).json() as { pools: Array<{ database: string; reached: boolean }> };
    assert.deepEqual(body.pools.map((p) => [p.database, p.reached]), [['app', true], ['nowhere', false]]);
    await c.end();
    // Under trust the console is off unless admin.trust_access says otherwise.
    const refused = await errorOf(async () => {
      const x = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'postgres', database: 'pgbouncer' });
      x.on('error', () => undefined);
      await x.connect();
    });
    assert.equal(refused.code, '42501');
    assert.match(refused.message, /admin console is off under auth\.method trust/);
  } finally {
    await sg.stop();
  }

  const sg2 = await startScopegate({
    databases: { app: { url: pgsrv.url('postgres'), pool_size: 2 } },
    auth: { method: 'trust' },
    admin: { scope: 'scopegate:admin', listen_http: `127.0.0.1:${http}`, trust_access: 'stats' },
    log: { level: 'info' },
  });
  try {
    assert.equal(await ready(), 503);
    const c = new pg.Client({ host: '127.0.0.1', port: sg2.port, user: 'postgres', database: 'app' });
    c.on('error', () => undefined);
    await c.connect();
    await c.query('SELECT 1');
    assert.equal(await ready(), 200);
    await pgsrv.stopFast();
    await errorOf(() => c.query('SELECT 1'));
    const again = new pg.Client({ host: '127.0.0.1', port: sg2.port, user: 'postgres', database: 'app' });
    again.on('error', () => undefined);
    await again.connect();
    await errorOf(() => again.query('SELECT 1'));
    await waitFor(async () => (await ready()) === 503, '/readyz 503 while the server is down');
    await pgsrv.start();
    await waitFor(async () => {
      try { await again.query('SELECT 1'); return true; } catch { return false; }
    }, 'a query once the server is back', 30_000, 200);
    assert.equal(await ready(), 200);
    await again.end();
    await c.end().catch(() => undefined);
    // trust_access: stats opens the console's SHOW commands to loopback clients, nothing more.
    const con = new pg.Client({ host: '127.0.0.1', port: sg2.port, user: 'anyone', database: 'scopegate' });
    con.on('error', () => undefined);
    await con.connect();
    assert.equal((await con.query('SHOW POOLS')).rows.length, 1);
    assert.equal((await errorOf(() => con.query('SHUTDOWN'))).code, '42501');
    await con.end();
  } finally {
    await sg2.stop();
    await pgsrv.destroy();
  }
});

test('config: the old metrics key is an error naming admin.listen_http; admin needs a scope', () => {
  const base = { databases: { app: { url: 'postgres://u:p@127.0.0.1:5432/app' } } };
  assert.throws(() => parseConfig({ ...base, metrics: { port: 9187 } }, null), /metrics: replaced by admin\.listen_http/);
  assert.throws(() => parseConfig({ ...base, admin: { listen_http: '127.0.0.1:9187' } }, null), /admin\.scope: missing/);
  assert.throws(() => parseConfig({ ...base, admin: { scope: 'a', listen_http: '9187' } }, null), /admin\.listen_http: expected host:port/);
  assert.throws(() => parseConfig({ ...base, admin: { scope: 'a', trust_access: 'all' } }, null), /admin\.trust_access/);
  const ok = parseConfig({ ...base, admin: { scope: 'a', stats_scope: 'b', listen_http: '[::1]:9187' } }, null);
  assert.deepEqual(ok.admin, { scope: 'a', stats_scope: 'b', listen_http: { host: '::1', port: 9187 }, trust_access: 'none' });
  assert.equal(parseConfig(base, null).admin, null);
});

test('during the SIGTERM drain /healthz still answers 200 and /readyz 503, until the last transaction ends', async () => {
  const pgsrv = await startRestartablePostgres();
  const http = await freePort();
  const sg = await startScopegate({
    databases: { app: { url: pgsrv.url('postgres'), pool_size: 2 } },
    pool: { shutdown_timeout: '60s' },
    auth: { method: 'trust' },
    admin: { scope: 'scopegate:admin', listen_http: `127.0.0.1:${http}` },
    log: { level: 'info' },
  });
  const get = async (path: string): Promise<number> => (await fetch(`http://127.0.0.1:${http}${path}`)).status;
  const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'postgres', database: 'app' });
  c.on('error', () => undefined);
  try {
    await c.connect();
    await c.query('BEGIN');
    await c.query('SELECT 1');
    assert.equal(await get('/readyz'), 200);
    const exited = new Promise<number | null>((r) => sg.proc.once('exit', (code) => r(code)));
    sg.proc.kill('SIGTERM');
    await waitFor(async () => (await get('/readyz')) === 503, '/readyz 503 once the drain began');
    // The open transaction holds the drain: the liveness probe must not fail meanwhile.
    assert.equal(await get('/healthz'), 200);
    assert.equal(sg.proc.exitCode, null);
    await c.query('COMMIT');
    assert.equal(await exited, 0);
    await assert.rejects(fetch(`http://127.0.0.1:${http}/healthz`), 'the HTTP listener is closed after the drain');
  } finally {
    await c.end().catch(() => undefined);
    await sg.stop().catch(() => null);
    await pgsrv.destroy();
  }
});
