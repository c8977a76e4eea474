// Concern: the server reads every text exactly as scopegate's parser checked it: standard_conforming_strings, client_encoding and backslash_quote stay pinned in every form, and a server connection whose lexical environment changed behind scopegate's back serves nobody.
/**
 * Real PostgreSQL 18 behind the real scopegate CLI (test/rows.fixture.test.ts: the tenant
 * policy of config/policy-tenants.yaml), transaction mode, pool_size 1: the attacker's server
 * connection is provably (pg_backend_pid()) the next client's.
 *
 * The payloads are real smugglers, proven on a direct connection ("the oracle" tests):
 * - P_SCS is one SELECT of two string literals while standard_conforming_strings is on, and
 *   three statements, `SET ROLE app_admin` and a read of the app_admin-only `vault`, when it
 *   is off;
 * - P_ENC(c) is one SELECT of an E'' literal in UTF8, and the same three statements when the
 *   server converts it from an encoding in which c's last byte and the backslash after it
 *   form one character (GBK, SJIS, BIG5, GB18030);
 * - P_ROWS(c) is a tenant read whose rewritten text (tenant predicate ANDed at the end) loses
 *   the predicate into a -- comment when read as such an encoding with backslash_quote on.
 * Every attempt to change a pinned setting must be refused with 0A000 naming it, and then the
 * payloads must run as one statement for this client and for the next one, with current_user
 * the reader's role, the vault secret in nothing the clients received (rows, errors, notices)
 * and no other tenant's rows.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import postgres from 'postgres';
import { AUTH_PASSWORD, DB, EXTRA_SCOPES, TENANT_POLICY, errorOf, pollUntil, startRows, tenantOracle, type RowsFixture } from '../rows.fixture.test.js';
import { Wire, errorsOf, fe, fe2, rowsOf, tap } from './wire.js';

const VAULT_SECRET = `vault-${randomUUID()}`;
const ACME = { tenant: 'acme', countries: '["UK","US"]' };
const GLOBEX = { tenant: 'globex', countries: '["FI"]' };

/** One SELECT with standard_conforming_strings on; SET ROLE app_admin + a vault read with it off. */
const P_SCS = "SELECT 'x\\' AS a, '; SET ROLE app_admin; SELECT secret FROM vault; --' AS b";
/** One SELECT in UTF8; the same smuggle when `c`'s last byte swallows the backslash. */
const P_ENC = (c: string): string => `SELECT E'${c}\\' ; SET ROLE app_admin; SELECT secret FROM vault; --' AS a`;
/** A tenant read whose rewrite loses its tenant predicate into a comment under such an encoding. */
const P_ROWS = (c: string): string => `SELECT id, tenant_id FROM orders WHERE status <> '${c}\\' AND status <> ') OR true --' ORDER BY id`;

/**
 * For each client encoding: a character whose UTF8 bytes, read in that encoding, end in a lead
 * byte that makes one character with a following 0x5C (found with convert_from; the oracle
 * test proves each on the server). JOHAB and UHC have no such character in PostgreSQL (their
 * trail bytes exclude 0x5C there), but must be refused all the same.
 */
const SWALLOWS: Record<string, string | null> = { GBK: '\u0801', SJIS: '\u00c1', BIG5: '\u0861', GB18030: '\u0801', JOHAB: null, UHC: null };
const ENCODINGS = Object.keys(SWALLOWS);
const SMUGGLE_CHARS = Object.entries(SWALLOWS).filter((e): e is [string, string] => e[1] !== null);

const SETUP_SQL = `
CREATE ROLE app_admin NOLOGIN;
GRANT app_admin TO authenticator;
GRANT USAGE ON SCHEMA public TO app_admin;
CREATE TABLE vault (id int PRIMARY KEY, secret text NOT NULL);
INSERT INTO vault VALUES (1, '${VAULT_SECRET}');
GRANT SELECT ON vault TO app_admin;
CREATE FUNCTION public.relax_strings() RETURNS text LANGUAGE sql AS $$ SELECT set_config('standard_conforming_strings', 'off', false) $$;
CREATE FUNCTION public.relax_encoding() RETURNS text LANGUAGE sql AS $$ SELECT set_config('client_encoding', 'GBK', false) $$;
REVOKE ALL ON FUNCTION public.relax_strings(), public.relax_encoding() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.relax_strings(), public.relax_encoding() TO app_reader;
`;

const POLICY_EXTRA = `
  "admin":
    role: app_admin
    allow:
      - { actions: [all] }
  "lexical:fn":
    role: app_reader
    allow:
      - { actions: [select], tables: [orders, order_items] }
      - { actions: [execute], functions: [public.relax_strings, public.relax_encoding] }
    row_filters:
      orders: "tenant_id = claim('tenant')"
`;

