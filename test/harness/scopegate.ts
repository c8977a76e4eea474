import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { freePort } from './ports.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = join(ROOT, 'bin', 'scopegate.js');

export interface LogLine { msg?: string; level?: number; [k: string]: unknown }

export interface RunningScopegate {
  port: number;
  host: string;
  proc: ChildProcess;
  configFile: string;
  dir: string;
  logs: LogLine[];
  stderr: string[];
  /** Resolves with the first log line matching `pred` (already seen or future). */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Rewrites the config file (for SIGHUP tests). */
  writeConfig(cfg: Record<string, unknown>): void;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Node flags given as one space-separated string (SCOPEGATE_NODE_ARGS, bench/builds.ts --a-args). */
export function nodeFlags(text: string): string[] {
  return text.split(' ').filter((f) => f !== '');
}

/** Runs the real scopegate CLI as a child process with the given config object. */
export async function startScopegate(cfg: Record<string, unknown>, env: Record<string, string> = {}): Promise<RunningScopegate> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-test-'));
  const configFile = join(dir, 'scopegate.yaml');
  const full = { listen: { host: '127.0.0.1', port }, ...cfg };
  writeFileSync(configFile, stringify(full));
  // SCOPEGATE_NODE_ARGS: node flags for the proxy only (a bench run with --cpu-prof, which NODE_OPTIONS refuses).
  const proc = spawn(process.execPath, [...nodeFlags(process.env.SCOPEGATE_NODE_ARGS ?? ''), CLI, '--config', configFile], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: LogLine[] = [];
  const stderr: string[] = [];
  const watchers: Array<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let parsed: LogLine;
      try { parsed = JSON.parse(line) as LogLine; } catch { parsed = { msg: line }; }
      logs.push(parsed);
      for (const w of [...watchers]) if (w.pred(parsed)) { watchers.splice(watchers.indexOf(w), 1); w.resolve(parsed); }
    }
  });
  proc.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const waitForLog = (pred: (l: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> => {
    const seen = logs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`log line not seen; stderr: ${stderr.join('')}; logs: ${JSON.stringify(logs.slice(-5))}`)), timeoutMs);
      watchers.push({ pred, resolve: (l) => { clearTimeout(t); resolve(l); } });
      void exited.then((code) => { clearTimeout(t); reject(new Error(`scopegate exited with ${code}: ${stderr.join('')}`)); });
    });
  };
  await waitForLog((l) => l.msg === 'listening');
  return {
    port,
    host: '127.0.0.1',
    proc,
    configFile,
    dir,
    logs,
    stderr,
    waitForLog,
    writeConfig(next) {
      writeFileSync(configFile, stringify({ listen: { host: '127.0.0.1', port }, ...next }));
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (proc.exitCode === null) proc.kill(signal);
      const code = await exited;
      rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}
