/** Running a Dockerfile's steps without a container engine: parse it, then replay FROM/WORKDIR/COPY/RUN in a directory per stage. */
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, posix, relative } from 'node:path';

export interface Instruction { op: string; args: string; line: number }

export interface Stage {
  name: string;
  from: string;
  /** The stage's filesystem root on this machine. */
  root: string;
  /** The WORKDIR as the image sees it (absolute, posix). */
  workdir: string;
  env: Record<string, string>;
  user: string | null;
  expose: number[];
  entrypoint: string[];
  cmd: string[];
  healthcheck: { options: Record<string, string>; cmd: string[] } | null;
  copies: Array<{ from: string | null; sources: string[]; dest: string }>;
  runs: string[];
}

/** Instructions with comments dropped and `\` continuations joined. */
export function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) {
      line = line.slice(0, -1) + ' ' + lines[++i]!.trim();
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (m === null) throw new Error(`Dockerfile line ${start + 1}: cannot parse ${JSON.stringify(line)}`);
    out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start + 1 });
  }
  return out;
}

function jsonArray(args: string, what: string): string[] {
  const v: unknown = JSON.parse(args);
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`${what} must be a JSON array of strings (exec form)`);
  return v as string[];
}

/** .dockerignore in the subset used here: `**` and `!path` re-includes; the last match wins. */
export function dockerignore(text: string): (rel: string) => boolean {
  const rules = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')).map((l) => {
    const negate = l.startsWith('!');
    const pat = (negate ? l.slice(1) : l).replace(/\/+$/, '');
    if (pat !== '**' && /[*?[]/.test(pat)) throw new Error(`.dockerignore pattern ${l} is outside the subset this test understands`);
    return { negate, pat };
  });
  return (rel) => {
    let ignored = false;
    for (const r of rules) if (r.pat === '**' || rel === r.pat || rel.startsWith(`${r.pat}/`)) ignored = !r.negate;
    return ignored;
  };
}

function run(cmd: string, cwd: string, env: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', cmd], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: string[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d.toString()));
    child.stderr.on('data', (d: Buffer) => out.push(d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`RUN ${cmd} exited ${code}:\n${out.join('').slice(-3000)}`))));
  });
}

/** Copies `src` (a file or a directory's contents) to `dest` as COPY does, skipping what `skip` rejects (paths relative to `base`). */
function copyInto(src: string, dest: string, destIsDir: boolean, base: string, skip: (rel: string) => boolean): void {
  if (!existsSync(src)) throw new Error(`COPY source ${src} does not exist`);
  if (statSync(src).isDirectory()) {
    mkdirSync(dest, { recursive: true });
    cpSync(src, dest, { recursive: true, verbatimSymlinks: true, filter: (p) => !skip(relative(base, p)) });
    return;
  }
  if (skip(relative(base, src))) throw new Error(`COPY ${relative(base, src)}: excluded by .dockerignore`);
  const target = destIsDir ? join(dest, basename(src)) : dest;
  mkdirSync(destIsDir ? dest : join(target, '..'), { recursive: true });
  cpSync(src, target);
}

/**
 * Replays the Dockerfile in `workDir`: each stage gets a root directory of its own, COPY copies
 * from `context` (through .dockerignore) or from an earlier stage, RUN runs with `sh -c` in the
 * stage's WORKDIR with `env` added. Returns the stages, the last being the image.
 */
export async function replayDockerfile(dockerfile: string, context: string, workDir: string, env: Record<string, string>): Promise<Stage[]> {
  const ignore = dockerignore(existsSync(join(context, '.dockerignore')) ? readFileSync(join(context, '.dockerignore'), 'utf8') : '');
  const stages: Stage[] = [];
  const host = (s: Stage, p: string): string => join(s.root, posix.resolve(s.workdir, p));
  for (const ins of parseDockerfile(readFileSync(dockerfile, 'utf8'))) {
    const stage = stages[stages.length - 1];
    if (ins.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (m === null) throw new Error(`FROM at line ${ins.line}`);
      const root = join(workDir, `stage-${stages.length}`);
      mkdirSync(root, { recursive: true });
      stages.push({ name: m[2] ?? String(stages.length), from: m[1]!, root, workdir: '/', env: {}, user: null, expose: [], entrypoint: [], cmd: [], healthcheck: null, copies: [], runs: [] });
      continue;
    }
    if (stage === undefined) throw new Error(`${ins.op} before FROM at line ${ins.line}`);
    switch (ins.op) {
      case 'WORKDIR':
        stage.workdir = posix.resolve(stage.workdir, ins.args);
        mkdirSync(join(stage.root, stage.workdir), { recursive: true });
        break;
      case 'ENV':
        for (const m of ins.args.matchAll(/(\w+)=(\S+)/g)) stage.env[m[1]!] = m[2]!;
        break;
      case 'COPY': {
        const words = ins.args.split(/\s+/);
        let from: string | null = null;
        while (words[0]?.startsWith('--')) {
          const flag = words.shift()!;
          if (flag.startsWith('--from=')) from = flag.slice(7);
          else throw new Error(`COPY flag ${flag} not supported here`);
        }
        const dest = words.pop()!;
        const sources = words;
        const destIsDir = dest.endsWith('/') || sources.length > 1;
        stage.copies.push({ from, sources, dest });
        for (const src of sources) {
          if (from === null) {
            copyInto(join(context, src), host(stage, dest), destIsDir, context, ignore);
          } else {
            const other = stages.find((s) => s.name === from);
            if (other === undefined) throw new Error(`COPY --from=${from}: no such stage`);
            copyInto(host(other, src), host(stage, dest), destIsDir, other.root, () => false);
          }
        }
        break;
      }
      case 'RUN':
        stage.runs.push(ins.args);
        await run(ins.args, join(stage.root, stage.workdir), { ...env, ...stage.env });
        break;
      case 'USER':
        stage.user = ins.args;
        break;
      case 'EXPOSE':
        stage.expose.push(...ins.args.split(/\s+/).map((p) => Number(p.split('/')[0])));
        break;
      case 'ENTRYPOINT':
        stage.entrypoint = jsonArray(ins.args, 'ENTRYPOINT');
        break;
      case 'CMD':
        stage.cmd = jsonArray(ins.args, 'CMD');
        break;
      case 'HEALTHCHECK': {
        const m = /^((?:--\S+\s+)*)CMD\s+(.*)$/.exec(ins.args);
        if (m === null) throw new Error(`HEALTHCHECK at line ${ins.line}: expected [options] CMD [...]`);
        const options: Record<string, string> = {};
        for (const o of m[1]!.matchAll(/--([\w-]+)=(\S+)/g)) options[o[1]!] = o[2]!;
        stage.healthcheck = { options, cmd: jsonArray(m[2]!, 'HEALTHCHECK CMD') };
        break;
      }
      default:
        throw new Error(`Dockerfile instruction ${ins.op} (line ${ins.line}) is not replayed by this harness`);
    }
  }
  return stages;
}

/** Every file under `dir`, relative to it. */
export function listFiles(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix === '' ? e.name : `${prefix}/${e.name}`;
    if (e.isDirectory()) out.push(...listFiles(dir, rel));
    else out.push(rel);
  }
  return out;
}
