/** `scopegate check`: one policy decision from the command line. */
import { ConfigError } from '../errors.js';
import { initParser } from './parse.js';
import { PolicyStore } from './store.js';
import type { Decision } from './types.js';

export interface CheckIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

const USAGE = 'usage: scopegate check --policy FILE [--scopes "s1 s2"]... [--claims JSON] [--json] "SQL"';

const defaultIo: CheckIo = {
  out: (l) => process.stdout.write(l + '\n'),
  err: (l) => process.stderr.write(l + '\n'),
};

function formatDecision(d: Decision): string[] {
  const lines = [
    `decision: ${d.allowed ? 'allow' : 'deny'}${d.enforced ? '' : ' (audit mode: not enforced)'}`,
    `role: ${d.role ?? '-'}${d.scope !== null ? ` (scope "${d.scope}")` : ''}`,
    `reason: ${d.reason}`,
  ];
  if (d.error !== undefined) lines.push(`error: ${d.error.code} ${d.error.message}`, `hint: ${d.error.hint}`);
  d.statements.forEach((s, i) => {
    lines.push(`statement ${i + 1} [${s.kind}]: ${s.allowed ? 'allow' : 'deny'}${s.role !== null ? ` as ${s.role}` : ''}: ${s.text}`);
    if (s.actions.length > 0) lines.push(`  needs: ${s.actions.join(', ')}`);
    if (s.error !== undefined) lines.push(`  ${s.error.message} (${s.error.hint})`);
  });
  if (d.rewritten !== null) lines.push(`rewritten: ${d.rewritten}`);
  for (const b of d.bindChecks) lines.push(`bind check: $${b.param} (${b.column}) must be one of ${b.allowed.map((x) => JSON.stringify(x)).join(', ')}`);
  lines.push(`policy version: ${d.policyVersion}`);
  if (d.fingerprint !== '') lines.push(`fingerprint: ${d.fingerprint}`);
  return lines;
}

/**
 * `scopegate check --policy FILE --scopes "orders:read" "SELECT ..."`.
 * Exit code: 0 allow, 1 deny, 2 usage or policy error. `args` excludes the word "check".
 */
export async function runCheck(args: string[], io: CheckIo = defaultIo): Promise<number> {
  let policyFile: string | null = null;
  const scopes: string[] = [];
  const sql: string[] = [];
  let json = false;
  let claims: Record<string, unknown> | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const valueOf = (flag: string): string | null => {
      if (a.startsWith(`${flag}=`)) return a.slice(flag.length + 1);
      const v = args[i + 1];
      i++;
      return v ?? null;
    };
    if (a === '--policy' || a.startsWith('--policy=')) {
      policyFile = valueOf('--policy');
      if (policyFile === null) { io.err(USAGE); return 2; }
    } else if (a === '--scopes' || a.startsWith('--scopes=') || a === '--scope' || a.startsWith('--scope=')) {
      const v = valueOf(a.startsWith('--scopes') ? '--scopes' : '--scope');
      if (v === null) { io.err(USAGE); return 2; }
      scopes.push(...v.split(/[\s,]+/).filter((x) => x !== ''));
    } else if (a === '--claims' || a.startsWith('--claims=')) {
      const v = valueOf('--claims');
      let parsed: unknown;
      try {
        parsed = v === null ? null : JSON.parse(v);
      } catch {
        parsed = null;
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) { io.err('scopegate check: --claims takes a JSON object'); return 2; }
      claims = parsed as Record<string, unknown>;
    } else if (a === '--json') {
      json = true;
    } else if (a === '-h' || a === '--help') {
      io.out(USAGE);
      return 2;
    } else if (a.startsWith('--')) {
      io.err(`scopegate check: unknown option ${a}`);
      io.err(USAGE);
      return 2;
    } else {
      sql.push(a);
    }
  }
  if (policyFile === null || sql.length === 0) {
    io.err(USAGE);
    return 2;
  }
  let store: PolicyStore;
  try {
    store = PolicyStore.load(policyFile);
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`scopegate check: invalid policy ${policyFile}: ${err.message}`);
      return 2;
    }
    throw err;
  }
  const unknown = scopes.filter((s) => !store.policy.scopes.some((p) => p.name === s));
  if (unknown.length > 0) io.err(`note: the policy does not define scope(s) ${unknown.map((s) => `"${s}"`).join(', ')}; they grant nothing`);
  await initParser();
  const d = store.check(sql.join(' '), scopes, claims);
  if (json) io.out(JSON.stringify(d, null, 2));
  else for (const l of formatDecision(d)) io.out(l);
  return d.allowed ? 0 : 1;
}
