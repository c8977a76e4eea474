/** Command-line options of the pgbench benchmark. */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { secondPgbouncerBin } from './pgbouncer.js';

/** pgbench's query protocols (`-M`). */
export type QueryMode = 'simple' | 'extended' | 'prepared';

/** A target kind; scopegate variants are `scopegate:NAME`; `pgbouncer2` is the binary named by SCOPEGATE_BENCH_PGBOUNCER. */
export type TargetName = 'direct' | 'pgbouncer' | 'pgbouncer2' | 'scopegate' | `scopegate:${string}`;

/** The built-in variant: policy enforced (token auth, role per scope) and every statement audited to a file. */
export const ENFORCED_AUDIT: TargetName = 'scopegate:enforced-audit';

export type PgbouncerAuth = 'trust' | 'md5' | 'scram-sha-256';

/** What pgbench runs: a builtin script (`-b`) or a script file (`-f`). */
export type Script = { kind: 'builtin'; name: string } | { kind: 'file'; path: string };

export type JsonObject = { [key: string]: unknown };

export interface BenchOptions {
  duration: number;
  clients: number[];
  modes: QueryMode[];
  pool: number;
  targets: TargetName[];
  script: Script;
  /** `pgbench -C`: a new connection per transaction. */
  connect: boolean;
  jobs: number;
  /** Each (mode, clients) configuration runs this many times per target, targets interleaved. */
  rounds: number;
  scale: number;
  maxConnections: number;
  pgbouncerAuth: PgbouncerAuth;
  /** Merged into the config of every scopegate instance. */
  extraConfig: JsonObject;
  /** Extra scopegate instances, each with its own config overlay (e.g. policy on). */
  variants: Map<string, JsonObject>;
  out: string | null;
}

export const USAGE = `usage: npm run bench -- [options]     (node dist/bench/pgbench.js)
  --duration S          seconds per pgbench run (default 10)
  --clients LIST        client counts, e.g. 20,200 (default 20,200)
  --modes LIST          simple,extended,prepared (default simple,extended)
  --pool N              server connections per proxy (default 10)
  --targets LIST        direct,pgbouncer,pgbouncer2,scopegate,scopegate:enforced-audit[,scopegate:NAME...]
                        (default direct,pgbouncer,scopegate, plus pgbouncer2 when
                        SCOPEGATE_BENCH_PGBOUNCER names a second PgBouncer binary)
  --rounds N            runs per configuration and target, interleaved; the table shows
                        medians (default 3)
  --script NAME|FILE    select-only | simple-update | tpcb-like | path to a pgbench script
                        (default select-only)
  --connect             new connection per transaction (pgbench -C)
  --jobs N              pgbench threads (default 2)
  --scale N             pgbench -i scale factor (default 10)
  --max-connections N   PostgreSQL max_connections (default 400)
  --pgbouncer-auth A    trust | md5 | scram-sha-256 for PgBouncer's clients (default trust)
  --extra-config JSON   merged into scopegate's config
  --variant NAME=JSON   an extra scopegate target "scopegate:NAME" with JSON merged on top
                        of --extra-config (repeatable), e.g. enforcement on vs off
  --out FILE            also write the results (.json: JSON, otherwise markdown)`;

const BUILTIN_SCRIPTS = ['select-only', 'simple-update', 'tpcb-like'];

function fail(message: string): never {
  throw new Error(`${message}\n${USAGE}`);
}

function positiveInt(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) fail(`${flag}: expected a positive integer, got ${JSON.stringify(text)}`);
  return n;
}

