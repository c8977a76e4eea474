/** The pgbench benchmark's results as markdown: facts, a row per (mode, clients, target), ratios. */
import { ENFORCED_AUDIT, type QueryMode, type TargetName } from './options.js';

export interface Row {
  mode: QueryMode;
  clients: number;
  target: TargetName;
  tps: number | null;
  latencyMs: number | null;
  transactions: number | null;
  failed: number | null;
  abortedClients: number;
  /** CPU time of the proxy process per transaction; null for direct. */
  proxyCpuUsPerTxn: number | null;
  /** tps of each round, in order, when the row is the median of several rounds. */
  roundTps?: Array<number | null>;
  /** Why the row has no numbers (e.g. unsupported), or pgbench's first errors. */
  note: string | null;
}

export interface MachineFacts {
  date: string;
  cpu: string;
  cores: number;
  memory: string;
  kernel: string;
  node: string;
  postgres: string;
  pgbench: string;
  pgbouncer: string | null;
  /** The second PgBouncer binary (SCOPEGATE_BENCH_PGBOUNCER), target `pgbouncer2`. */
  pgbouncer2: string | null;
  scopegate: string;
  /** 1-minute load average around the measurements; above the core count means other work competed. */
  load: string;
}

export interface BenchSettings {
  duration: number;
  script: string;
  connect: boolean;
  pool: number;
  jobs: number;
  rounds: number;
  scale: number;
  pgbouncerAuth: string;
}

export interface Report {
  machine: MachineFacts;
  settings: BenchSettings;
  rows: Row[];
  notes: string[];
}

export function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function medianOf(values: Array<number | null>): number | null {
  return median(values.filter((x): x is number => x !== null));
}

/** One row for several rounds of a (mode, clients, target): medians, failures summed, every round's notes kept. */
export function medianRow(rounds: Row[]): Row {
  const first = rounds[0];
  if (first === undefined) throw new Error('medianRow: no rounds');
  if (rounds.length === 1) return first;
  const notes = [...new Set(rounds.map((r) => r.note).filter((n): n is string => n !== null))];
  const sum = (xs: Array<number | null>): number | null => xs.some((x) => x !== null) ? xs.reduce<number>((a, x) => a + (x ?? 0), 0) : null;
  return {
    mode: first.mode, clients: first.clients, target: first.target,
    tps: medianOf(rounds.map((r) => r.tps)),
    latencyMs: medianOf(rounds.map((r) => r.latencyMs)),
    transactions: sum(rounds.map((r) => r.transactions)),
    failed: sum(rounds.map((r) => r.failed)),
    abortedClients: rounds.reduce((a, r) => a + r.abortedClients, 0),
    proxyCpuUsPerTxn: medianOf(rounds.map((r) => r.proxyCpuUsPerTxn)),
    roundTps: rounds.map((r) => r.tps),
    note: notes.length === 0 ? null : notes.join(' / '),
  };
}

function fixed(n: number | null, digits: number): string {
  return n === null ? '—' : n.toFixed(digits);
}

function ratio(a: number | null, b: number | null): string {
  return a === null || b === null || b === 0 ? '' : `${(a / b).toFixed(2)}×`;
}

/** A row whose pgbench run reported errors is starred; the notes say what went wrong. */
function tpsCell(r: Row): string {
  if (r.tps === null) return r.note ?? '—';
  return r.note === null ? fixed(r.tps, 0) : `${fixed(r.tps, 0)} †`;
}

function failedCell(r: Row): string {
  if (r.note !== null && r.tps === null) return '—';
  const failed = r.failed === null ? '?' : String(r.failed);
  return r.abortedClients > 0 ? `${failed} (${r.abortedClients} clients aborted)` : failed;
}

function groupOf(rows: Row[], r: Row): Row[] {
  return rows.filter((o) => o.mode === r.mode && o.clients === r.clients);
}

function find(group: Row[], target: TargetName): Row | undefined {
  return group.find((o) => o.target === target);
}

/** The PgBouncer the ratios compare with: the second binary (the newer one) when it ran. */
function referenceBouncer(rows: Row[]): 'pgbouncer' | 'pgbouncer2' {
  return rows.some((r) => r.target === 'pgbouncer2') ? 'pgbouncer2' : 'pgbouncer';
}

/** Ratios compare a proxy row with the reference PgBouncer, direct and (for enforced + audit) plain scopegate rows of its group. */
function ratioCells(rows: Row[], r: Row): string[] {
  if (r.target === 'direct') return ['', '', '', ''];
  const group = groupOf(rows, r);
  const ref = referenceBouncer(rows);
  const bouncer = r.target === ref ? undefined : find(group, ref);
  const direct = find(group, 'direct');
  const plain = r.target === ENFORCED_AUDIT ? find(group, 'scopegate') : undefined;
  return [
    ratio(r.tps, bouncer?.tps ?? null),
    ratio(r.tps, direct?.tps ?? null),
    ratio(r.proxyCpuUsPerTxn, bouncer?.proxyCpuUsPerTxn ?? null),
    ratio(r.tps, plain?.tps ?? null),
  ];
}

function roundsCell(r: Row): string {
  return r.roundTps === undefined ? '' : r.roundTps.map((t) => fixed(t, 0)).join(' / ');
}

export function markdownTable(rows: Row[]): string {
  const ref = referenceBouncer(rows);
  const header = `| mode | clients | target | tps (median) | tps per round | avg latency ms | failed | proxy CPU µs/txn | tps ÷ ${ref} | tps ÷ direct | CPU ÷ ${ref} | tps ÷ scopegate |`;
  const rule = '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|';
  const body = rows.map((r) => {
    const cells = [
      r.mode, String(r.clients), r.target,
      tpsCell(r), roundsCell(r),
      fixed(r.latencyMs, 2), failedCell(r), fixed(r.proxyCpuUsPerTxn, 1),
      ...ratioCells(rows, r),
    ];
    return `| ${cells.join(' | ')} |`;
  });
  return [header, rule, ...body].join('\n');
}

export function markdownReport(report: Report): string {
  const m = report.machine;
  const s = report.settings;
  const facts = [
    `- date: ${m.date}`,
    `- machine: ${m.cpu}, ${m.cores} cores, ${m.memory} RAM, Linux ${m.kernel}; everything (PostgreSQL, proxies, pgbench) on the same machine over loopback`,
    `- 1-min load average: ${m.load} (${m.cores} cores; anything else running skews the numbers)`,
    `- versions: ${m.postgres}; ${m.pgbench}; pgbouncer: ${m.pgbouncer ?? 'not installed'}; pgbouncer2: ${m.pgbouncer2 ?? 'not set (SCOPEGATE_BENCH_PGBOUNCER)'}; scopegate ${m.scopegate}; Node ${m.node}`,
    `- settings: script ${s.script}${s.connect ? ' with -C (new connection per transaction)' : ''}, ${s.duration} s per run, ${s.rounds} interleaved round(s) per configuration (medians shown), pgbench -j ${s.jobs}, scale ${s.scale}, proxy pool size ${s.pool} (transaction mode), PgBouncer auth_type ${s.pgbouncerAuth}, scopegate auth trust (${ENFORCED_AUDIT}: HS256 token as the password, policy enforced, every statement audited to a file)`,
  ];
  const starred = report.rows.some((r) => r.tps !== null && r.note !== null);
  const notes = [...(starred ? ['† pgbench reported errors in this run (see below); its tps is not comparable.'] : []), ...report.notes].map((n) => `- ${n}`);
  return [...facts, '', markdownTable(report.rows), ...(notes.length > 0 ? ['', 'Notes:', ...notes] : []), ''].join('\n');
}
