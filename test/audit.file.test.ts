/**
 * `log.audit` as a file: lines survive logrotate (rename, then SIGHUP) under load with none
 * lost or torn, SIGTERM flushes what is buffered, `off` writes nothing, sampling keeps every
 * denial, and a hostile token subject cannot forge or break a line.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { startScopegate, CLI, type RunningScopegate } from './harness/scopegate.js';
import { runProcess } from './harness/process.js';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { AUTH, AUTH_PASSWORD, DB, errorOf, EXAMPLE_POLICY, mintToken, pollUntil, ROLES_SQL, SCHEMA_SQL, SECRET } from './scope.fixture.test.js';

type Line = Record<string, unknown>;

/** Every line of every file in `dir` whose name starts with `base`: each must be one JSON object. */
function readAudit(dir: string, base: string): Line[] {
  const lines: Line[] = [];
  for (const f of readdirSync(dir).filter((n) => n.startsWith(base)).sort()) {
    const text = readFileSync(join(dir, f), 'utf8');
    if (text === '') continue;
    assert.ok(text.endsWith('\n'), `${f} ends in a partial line`);
    for (const raw of text.slice(0, -1).split('\n')) {
      let l: unknown;
      try { l = JSON.parse(raw); } catch { assert.fail(`torn or invalid line in ${f}: ${raw.slice(0, 200)}`); }
      assert.ok(typeof l === 'object' && l !== null && !Array.isArray(l), `not an object: ${raw}`);
      assert.equal((l as Line).stream, 'audit');
      lines.push(l as Line);
    }
  }
  return lines;
}