function list(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

function parseModes(text: string): QueryMode[] {
  return list(text).map((m) => {
    if (m === 'simple' || m === 'extended' || m === 'prepared') return m;
    return fail(`--modes: unknown mode ${m}`);
  });
}

function parseTargets(text: string): TargetName[] {
  return list(text).map((t): TargetName => {
    if (t === 'direct' || t === 'pgbouncer' || t === 'pgbouncer2' || t === 'scopegate') return t;
    if (/^scopegate:[\w-]+$/.test(t)) return t as `scopegate:${string}`;
    return fail(`--targets: unknown target ${t}`);
  });
}

function parseScript(text: string): Script {
  if (BUILTIN_SCRIPTS.includes(text)) return { kind: 'builtin', name: text };
  const path = resolve(text);
  if (!existsSync(path)) fail(`--script: ${text} is neither ${BUILTIN_SCRIPTS.join(', ')} nor an existing file`);
  return { kind: 'file', path };
}

function parseAuth(text: string): PgbouncerAuth {
  if (text === 'trust' || text === 'md5' || text === 'scram-sha-256') return text;
  return fail(`--pgbouncer-auth: expected trust, md5 or scram-sha-256, got ${text}`);
}

function parseJsonObject(text: string, flag: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return fail(`${flag}: invalid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`${flag}: expected a JSON object`);
  return value as JsonObject;
}

function parseVariants(specs: string[]): Map<string, JsonObject> {
  const variants = new Map<string, JsonObject>();
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    const name = eq > 0 ? spec.slice(0, eq) : '';
    if (!/^[\w-]+$/.test(name)) fail(`--variant: expected NAME=JSON, got ${spec}`);
    variants.set(name, parseJsonObject(spec.slice(eq + 1), `--variant ${name}`));
  }
  return variants;
}

/** Variants are benchmarked even when --targets does not name them. */
function withVariants(targets: TargetName[], variants: Map<string, JsonObject>): TargetName[] {
  const all = [...targets];
  for (const name of variants.keys()) {
    const t: TargetName = `scopegate:${name}`;
    if (!all.includes(t)) all.push(t);
  }
  for (const t of all) {
    if (t !== ENFORCED_AUDIT && t.startsWith('scopegate:') && !variants.has(t.slice('scopegate:'.length))) fail(`--targets: ${t} has no --variant`);
  }
  return all;
}

export function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      duration: { type: 'string', default: '10' },
      clients: { type: 'string', default: '20,200' },
      modes: { type: 'string', default: 'simple,extended' },
      pool: { type: 'string', default: '10' },
      targets: { type: 'string', default: `direct,pgbouncer,${secondPgbouncerBin() === null ? '' : 'pgbouncer2,'}scopegate` },
      rounds: { type: 'string', default: '3' },
      script: { type: 'string', default: 'select-only' },
      connect: { type: 'boolean', default: false },
      jobs: { type: 'string', default: '2' },
      scale: { type: 'string', default: '10' },
      'max-connections': { type: 'string', default: '400' },
      'pgbouncer-auth': { type: 'string', default: 'trust' },
      'extra-config': { type: 'string', default: '{}' },
      variant: { type: 'string', multiple: true, default: [] },
      out: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const variants = parseVariants(values.variant);
  const clients = list(values.clients).map((c) => positiveInt(c, '--clients'));
  const maxConnections = positiveInt(values['max-connections'], '--max-connections');
  const largest = Math.max(...clients);
  if (largest + 50 > maxConnections) fail(`--max-connections ${maxConnections} is too low for ${largest} direct clients`);
  return {
    duration: positiveInt(values.duration, '--duration'),
    clients,
    modes: parseModes(values.modes),
    pool: positiveInt(values.pool, '--pool'),
    targets: withVariants(parseTargets(values.targets), variants),
    script: parseScript(values.script),
    connect: values.connect,
    jobs: positiveInt(values.jobs, '--jobs'),
    rounds: positiveInt(values.rounds, '--rounds'),
    scale: positiveInt(values.scale, '--scale'),
    maxConnections,
    pgbouncerAuth: parseAuth(values['pgbouncer-auth']),
    extraConfig: parseJsonObject(values['extra-config'], '--extra-config'),
    variants,
    out: values.out ?? null,
  };
}
