import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { startScopegate } from './harness/scopegate.js';

const SECRET = 'login-role-test-secret-0123456789abcdef';
const AUTH = { method: 'oauth', issuer: 'https://issuer.test', audience: 'scopegate', secret: 'env:SG_SECRET', algorithms: ['HS256'] };

// At start scopegate inspects the login role, because database GRANTs and RLS are only a
// second wall when it is a NOINHERIT role without privileges of its own.
describe('login role warnings at startup', () => {
  let db: TestPostgres;
  let policy: string;

  before(async () => {
    db = await startPostgres();
    await db.sql(`
      CREATE ROLE app_reader NOLOGIN;
      CREATE ROLE good_login LOGIN NOINHERIT PASSWORD 'pw';
      GRANT app_reader TO good_login;
      CREATE ROLE owning_login LOGIN INHERIT PASSWORD 'pw';
      CREATE TABLE owned_by_login (a int);
      ALTER TABLE owned_by_login OWNER TO owning_login;`);
    const dir = mkdtempSync(join(tmpdir(), 'login-role-'));
    policy = join(dir, 'policy.yaml');
    writeFileSync(policy, 'scopes:\n  "r":\n    role: app_reader\n    allow:\n      - { actions: [select], tables: [t] }\n  "w":\n    role: app_missing\n    allow:\n      - { actions: [select], tables: [t] }\n');
  });

  after(async () => {
    await db.stop();
  });

  const run = async (user: string, password: string) => {
    const sg = await startScopegate({ databases: { app: { url: db.url('postgres', user, password) } }, auth: AUTH, policy, log: { level: 'info' } }, { SG_SECRET: SECRET });
    return sg;
  };

  it('warns about a superuser login', async () => {
    const sg = await run('postgres', 'postgres-test-pw');
    try {
      await sg.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('the login role is a superuser'));
    } finally {
      await sg.stop();
    }
  });

  it('warns about INHERIT, owned objects and policy roles that are missing or not granted', async () => {
    const sg = await run('owning_login', 'pw');
    try {
      await sg.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('the login role has INHERIT'));
      const owned = await sg.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('the login role has privileges or objects of its own'));
      assert.equal(owned.owned, 1);
      const missing = await sg.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('a policy role does not exist'));
      assert.equal(missing.role, 'app_missing');
      const notGranted = await sg.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('the login role cannot SET ROLE'));
      assert.equal(notGranted.role, 'app_reader');
    } finally {
      await sg.stop();
    }
  });

  it('the recommended setup gets no warning but the missing role', async () => {
    const sg = await run('good_login', 'pw');
    try {
      await sg.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('a policy role does not exist'));
      const bad = sg.logs.filter((l) => typeof l.msg === 'string' && /^the login role/.test(l.msg));
      assert.deepEqual(bad.map((l) => l.msg), []);
    } finally {
      await sg.stop();
    }
  });
});
