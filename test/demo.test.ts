/**
 * The README's 30-second demo, end to end from a fresh start: `scopegate demo`, then the
 * README's commands as written (psql, pgbench -i, pgbench -S) with the tokens the demo
 * printed, the mint hint pasted as printed, and the audit in the file the demo names.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify } from 'yaml';
import { CLI } from './harness/scopegate.js';
import { freePort } from './harness/ports.js';
import { runProcess } from './harness/process.js';
import { pollUntil, ROOT } from './scope.fixture.test.js';

/** The README's demo commands: the sh block after "In another terminal:", continuations joined. */
function readmeCommands(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const at = readme.indexOf('In another terminal:');
  assert.ok(at > 0, 'README has the demo section');
  const block = readme.slice(at).split('```sh\n')[1]!.split('```')[0]!;
  return block.replace(/\\\n\s*/g, '').split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter((l) => l !== '');
}

/** A demo started from a fresh directory: its output so far, its port, and how to stop it. */
interface DemoRun {
  dir: string;
  port: number;
  out: () => string;
  stop: () => Promise<void>;
}

/** `scopegate demo` with the shipped config (on a free port, `extra` merged in), up to its banner. */
async function startDemo(extra: Record<string, unknown> = {}): Promise<DemoRun> {
  const dir = mkdtempSync(join(tmpdir(), 'demo-'));
  // As root, PostgreSQL runs as the postgres user and must reach .scopegate inside.
  chmodSync(dir, 0o755);
  const port = await freePort();
  // The shipped config, on a free port, its policy where the checkout has it.
  const doc = parseYaml(readFileSync(join(ROOT, 'config', 'scopegate.yaml'), 'utf8')) as Record<string, unknown>;
  Object.assign(doc, extra, { listen: { host: '127.0.0.1', port } });
  copyFileSync(join(ROOT, 'config', 'policy.yaml'), join(dir, 'policy.yaml'));
  writeFileSync(join(dir, 'scopegate.yaml'), stringify(doc));
  // Its own process group, so the end is Ctrl-C's: SIGINT to the demo and its PostgreSQL.
  // The demo makes its own development secret: none from this environment.
  const env = { ...process.env };
  delete env.SCOPEGATE_JWT_SECRET;
  const demo: ChildProcess = spawn(process.execPath, [CLI, 'demo', join(dir, 'scopegate.yaml')], { cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  demo.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  demo.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((r) => demo.on('exit', (code) => r(code)));
  const stop = async (): Promise<void> => {
    if (demo.pid !== undefined && demo.exitCode === null) {
      process.kill(-demo.pid, 'SIGINT');
      await exited;
    }
    // PostgreSQL may outlive the demo by a moment: stop the one this test started.
    const pidFile = join(dir, '.scopegate', 'demo-pg', 'postmaster.pid');
    if (existsSync(pidFile)) {
      const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
      try { process.kill(pid, 'SIGINT'); } catch { /* already gone */ }
      await pollUntil(async () => !existsSync(pidFile), 'demo PostgreSQL stopped', 600, 100).catch(() => undefined);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  await pollUntil(async () => out.includes('Stop with Ctrl-C') || demo.exitCode !== null, 'demo banner', 3000, 100);
  assert.ok(out.includes('Stop with Ctrl-C'), out);
  return { dir, port, out: () => out, stop };
}

describe('the README demo from a fresh start', { timeout: 300_000 }, () => {
  let run: DemoRun;
  let dir: string;
  let port: number;

  before(async () => {
    run = await startDemo();
    ({ dir, port } = run);
  });
  after(async () => { await run?.stop(); });

  const tokenAfter = (marker: string): string => {
    const m = new RegExp(`${marker.replace(/[()]/g, '\\$&')}\\n\\s*PGPASSWORD=(\\S+)`).exec(run.out());
    assert.ok(m, `no token after ${marker} in ${run.out()}`);
    return m[1]!;
  };
  const sh = (cmd: string) => runProcess('sh', ['-c', cmd], {}, 120_000);

  test('the README commands run as written with the printed tokens', async () => {
    const tokens: Record<string, string> = {
      '<orders:read token>': tokenAfter('# orders:read'),
      '<admin token>': tokenAfter('# pgbench through scopegate (admin scope):'),
    };
    const cmds = readmeCommands();
    assert.equal(cmds.length, 4, cmds.join('\n'));
    const results = [];
    for (const raw of cmds) {
      let cmd = raw.replace(/port=6432/g, `port=${port}`).replace(/-p 6432/g, `-p ${port}`);
      for (const [k, v] of Object.entries(tokens)) cmd = cmd.split(k).join(v);
      results.push({ raw, r: await sh(cmd) });
    }
    const [read, secrets, init, bench] = results;
    assert.equal(read!.r.code, 0, read!.r.err);
    assert.match(read!.r.out, /app_reader/);
    assert.notEqual(secrets!.r.code, 0);
    assert.match(secrets!.r.err, /permission denied: select on public\.secrets/);
    assert.doesNotMatch(secrets!.r.out, /launch codes/);
    assert.match(init!.raw, /pgbench -i/);
    assert.equal(init!.r.code, 0, init!.r.err);
    assert.doesNotMatch(init!.r.err, /must be owner|permission denied/);
    assert.equal(bench!.r.code, 0, bench!.r.err);
    assert.match(bench!.r.out, /number of failed transactions: 0/);
    assert.match(bench!.r.out, /scaling factor: 1/);
  });

  test('the mint hint pastes as printed and its token logs in', async () => {
    const m = /Mint more with:\n\s*(.+)\n/.exec(run.out());
    assert.ok(m, run.out());
    const minted = await runProcess('sh', ['-c', m[1]!]);
    assert.equal(minted.code, 0, minted.err);
    const token = minted.out.trim();
    const r = await runProcess('psql', [`host=127.0.0.1 port=${port} dbname=app user=bob`, '-Atc', 'select current_user, count(*) from orders'], { PGPASSWORD: token });
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^app_reader\|\d+$/m);
  });

  test('the audit goes to the file the demo names, not the terminal', async () => {
    const file = join(dir, '.scopegate', 'audit.log');
    assert.ok(run.out().includes(`audit lines               ${file}`), run.out());
    const lines = await pollUntil(async () => {
      if (!existsSync(file)) return null;
      const ls = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
      return ls.some((l) => l.decision === 'deny' && String(l.statement).includes('secrets')) ? ls : null;
    }, 'the denial in the audit file');
    assert.ok(lines.some((l) => l.decision === 'allow'));
    assert.ok(!run.out().includes('"stream":"audit"'), 'audit lines on the terminal');
  });
});

describe('the demo with workers: 2', { timeout: 300_000 }, () => {
  let run: DemoRun;
  before(async () => { run = await startDemo({ workers: 2 }); });
  after(async () => { await run?.stop(); });

  test('both workers run the demo\'s server (not the demo again) and serve its clients', async () => {
    const m = /# orders:read\n\s*PGPASSWORD=(\S+)/.exec(run.out());
    assert.ok(m, run.out());
    // node:cluster starts workers with the primary's command line: `demo` must not run twice.
    await pollUntil(async () => (run.out().match(/"msg":"listening"/g) ?? []).length >= 2 ? true : null, 'both workers listening');
    assert.doesNotMatch(run.out(), /failed to start/);
    for (let i = 0; i < 4; i++) {
      const r = await runProcess('psql', [`host=127.0.0.1 port=${run.port} dbname=app user=alice`, '-Atc', 'select current_user, count(*) from orders'], { PGPASSWORD: m[1]! });
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /^app_reader\|\d+$/m);
    }
  });
});
