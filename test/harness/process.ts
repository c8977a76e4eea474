/** Running a command-line client (psql, pgbench ...) to completion and collecting what it printed. */
import { spawn } from 'node:child_process';

export interface ProcessResult { code: number | null; out: string; err: string }

/** Runs `bin` with `args` (environment added to this process's), killed after `timeoutMs`. */
export function runProcess(bin: string, args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: string[] = [];
    const err: string[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d.toString()));
    child.stderr.on('data', (d: Buffer) => err.push(d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out: out.join(''), err: err.join('') }); });
  });
}