const PINNED_DEFAULTS = { scs: 'on', enc: 'UTF8', bq: 'safe_encoding' };
const STATE_SQL = `SELECT pg_backend_pid() AS pid, current_user AS u, current_setting('standard_conforming_strings') AS scs,
  current_setting('client_encoding') AS enc, current_setting('backslash_quote') AS bq`;

interface State { pid: number; u: string; scs: string; enc: string; bq: string }

let dir: string;
let policyFile: string;

function writePolicy(): string {
  dir = mkdtempSync(join(tmpdir(), 'sec-lexical-'));
  policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, readFileSync(TENANT_POLICY, 'utf8').replace(/\s*$/, '\n') + EXTRA_SCOPES + POLICY_EXTRA);
  return policyFile;
}

async function startLexicalFixture(): Promise<RowsFixture> {
  const fx = await startRows({ poolSize: 1, config: { policy: writePolicy(), pool: { mode: 'transaction', query_wait_timeout: '15s' } } });
  await fx.su(SETUP_SQL);
  return fx;
}

/** The payloads' rows at default settings, computed by the server itself (superuser, direct). */
async function referenceRows(fx: RowsFixture): Promise<Map<string, unknown[]>> {
  const ref = new Map<string, unknown[]>();
  for (const p of [P_SCS, ...SMUGGLE_CHARS.map(([, c]) => P_ENC(c))]) {
    const r = await fx.su(p);
    assert.ok(!Array.isArray(r), `one statement at default settings: ${p}`);
    ref.set(p, r.rows);
  }
  return ref;
}

/** A direct connection as the login role acting as app_reader, as scopegate's server connections do. */
async function directAsReader(fx: RowsFixture): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: fx.pg.url(DB, 'authenticator', AUTH_PASSWORD) });
  c.on('error', () => undefined);
  c.on('notice', () => undefined);
  await c.connect();
  await c.query('SET ROLE app_reader');
  return c;
}

function resultsOf(r: pg.QueryResult | pg.QueryResult[]): pg.QueryResult[] {
  return Array.isArray(r) ? r : [r];
}

describe('the payloads are real smugglers (the oracle, on a direct connection)', { timeout: 120_000 }, () => {
  let fx: RowsFixture;
  before(async () => { fx = await startLexicalFixture(); });
  after(async () => { await fx?.stop(); rmSync(dir, { recursive: true, force: true }); });

  test('P_SCS is one SELECT with standard_conforming_strings on and SET ROLE app_admin + a vault read with it off', async () => {
    const c = await directAsReader(fx);
    try {
      assert.equal((await errorOf(() => c.query('SELECT secret FROM vault'))).code, '42501', 'app_reader cannot read the vault');
      assert.equal(resultsOf(await c.query(P_SCS)).length, 1);
      await c.query('SET standard_conforming_strings = off');
      const rs = resultsOf(await c.query(P_SCS));
      assert.equal(rs.length, 3, 'three statements');
      assert.deepEqual(rs[2]!.rows, [{ secret: VAULT_SECRET }]);
      assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, 'app_admin');
    } finally {
      await c.end();
    }
  });

  for (const [enc, ch] of SMUGGLE_CHARS) {
    test(`P_ENC is one SELECT in UTF8 and SET ROLE app_admin + a vault read in ${enc}`, async () => {
      const c = await directAsReader(fx);
      try {
        assert.equal(resultsOf(await c.query(P_ENC(ch))).length, 1);
        await c.query(`SET client_encoding = '${enc}'`);
        const rs = resultsOf(await c.query(P_ENC(ch)));
        assert.equal(rs.length, 3, `three statements in ${enc}`);
        assert.deepEqual(rs[2]!.rows, [{ secret: VAULT_SECRET }]);
      } finally {
        await c.end();
      }
    });
  }
});

