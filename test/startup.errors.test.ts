/**
 * How scopegate ends or complains in one line: a listen port already taken exits 1 with one
 * line (no stack trace), and a policy reload that fails is logged once per attempt.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CLI } from './harness/scopegate.js';
import { runProcess } from './harness/process.js';
import { AUTH, AUTH_PASSWORD, DB, EXAMPLE_POLICY, pollUntil, SECRET, startFixture, type Fixture } from './scope.fixture.test.js';

describe('one-line failures', { timeout: 120_000 }, () => {
  let fx: Fixture;
  let taken: Server;
  before(async () => {
    fx = await startFixture({ policy: 'copy' });
    taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
  });
  after(async () => {
    await new Promise((r) => taken?.close(r));
    await fx?.stop();
  });

  test('a listen port in use ends startup with exit 1 and one line naming it', async () => {
    const addr = taken.address();
    const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
    const cfgFile = join(fx.dir, 'inuse.yaml');
    writeFileSync(cfgFile, stringify({
      listen: { host: '127.0.0.1', port },
      databases: { [DB]: { url: fx.pg.url(DB, 'authenticator', AUTH_PASSWORD) } },
      auth: AUTH,
      policy: EXAMPLE_POLICY,
      log: { level: 'info', audit: 'off' },
    }));
    const r = await runProcess(process.execPath, [CLI, '--config', cfgFile], { SG_SECRET: SECRET });
    assert.equal(r.code, 1);
    const lines = r.err.trim().split('\n');
    assert.equal(lines.length, 1, r.err);
    assert.match(lines[0]!, new RegExp(`^scopegate: cannot listen on 127\\.0\\.0\\.1:${port}: address already in use`));
    assert.doesNotMatch(r.err, /\n\s+at |EADDRINUSE.*\n.*at /);
  });

  test('a failed policy reload is logged once, and a new failure again', async () => {
    const policyFile = join(fx.dir, 'policy.yaml');
    const good = readFileSync(policyFile, 'utf8');
    const failed = () => fx.sg.logs.filter((l) => String(l.msg).startsWith('policy reload failed'));
    assert.equal(failed().length, 0);
    writeFileSync(policyFile, `${good}\n  "broken":\n    role: [not, a, role]\n`);
    await fx.sg.waitForLog((l) => String(l.msg).startsWith('policy reload failed'));
    // The operator also sends SIGHUP: the same file fails the same way, and is not logged again.
    process.kill(fx.sg.proc.pid!, 'SIGHUP');
    const hup = fx.sg.logs.length;
    await fx.sg.waitForLog((l) => l.msg === 'configuration reloaded' && fx.sg.logs.indexOf(l) >= hup);
    // The SIGHUP's policy attempt runs in the same task as that line: a round trip through
    // scopegate afterwards means it is over, so the next write cannot race its read.
    const c = await fx.client('orders:read', { sub: 'after-hup' });
    await c.query('SELECT id FROM orders');
    await c.end();
    // Another mistake is news: logged.
    writeFileSync(policyFile, `${good}\n  "broken2":\n    allow: 3\n`);
    await pollUntil(async () => failed().length >= 2, 'the second failure logged');
    // Then a good policy: every line about the bad ones is in by now.
    writeFileSync(policyFile, `${good}\n# fixed\n`);
    await fx.sg.waitForLog((l) => l.msg === 'policy reloaded');
    const lines = failed();
    assert.equal(lines.length, 2, JSON.stringify(fx.sg.logs.slice(2)));
    assert.match(String(lines[0]!.err), /broken\.role/);
    assert.match(String(lines[1]!.err), /broken2/);
  });
});
