import type { QueryMode, TargetName } from './options.js';

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
  scale: number;
  pgbouncerAuth: string;
}

export interface Report {
  machine: MachineFacts;
  settings: BenchSettings;
  rows: Row[];
  notes: string[];
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

/** Ratios compare a proxy row with the pgbouncer and direct rows of its (mode, clients) group. */
function ratioCells(rows: Row[], r: Row): string[] {
  if (r.target === 'direct') return ['', '', ''];
  const group = groupOf(rows, r);
  const bouncer = find(group, 'pgbouncer');
  const direct = find(group, 'direct');
  if (r.target === 'pgbouncer') return ['', ratio(r.tps, direct?.tps ?? null), ''];
  return [
    ratio(r.tps, bouncer?.tps ?? null),
    ratio(r.tps, direct?.tps ?? null),
    ratio(r.proxyCpuUsPerTxn, bouncer?.proxyCpuUsPerTxn ?? null),
  ];
}

export function markdownTable(rows: Row[]): string {
  const header = '| mode | clients | target | tps | avg latency ms | failed | proxy CPU µs/txn | tps ÷ pgbouncer | tps ÷ direct | CPU ÷ pgbouncer |';
  const rule = '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|';
  const body = rows.map((r) => {
    const cells = [
      r.mode, String(r.clients), r.target,
      tpsCell(r),
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
    `- versions: ${m.postgres}; ${m.pgbench}; ${m.pgbouncer ?? 'PgBouncer not installed'}; scopegate ${m.scopegate}; Node ${m.node}`,
    `- settings: script ${s.script}${s.connect ? ' with -C (new connection per transaction)' : ''}, ${s.duration} s per run, pgbench -j ${s.jobs}, scale ${s.scale}, proxy pool size ${s.pool} (transaction mode), PgBouncer auth_type ${s.pgbouncerAuth}, scopegate auth trust`,
  ];
  const starred = report.rows.some((r) => r.tps !== null && r.note !== null);
  const notes = [...(starred ? ['† pgbench reported errors in this run (see below); its tps is not comparable.'] : []), ...report.notes].map((n) => `- ${n}`);
  return [...facts, '', markdownTable(report.rows), ...(notes.length > 0 ? ['', 'Notes:', ...notes] : []), ''].join('\n');
}