describe('pinned settings are refused in every form, and the payloads stay one statement for this client and the next', { timeout: 300_000 }, () => {
  let fx: RowsFixture;
  let ref: Map<string, unknown[]>;
  let acmeRows: unknown[];
  before(async () => {
    fx = await startLexicalFixture();
    ref = await referenceRows(fx);
    const o = await tenantOracle(fx.pg, 'acme');
    acmeRows = await o.rows('SELECT DISTINCT tenant_id FROM orders ORDER BY 1');
    await o.end();
    assert.deepEqual(acmeRows, [{ tenant_id: 'acme' }]);
  });
  after(async () => { await fx?.stop(); rmSync(dir, { recursive: true, force: true }); });
  /** Clients a test opened: ended after it, so a failed test cannot hold the one server connection. */
  const opened: Array<{ end(): Promise<unknown> }> = [];
  /** A refusal with the wrong SQLSTATE or message; the effects are still checked, then the test fails. */
  let problems: string[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((c) => c.end().catch(() => undefined)));
    const p = problems;
    problems = [];
    assert.deepEqual(p, [], p.join('\n'));
  });

  async function reader(sub = 'mallory', claims = ACME, extra: Partial<pg.ClientConfig> = {}): Promise<{ c: pg.Client; seen: () => string }> {
    const c = new pg.Client({ host: '127.0.0.1', port: fx.sg.port, user: sub, password: await fx.token('orders:read', sub, claims), database: DB, ...extra });
    c.on('error', () => undefined);
    c.on('notice', () => undefined);
    opened.push(c);
    await c.connect();
    return { c, seen: tap(c) };
  }

  /** The client's session is pinned, runs as app_reader, reads one tenant, and the payloads are one statement each. */
  async function assertPinned(c: pg.Client, seen: () => string, who: string, tenant: string): Promise<State> {
    for (const [p, rows] of ref) {
      const r = await c.query(p);
      assert.ok(!Array.isArray(r), `${who}: ${p} ran as more than one statement`);
      assert.deepEqual(r.rows, rows, `${who}: ${p}`);
      const e = await c.query({ text: p, queryMode: 'extended' } as pg.QueryConfig);
      assert.deepEqual(e.rows, rows, `${who} (extended): ${p}`);
    }
    const s = (await c.query(STATE_SQL)).rows[0] as State;
    assert.deepEqual({ u: s.u, scs: s.scs, enc: s.enc, bq: s.bq }, { u: 'app_reader', ...PINNED_DEFAULTS }, `${who}: session`);
    assert.deepEqual((await c.query('SELECT DISTINCT tenant_id FROM orders ORDER BY 1')).rows, [{ tenant_id: tenant }], `${who}: own tenant only`);
    assert.equal((await errorOf(() => c.query('SELECT secret FROM vault'))).code, '42501');
    assert.ok(!seen().includes(VAULT_SECRET), `${who} received the vault secret`);
    return s;
  }

  /** After an attempt by `c`: `c` (if still connected) and the next client are pinned, on the same server connection. */
  async function assertNoEffect(c: pg.Client | null, seen: (() => string) | null, what: string): Promise<void> {
    let pid: number | null = null;
    if (c !== null && seen !== null) pid = (await assertPinned(c, seen, `attacker after ${what}`, 'acme')).pid;
    const next = await reader('victim', GLOBEX);
    try {
      const s = await assertPinned(next.c, next.seen, `next client after ${what}`, 'globex');
      if (pid !== null) assert.equal(s.pid, pid, 'pool_size 1: the next client got the attacker\'s server connection');
    } finally {
      await next.c.end();
    }
    if (c !== null) await c.end();
  }

  /** What an attempt got: its error, or a pseudo-error for an attempt that was accepted. */
  async function refusalOf(fn: () => Promise<unknown>): Promise<{ code?: string; message: string }> {
    try {
      await fn();
    } catch (err) {
      return err as { code?: string; message: string };
    }
    return { code: 'accepted', message: 'accepted' };
  }

  /** The attempt was refused (else the test fails now); a refusal other than 0A000 naming `param` is a problem reported after the effects were checked. */
  function assertRefusal(e: { code?: string; message: string }, param: string, what: string): void {
    assert.ok(!e.message.includes(VAULT_SECRET));
    if (e.code !== '0A000' || !e.message.includes(param)) problems.push(`${what}: ${e.code === 'accepted' ? 'accepted' : `refused with ${e.code} "${e.message}"`}, expected 0A000 naming ${param}`);
  }

  const SESSION_FORMS: Array<{ param: string; sql: string }> = [
    { param: 'standard_conforming_strings', sql: 'SET standard_conforming_strings = off' },
    { param: 'standard_conforming_strings', sql: "SET standard_conforming_strings TO 'off'" },
    { param: 'standard_conforming_strings', sql: "SELECT set_config('standard_conforming_strings', 'off', false)" },
    { param: 'standard_conforming_strings', sql: "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false)" },
    { param: 'standard_conforming_strings', sql: "SELECT s FROM (SELECT set_config('standard_conforming_strings', 'off', false) AS s) x" },
    { param: 'backslash_quote', sql: 'SET backslash_quote = on' },
    { param: 'backslash_quote', sql: "SELECT set_config('backslash_quote', 'on', false)" },
    ...ENCODINGS.flatMap((enc) => [
      { param: 'client_encoding', sql: `SET client_encoding = '${enc}'` },
      { param: 'client_encoding', sql: `SET NAMES '${enc}'` },
      { param: 'client_encoding', sql: `SELECT set_config('client_encoding', '${enc}', false)` },
    ]),
  ];
  const LOCAL_FORMS: Array<{ param: string; sql: string }> = [
    { param: 'standard_conforming_strings', sql: 'SET LOCAL standard_conforming_strings = off' },
    { param: 'standard_conforming_strings', sql: "SELECT set_config('standard_conforming_strings', 'off', true)" },
    { param: 'backslash_quote', sql: 'SET LOCAL backslash_quote = on' },
    { param: 'client_encoding', sql: "SET LOCAL client_encoding = 'GBK'" },
    { param: 'client_encoding', sql: "SELECT set_config('client_encoding', 'SJIS', true)" },
  ];

  for (const { param, sql } of SESSION_FORMS) {
    test(`${sql}: refused (0A000 naming ${param}) as simple, extended, named and multi-statement; no effect on this client or the next`, async () => {
      const forms: Array<[string, (c: pg.Client) => Promise<unknown>]> = [
        ['simple', (c) => c.query(sql)],
        ['extended', (c) => c.query({ text: sql, queryMode: 'extended' } as pg.QueryConfig)],
        ['named', (c) => c.query({ name: `pin_${randomUUID().slice(0, 8)}`, text: sql })],
        ['multi, first', (c) => c.query(`${sql}; ${P_SCS}`)],
        ['multi, last', (c) => c.query(`SELECT 1; ${sql}`)],
      ];
      for (const [form, run] of forms) {
        const { c, seen } = await reader();
        assertRefusal(await refusalOf(() => run(c)), param, `${form} ${sql}`);
        await assertNoEffect(c, seen, `${form} ${sql}`);
      }
    });
  }

  for (const { param, sql } of LOCAL_FORMS) {
    test(`${sql} inside a transaction: refused (0A000 naming ${param}), simple and extended; no effect inside or after it`, async () => {
      for (const extended of [false, true]) {
        const { c, seen } = await reader();
        await c.query('BEGIN');
        assertRefusal(await refusalOf(() => (extended ? c.query({ text: sql, queryMode: 'extended' } as pg.QueryConfig) : c.query(sql))), param, sql);
        await c.query('ROLLBACK');
        await c.query('BEGIN');
        // Refused in a multi-statement message that also carries the payload.
        assertRefusal(await refusalOf(() => c.query(`${sql}; ${P_SCS}`)), param, `${sql}; payload`);
        await c.query('ROLLBACK');
        await assertNoEffect(c, seen, `${extended ? 'extended' : 'simple'} ${sql}`);
      }
    });
  }

  test('the admin scope (actions: all) cannot change them either: set_config and SET are refused with 0A000', async () => {
    for (const sql of ["SELECT set_config('standard_conforming_strings', 'off', false)", "SELECT set_config('client_encoding', 'GBK', false)", "SELECT set_config('backslash_quote', 'on', false)", 'SET standard_conforming_strings = off']) {
      const a = new pg.Client({ host: '127.0.0.1', port: fx.sg.port, user: 'root', password: await fx.token('admin', 'root'), database: DB });
      a.on('error', () => undefined);
      a.on('notice', () => undefined);
      opened.push(a);
      await a.connect();
      try {
        const param = /standard_conforming_strings|client_encoding|backslash_quote/.exec(sql)![0];
        assertRefusal(await refusalOf(() => a.query(sql)), param, `admin ${sql}`);
        const s = await a.query(STATE_SQL).then((r) => r.rows[0] as State, (err: Error) => err);
        if (s instanceof Error) problems.push(`admin after ${sql}: the admin's connection ended (${s.message})`);
        else assert.deepEqual({ scs: s.scs, enc: s.enc, bq: s.bq }, PINNED_DEFAULTS, `admin after ${sql}`);
      } finally {
        await a.end();
      }
      await assertNoEffect(null, null, `admin ${sql}`);
    }
  });

  test('postgres.js (prepared and unprepared) gets the same refusals and its payloads stay one statement', async () => {
    for (const prepare of [true, false]) {
      const sql = postgres({ host: '127.0.0.1', port: fx.sg.port, database: DB, username: 'mallory', pass: await fx.token('orders:read', 'mallory', ACME), max: 1, prepare, onnotice: () => undefined });
      try {
        for (const { param, sql: text } of SESSION_FORMS) {
          const e = await refusalOf(() => sql.unsafe(text));
          assertRefusal(e, param, `postgres.js prepare=${prepare}: ${text}`);
        }
        for (const [p, rows] of ref) assert.deepEqual([...await sql.unsafe(p)], rows, `postgres.js prepare=${prepare}: ${p}`);
        const [s] = await sql.unsafe(STATE_SQL);
        assert.deepEqual({ u: s!.u, scs: s!.scs, enc: s!.enc, bq: s!.bq }, { u: 'app_reader', ...PINNED_DEFAULTS });
      } finally {
        await sql.end({ timeout: 5 });
      }
      await assertNoEffect(null, null, `postgres.js prepare=${prepare}`);
    }
  });

  /** A raw client: what it received holds no secret, its payload is one row, and its session is pinned. */
  async function assertWirePinned(w: Wire, what: string): Promise<void> {
    const msgs = await w.query(P_SCS);
    assert.deepEqual(errorsOf(msgs), [], `${what}: payload after the attempt`);
    assert.equal(rowsOf(msgs).length, 1, `${what}: the payload is one SELECT`);
    const st = rowsOf(await w.query("SELECT current_user, current_setting('standard_conforming_strings'), current_setting('client_encoding'), current_setting('backslash_quote')"));
    assert.deepEqual(st, [['app_reader', 'on', 'UTF8', 'safe_encoding']], what);
    assert.ok(!w.text().includes(VAULT_SECRET), `${what}: the raw client received the vault secret`);
  }

  const PIPELINES: Array<{ what: string; param: string; send: (w: Wire) => void; readies: number }> = [
    {
      what: 'SET in an extended batch, the payload in the same batch and as the next Query, one write',
      param: 'standard_conforming_strings',
      send: (w) => w.write(fe2.step('SET standard_conforming_strings = off'), fe2.step(P_SCS), fe.sync(), fe.query(P_SCS)),
      readies: 2,
    },
    {
      what: 'SET and the payload as two Queries in one write',
      param: 'standard_conforming_strings',
      send: (w) => w.write(fe.query('SET standard_conforming_strings = off'), fe.query(P_SCS)),
      readies: 2,
    },
    {
      what: 'a named statement whose text is the SET, bound and executed twice, then the payload, one write',
      param: 'standard_conforming_strings',
      send: (w) => w.write(fe.parse('SET standard_conforming_strings = off', 'pin_s'), fe.bind([], '', 'pin_s'), fe.execute(), fe.sync(),
        fe.bind([], 'p2', 'pin_s'), fe.execute('p2'), fe.sync(), fe.query(P_SCS)),
      readies: 3,
    },
    {
      what: 'BEGIN; SET LOCAL in an extended batch; the payload; COMMIT, one write',
      param: 'standard_conforming_strings',
      send: (w) => w.write(fe.query('BEGIN'), fe2.step('SET LOCAL standard_conforming_strings = off'), fe.sync(), fe.query(P_SCS), fe.query('ROLLBACK')),
      readies: 4,
    },
    {
      what: 'SET client_encoding GBK and backslash_quote on in one extended batch before the GBK payload',
      param: 'client_encoding',
      send: (w) => w.write(fe2.step("SET client_encoding = 'GBK'"), fe2.step('SET backslash_quote = on'), fe2.step(P_ENC(SWALLOWS.GBK!)), fe.sync(), fe.query(P_ENC(SWALLOWS.GBK!))),
      readies: 2,
    },
  ];

  for (const p of PIPELINES) {
    test(`pipelined: ${p.what}: refused with 0A000, and no message of the pipeline or after it runs in another lexical environment`, async () => {
      const w = await Wire.open(fx.sg.port, 'mallory', DB, await fx.token('orders:read', 'mallory', ACME));
      try {
        p.send(w);
        const { msgs, closed } = await w.untilReady(p.readies);
        assert.equal(closed, false);
        const errs = errorsOf(msgs);
        assert.ok(errs.length >= 1, 'the attempt is refused');
        assert.equal(errs[0]!.C, '0A000', JSON.stringify(errs[0]));
        assert.ok(errs[0]!.M!.includes(p.param), errs[0]!.M);
        // Whatever of the pipeline ran, ran as one statement per payload: never the vault.
        assert.ok(!w.text().includes(VAULT_SECRET), 'the pipeline delivered the vault secret');
        await assertWirePinned(w, p.what);
      } finally {
        w.close();
      }
      await assertNoEffect(null, null, `pipelined ${p.what}`);
    });
  }

  const STARTUP: Array<{ param: string; params: Record<string, string> }> = [
    { param: 'standard_conforming_strings', params: { standard_conforming_strings: 'off' } },
    { param: 'standard_conforming_strings', params: { Standard_Conforming_Strings: 'off' } },
    { param: 'standard_conforming_strings', params: { options: '--standard-conforming-strings=off' } },
    { param: 'standard_conforming_strings', params: { options: '-cstandard_conforming_strings=off' } },
    { param: 'standard_conforming_strings', params: { options: '-c standard_conforming_strings=on -c standard_conforming_strings=off' } },
    { param: 'backslash_quote', params: { backslash_quote: 'on' } },
    { param: 'backslash_quote', params: { options: '-c backslash_quote=on' } },
    ...ENCODINGS.flatMap((enc): Array<{ param: string; params: Record<string, string> }> => [
      { param: 'client_encoding', params: { client_encoding: enc } },
      { param: 'client_encoding', params: { client_encoding: 'UTF8', options: `-c client_encoding=${enc}` } },
    ]),
  ];

  for (const s of STARTUP) {
    test(`startup parameters ${JSON.stringify(s.params)}: the login is refused with 0A000 naming ${s.param}; the server connection stays pinned`, async () => {
      const r = await Wire.login(fx.sg.port, 'mallory', DB, await fx.token('orders:read', 'mallory', ACME), s.params);
      if (r instanceof Wire) {
        // Served anyway: it must at least be served pinned (this fails the test below either way).
        await assertWirePinned(r, JSON.stringify(s.params));
        r.close();
        assert.fail(`login with ${JSON.stringify(s.params)} was accepted`);
      }
      assert.equal(r.refused.C, '0A000', JSON.stringify(r.refused));
      assert.ok((r.refused.M ?? '').includes(s.param), r.refused.M);
      assert.ok(!r.received.some((m) => m.body.toString('utf8').includes(VAULT_SECRET)));
      await assertNoEffect(null, null, `startup ${JSON.stringify(s.params)}`);
    });
  }

  for (const [enc, ch] of SMUGGLE_CHARS) {
    test(`row filters: after refused attempts at ${enc} + backslash_quote on, the rewritten tenant read keeps its predicate (its rewrite does lose it in ${enc}: the oracle)`, async () => {
      const { c, seen } = await reader();
      try {
        for (const sql of [`SET client_encoding = '${enc}'`, 'SET backslash_quote = on', `SET NAMES '${enc}'`]) {
          assertRefusal(await refusalOf(() => c.query(sql)), /backslash_quote/.test(sql) ? 'backslash_quote' : 'client_encoding', sql);
        }
        const q = P_ROWS(ch);
        const oracle = await tenantOracle(fx.pg, 'acme');
        const want = await oracle.rows(q);
        await oracle.end();
        assert.ok(want.length > 0);
        const auditBefore = fx.audit().length;
        assert.deepEqual((await c.query(q)).rows, want, 'simple: acme rows only');
        assert.deepEqual((await c.query({ text: q, queryMode: 'extended' } as pg.QueryConfig)).rows, want, 'extended: acme rows only');
        assert.deepEqual((await c.query({ name: `rows_${enc}`, text: q })).rows, want, 'named: acme rows only');
        assert.ok(!seen().includes(VAULT_SECRET));

        // The oracle: the text scopegate sent, read as enc with backslash_quote on, returns every tenant.
        const line = await pollUntil(async () => fx.audit().slice(auditBefore).find((l) => typeof l.rewritten === 'string' && (l.rewritten as string).includes('OR true')), 'the audit line with the rewrite');
        const rewritten = line.rewritten as string;
        const direct = new pg.Client({ connectionString: fx.pg.url(DB) });
        direct.on('notice', () => undefined);
        await direct.connect();
        try {
          assert.deepEqual((await direct.query(rewritten)).rows.map((r) => r.tenant_id).filter((t, i, a) => a.indexOf(t) === i), ['acme'], 'in UTF8 the rewrite keeps the predicate');
          await direct.query(`SET client_encoding = '${enc}'`);
          await direct.query('SET backslash_quote = on');
          const leaked = (await direct.query(rewritten)).rows.map((r) => r.tenant_id as string);
          assert.ok(leaked.some((t) => t !== 'acme'), `in ${enc} the rewrite loses its tenant predicate: ${JSON.stringify(leaked)}`);
        } finally {
          await direct.end();
        }
        await assertNoEffect(c, seen, `${enc} row filter`);
      } finally {
        await c.end().catch(() => undefined);
      }
    });
  }
});