describe('audit file', { timeout: 300_000 }, () => {
  let pgsrv: TestPostgres;
  let dir: string;
  const running: RunningScopegate[] = [];
  const clients: pg.Client[] = [];

  const start = async (log: Record<string, unknown>): Promise<RunningScopegate> => {
    const sg = await startScopegate({
      databases: { [DB]: { url: pgsrv.url(DB, 'authenticator', AUTH_PASSWORD), pool_size: 4 } },
      auth: AUTH,
      policy: EXAMPLE_POLICY,
      log: { level: 'info', ...log },
    }, { SG_SECRET: SECRET });
    running.push(sg);
    return sg;
  };
  const connect = async (sg: RunningScopegate, scope: string, sub: string): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'alice', password: await mintToken(sg.configFile, scope, sub), database: DB });
    c.on('error', () => undefined);
    await c.connect();
    clients.push(c);
    return c;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'audit-file-'));
    pgsrv = await startPostgres();
    await pgsrv.sql(ROLES_SQL);
    await pgsrv.sql(`CREATE DATABASE ${DB}`);
    await pgsrv.sql(SCHEMA_SQL, DB);
  });
  after(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    for (const sg of running) await sg.stop().catch(() => null);
    await pgsrv?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('rotation under load: renames and SIGHUP lose no line and tear none', async () => {
    const file = join(dir, 'rot.log');
    const sg = await start({ audit: file });
    const CLIENTS = 4;
    const EACH = 400;
    const ROTATIONS = 3;
    const cs = await Promise.all(Array.from({ length: CLIENTS }, (_, i) => connect(sg, 'orders:read', `rot-${i}`)));
    let done = 0;
    const load = Promise.all(cs.map(async (c) => {
      for (let k = 0; k < EACH; k++) {
        await c.query(`SELECT id AS rot_marker FROM orders WHERE id = ${k}`);
        done++;
      }
    }));
    for (let r = 1; r <= ROTATIONS; r++) {
      // Rotate while statements are running: after each quarter of them.
      await pollUntil(async () => done >= (r * CLIENTS * EACH) / (ROTATIONS + 1), `${r} quarters of the load`, 2000);
      assert.ok(done < CLIENTS * EACH, 'the load is still running');
      renameSync(file, `${file}.${r}`);
      process.kill(sg.proc.pid!, 'SIGHUP');
      // The reopen created the file again: the next rename moves the new one.
      await pollUntil(async () => existsSync(file), 'audit file reopened');
    }
    await load;
    assert.equal(await sg.stop(), 0);
    const lines = readAudit(dir, 'rot.log');
    for (let i = 0; i < CLIENTS; i++) {
      const mine = lines.filter((l) => l.sub === `rot-${i}` && String(l.statement).includes('rot_marker'));
      assert.equal(mine.length, EACH, `client rot-${i}: ${mine.length} of ${EACH} lines`);
      assert.ok(mine.every((l) => l.decision === 'allow' && l.db === DB));
    }
    // Every rotated file got lines: the rotations really happened under load.
    for (let r = 1; r <= ROTATIONS; r++) assert.ok(readAudit(dir, `rot.log.${r}`).length > 0, `rot.log.${r} is empty`);
    assert.ok(readAudit(dir, 'rot.log').length > 0);
  });

  test('a quiet audit file is flushed without more traffic, and SIGTERM flushes the rest', async () => {
    const file = join(dir, 'term.log');
    const sg = await start({ audit: file });
    const c = await connect(sg, 'orders:read', 'term');
    await c.query('SELECT id AS quiet_marker FROM orders');
    // A single short line, far below the write chunk: it still reaches the file.
    await pollUntil(async () => existsSync(file) && readFileSync(file, 'utf8').includes('quiet_marker'), 'quiet line flushed');
    for (let k = 0; k < 10; k++) await c.query(`SELECT id AS term_marker FROM orders WHERE id = ${k}`);
    assert.equal(await sg.stop('SIGTERM'), 0);
    const lines = readAudit(dir, 'term.log');
    assert.equal(lines.filter((l) => String(l.statement).includes('term_marker')).length, 10);
  });

  test('off writes no audit line, allowed or denied', async () => {
    const sg = await start({ audit: 'off' });
    const c = await connect(sg, 'orders:read', 'quiet');
    await c.query('SELECT id AS off_marker FROM orders');
    assert.equal((await errorOf(() => c.query('SELECT value AS off_denied FROM secrets'))).code, '42501');
    await c.end();
    assert.equal(await sg.stop(), 0);
    assert.deepEqual(sg.logs.filter((l) => l.stream === 'audit' || 'statement' in l), []);
    // The denial was decided: the pooler ran, it only wrote nothing.
    assert.ok(sg.logs.some((l) => l.msg === 'stopped'));
  });

  test('audit_sample 0.5 samples allows and keeps every denial', async () => {
    const file = join(dir, 'sample.log');
    const sg = await start({ audit: file, audit_sample: 0.5 });
    const c = await connect(sg, 'orders:read', 'sampled');
    const N = 60;
    for (let k = 0; k < N; k++) {
      await c.query(`SELECT id AS sample_allow FROM orders WHERE id = ${k}`);
      assert.equal((await errorOf(() => c.query(`SELECT value AS sample_deny FROM secrets WHERE id = ${k}`))).code, '42501');
    }
    assert.equal(await sg.stop(), 0);
    const lines = readAudit(dir, 'sample.log');
    const denies = lines.filter((l) => String(l.statement).includes('sample_deny'));
    const allows = lines.filter((l) => String(l.statement).includes('sample_allow'));
    assert.equal(denies.length, N);
    assert.ok(denies.every((l) => l.decision === 'deny'));
    // Half of 60 on average; all or none would happen with probability 2^-59.
    assert.ok(allows.length > 0 && allows.length < N, `${allows.length} of ${N} allows sampled`);
  });

  test('a hostile subject cannot forge a line or break one', async () => {
    const file = join(dir, 'hostile.log');
    const sg = await start({ audit: file });
    const hostile = 'evil","decision":"allow","forged":true}\n{"stream":"audit","sub":"admin\u2028\u0007\u001b[2J ünï 😀\\';
    const c = await connect(sg, 'orders:read', hostile);
    assert.equal((await errorOf(() => c.query('SELECT value AS hostile_marker FROM secrets'))).code, '42501');
    await c.query('SELECT id AS hostile_ok FROM orders');
    assert.equal(await sg.stop(), 0);
    const lines = readAudit(dir, 'hostile.log');
    assert.ok(lines.every((l) => !('forged' in l)), 'a forged field appeared');
    assert.ok(lines.every((l) => l.sub === hostile), 'every line carries the subject exactly as the token had it');
    const deny = lines.filter((l) => String(l.statement).includes('hostile_marker'));
    assert.equal(deny.length, 1);
    assert.equal(deny[0]!.decision, 'deny');
    assert.equal(lines.filter((l) => String(l.statement).includes('hostile_ok')).length, 1);
  });

  test('an audit path that cannot be written ends startup with exit 2 and one line naming log.audit', async () => {
    const blocker = join(dir, 'not-a-dir');
    writeFileSync(blocker, 'x');
    const cfgFile = join(dir, 'bad.yaml');
    writeFileSync(cfgFile, stringify({
      listen: { host: '127.0.0.1', port: 1 },
      databases: { [DB]: { url: pgsrv.url(DB, 'authenticator', AUTH_PASSWORD) } },
      auth: AUTH,
      policy: EXAMPLE_POLICY,
      log: { level: 'info', audit: join(blocker, 'audit.log') },
    }));
    const r = await runProcess(process.execPath, [CLI, '--config', cfgFile], { SG_SECRET: SECRET });
    assert.equal(r.code, 2);
    const errLines = r.err.trim().split('\n');
    assert.equal(errLines.length, 1, r.err);
    assert.match(errLines[0]!, /log\.audit/);
    assert.doesNotMatch(r.err, /\n\s+at /);
  });
});