describe('defence in depth: a pinned parameter the server reports changed behind scopegate\'s back', { timeout: 300_000 }, () => {
  let fx: RowsFixture;
  before(async () => { fx = await startLexicalFixture(); });
  after(async () => {
    await fx?.su('ALTER ROLE authenticator RESET ALL').catch(() => undefined);
    await fx?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const pidGone = (pid: number) => pollUntil(async () => (await fx.su('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0].n === 0, `server connection ${pid} closed`);

  async function serverPid(): Promise<number> {
    const w = await Wire.open(fx.sg.port, 'probe', DB, await fx.token('orders:read', 'probe', GLOBEX));
    try {
      const r = rowsOf(await w.query('SELECT pg_backend_pid()'));
      return Number(r[0]![0]);
    } finally {
      w.close();
    }
  }

  /** The next client is served on a pinned connection other than `pid`, as app_reader, and its payloads stay one statement. */
  async function assertNextClientPinned(pid: number, what: string): Promise<void> {
    const w = await Wire.open(fx.sg.port, 'victim', DB, await fx.token('orders:read', 'victim', GLOBEX));
    try {
      const st = rowsOf(await w.query(STATE_SQL.replace(/ AS \w+/g, '')));
      assert.equal(st.length, 1, what);
      assert.notEqual(Number(st[0]![0]), pid, `${what}: the changed server connection served the next client`);
      assert.deepEqual(st[0]!.slice(1), ['app_reader', 'on', 'UTF8', 'safe_encoding'], what);
      const msgs = await w.query(P_SCS);
      assert.equal(rowsOf(msgs).length, 1, `${what}: the next client's payload is one SELECT`);
      assert.ok(!w.text().includes(VAULT_SECRET), `${what}: the next client received the vault secret`);
    } finally {
      w.close();
    }
  }

  const FUNCTION_CALLS: Array<{ what: string; send: (w: Wire) => void; readies: number; fn: string; payload: string }> = [
    { what: 'relax_strings() as a Query, then the payload as its own Query', fn: 'relax_strings', payload: P_SCS, readies: 1,
      send: (w) => w.write(fe.query('SELECT public.relax_strings()')) },
    { what: 'relax_strings() extended (Parse/Bind/Execute/Sync)', fn: 'relax_strings', payload: P_SCS, readies: 1,
      send: (w) => w.write(fe2.step('SELECT public.relax_strings()'), fe.sync()) },
    { what: 'relax_strings() and the payload pipelined as two Queries in one write', fn: 'relax_strings', payload: P_SCS, readies: 2,
      send: (w) => w.write(fe.query('SELECT public.relax_strings()'), fe.query(P_SCS)) },
    { what: 'relax_strings() in an extended batch, Sync, then the payload Query, one write', fn: 'relax_strings', payload: P_SCS, readies: 2,
      send: (w) => w.write(fe2.step('SELECT public.relax_strings()'), fe.sync(), fe.query(P_SCS)) },
    { what: 'relax_strings() inside BEGIN ... COMMIT with the payload, one write', fn: 'relax_strings', payload: P_SCS, readies: 4,
      send: (w) => w.write(fe.query('BEGIN'), fe.query('SELECT public.relax_strings()'), fe.query(P_SCS), fe.query('COMMIT')) },
    { what: 'relax_encoding() (client_encoding GBK) and the GBK payload pipelined', fn: 'relax_encoding', payload: P_ENC(SWALLOWS.GBK!), readies: 2,
      send: (w) => w.write(fe.query('SELECT public.relax_encoding()'), fe.query(P_ENC(SWALLOWS.GBK!))) },
  ];

  for (const f of FUNCTION_CALLS) {
    test(`a granted function that changes a pinned setting: ${f.what}: the client gets an error, the server connection is closed, nothing smuggled reaches anyone`, async () => {
      const pid = await serverPid();
      const problems: string[] = [];
      const w = await Wire.open(fx.sg.port, 'mallory', DB, await fx.token('lexical:fn', 'mallory', ACME));
      try {
        f.send(w);
        const { msgs, closed } = await w.untilReady(f.readies);
        if (w.text().includes(VAULT_SECRET)) problems.push(`the client received the vault secret: ${JSON.stringify(rowsOf(msgs))}`);
        if (errorsOf(msgs).length === 0 && !closed) problems.push(`the client got no error: ${JSON.stringify(rowsOf(msgs))}`);
        if (!closed) {
          // Still connected: whatever serves it next must be pinned, and its payload one statement.
          w.write(fe.query(f.payload));
          const after = await w.untilReady(1);
          if (!after.closed) {
            if (w.text().includes(VAULT_SECRET) && problems.length < 2) problems.push(`the payload sent afterwards delivered the vault secret: ${JSON.stringify(rowsOf(after.msgs))}`);
            const st = rowsOf(await w.query("SELECT pg_backend_pid(), current_user, current_setting('standard_conforming_strings'), current_setting('client_encoding')"));
            if (st.length === 1 && Number(st[0]![0]) === pid) problems.push(`the client was served again on the changed server connection: ${JSON.stringify(st[0])}`);
            else if (st.length === 1 && JSON.stringify(st[0]!.slice(1)) !== JSON.stringify(['app_reader', 'on', 'UTF8'])) problems.push(`the client is served with ${JSON.stringify(st[0])}`);
          }
        }
      } finally {
        w.close();
      }
      const open = (await fx.su('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0].n as number;
      if (open !== 0) {
        // Not closed (yet): the next client must still not be served on it.
        const w2 = await Wire.open(fx.sg.port, 'victim', DB, await fx.token('orders:read', 'victim', GLOBEX));
        try {
          const msgs = await w2.query(P_SCS);
          const st = rowsOf(await w2.query("SELECT pg_backend_pid(), current_user, current_setting('standard_conforming_strings')"));
          if (w2.text().includes(VAULT_SECRET)) problems.push(`the next client's payload delivered the vault secret: ${JSON.stringify(rowsOf(msgs))}`);
          if (st.length === 1 && Number(st[0]![0]) === pid) problems.push(`the next client was served on the changed server connection: ${JSON.stringify(st[0])}`);
        } finally {
          w2.close();
        }
      }
      // Each form starts from a pinned server connection, whatever scopegate did with this one.
      await fx.su('SELECT pg_terminate_backend($1)', [pid]);
      await pidGone(pid);
      assert.deepEqual(problems, [], problems.join('\n'));
      await pidGone(pid);
      await assertNextClientPinned(pid, f.what);
    });
  }

  /** New server connections: the old ones are terminated and gone. */
  async function replaceServerConnections(): Promise<void> {
    const old = (await fx.su("SELECT pid FROM pg_stat_activity WHERE usename = 'authenticator'")).rows.map((r) => r.pid as number);
    await fx.su("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'authenticator'");
    for (const pid of old) await pidGone(pid);
  }

  /** Service comes back on a pinned server connection (scopegate retries logins with a backoff). */
  async function serviceBack(): Promise<void> {
    await pollUntil(async () => {
      const w = await Wire.open(fx.sg.port, 'victim', DB, await fx.token('orders:read', 'victim', GLOBEX));
      try { return rowsOf(await w.query('SELECT 1')).length === 1; } finally { w.close(); }
    }, 'service on a pinned server connection', 400);
    await assertNextClientPinned(-1, 'after the server is fixed');
  }

  /** Sends the payload in each form; returns what the clients were served (rows) and whether they got an error. */
  async function tryPayloads(): Promise<Array<{ form: string; rows: Array<Array<string | null>>; error: boolean; text: string }>> {
    const out = [];
    for (const form of ['simple', 'extended', 'pipelined'] as const) {
      const w = await Wire.open(fx.sg.port, 'mallory', DB, await fx.token('orders:read', 'mallory', ACME));
      try {
        if (form === 'simple') w.write(fe.query(P_SCS));
        else if (form === 'extended') w.write(fe2.step(P_SCS), fe.sync());
        else w.write(fe.query('SELECT 1'), fe.query(P_SCS));
        const { msgs, closed } = await w.untilReady(form === 'pipelined' ? 2 : 1);
        out.push({ form, rows: rowsOf(msgs), error: closed || errorsOf(msgs).length > 0, text: w.text() });
      } finally {
        w.close();
      }
    }
    return out;
  }

  test('ALTER ROLE authenticator SET standard_conforming_strings = off before new server connections: nobody is served in another lexical environment', async () => {
    await fx.su('ALTER ROLE authenticator SET standard_conforming_strings = off');
    try {
      await replaceServerConnections();
      for (const r of await tryPayloads()) {
        assert.ok(!r.text.includes(VAULT_SECRET), `${r.form}: the client received the vault secret`);
        // Served is fine only on a pinned connection: then the payload is one SELECT.
        if (!r.error) assert.equal(r.rows.filter((row) => row.length === 2).length, 1, `${r.form}: ${JSON.stringify(r.rows)}`);
      }
      const w = await Wire.open(fx.sg.port, 'victim', DB, await fx.token('orders:read', 'victim', GLOBEX));
      try {
        const st = rowsOf(await w.query("SELECT current_setting('standard_conforming_strings')"));
        if (st.length === 1) assert.deepEqual(st, [['on']], 'a client was served with standard_conforming_strings off');
      } finally {
        w.close();
      }
    } finally {
      await fx.su('ALTER ROLE authenticator RESET standard_conforming_strings');
    }
    await serviceBack();
  });

  test('a server connection that logs in with standard_conforming_strings off (a login event trigger) is refused with a log line; clients get an error, not service', async () => {
    await fx.su(`CREATE FUNCTION relax_login() RETURNS event_trigger LANGUAGE plpgsql AS $$
      BEGIN IF session_user = 'authenticator' THEN PERFORM set_config('standard_conforming_strings', 'off', false); END IF; END $$;
      CREATE EVENT TRIGGER relax_login ON login EXECUTE FUNCTION relax_login();`);
    const logsBefore = fx.sg.logs.length;
    try {
      // The oracle: a direct login of the login role now has it off.
      const direct = new pg.Client({ connectionString: fx.pg.url(DB, 'authenticator', AUTH_PASSWORD) });
      await direct.connect();
      try {
        assert.equal((await direct.query("SELECT current_setting('standard_conforming_strings') AS v")).rows[0].v, 'off');
      } finally {
        await direct.end();
      }
      await replaceServerConnections();
      for (const r of await tryPayloads()) {
        assert.ok(!r.text.includes(VAULT_SECRET), `${r.form}: the client received the vault secret`);
        assert.ok(r.error, `${r.form}: served on a server connection with standard_conforming_strings off: ${JSON.stringify(r.rows)}`);
        assert.deepEqual(r.rows, [], `${r.form}: rows were served`);
      }
      const line = await pollUntil(async () => fx.sg.logs.slice(logsBefore).find((l) => JSON.stringify(l).includes('standard_conforming_strings')), 'a log line naming standard_conforming_strings');
      assert.ok(line);
    } finally {
      await fx.su('DROP EVENT TRIGGER relax_login; DROP FUNCTION relax_login()');
    }
    await serviceBack();
  });
});
