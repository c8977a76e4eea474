/** `workers: N`: the console's SHOW tables over every worker: counts summed per pool, clients and servers listed with a `worker` column. */
import type { ColumnDef } from '../protocol/messages.js';
import * as show from './show.js';
import type { Table } from './show.js';
import type { AdminServer, Averages } from './stats.js';

/** Tables that hold one row per pool or database: numbers summed over workers. */
const SUMMED: ReadonlyMap<string, number> = new Map([['POOLS', 2], ['STATS', 1], ['DATABASES', 1], ['DECISIONS', 1]]);
/** Tables that list things each worker has: every worker's rows, with its index. */
const LISTED = new Set(['CLIENTS', 'SERVERS', 'POLICY']);
/** Columns that are no count: the largest is shown (waits, per-transaction averages) or the first (settings). */
const MAX_COLUMNS = new Set(['maxwait', 'maxwait_us', 'avg_xact_time', 'avg_query_time', 'avg_wait_time']);
const FIRST_COLUMNS = new Set(['port', 'server_lifetime', 'paused', 'disabled']);

/** Whether SHOW `what` gathers other workers' rows. */
export function gathers(what: string): boolean {
  return SUMMED.has(what) || LISTED.has(what);
}

/** One SHOW table of this process. */
export function localTable(srv: AdminServer, what: string, viewer: { readonly identity: { readonly sub: string } | null }, full: boolean, averages: Averages): Table {
  return what === 'POOLS' ? show.showPools(srv)
    : what === 'CLIENTS' ? show.showClients(srv, viewer, full)
    : what === 'SERVERS' ? show.showServers(srv)
    : what === 'STATS' ? show.showStats(srv, averages)
    : what === 'DATABASES' ? show.showDatabases(srv)
    : what === 'CONFIG' ? show.showConfig(srv)
    : what === 'LISTS' ? show.showLists(srv)
    : what === 'VERSION' ? show.showVersion()
    : what === 'POLICY' ? show.showPolicy(srv)
    : what === 'DECISIONS' ? show.showDecisions(srv)
    : show.showThreads(srv);
}

const WORKER_COLUMN: ColumnDef = { name: 'worker', type: 'int8' };

/** Merges the tables of every worker (`parts`, this worker's among them) into one. */
export function mergeTables(what: string, parts: ReadonlyArray<{ worker: number; table: Table }>): Table {
  const sorted = [...parts].sort((a, b) => a.worker - b.worker);
  const columns = sorted[0]!.table.columns;
  if (LISTED.has(what)) {
    return { columns: [...columns, WORKER_COLUMN], rows: sorted.flatMap((p) => p.table.rows.map((r) => [...r, String(p.worker)])) };
  }
  const keyLen = SUMMED.get(what);
  if (keyLen === undefined) return sorted[0]!.table;
  const byKey = new Map<string, Array<string | null>>();
  for (const p of sorted) {
    for (const row of p.table.rows) {
      const key = JSON.stringify(row.slice(0, keyLen));
      const have = byKey.get(key);
      if (have === undefined) { byKey.set(key, [...row]); continue; }
      columns.forEach((c, i) => {
        if (i < keyLen || c.type !== 'int8' || FIRST_COLUMNS.has(c.name)) return;
        const a = Number(have[i] ?? 0);
        const b = Number(row[i] ?? 0);
        have[i] = String(MAX_COLUMNS.has(c.name) ? Math.max(a, b) : a + b);
      });
    }
  }
  return { columns, rows: [...byKey.values()] };
}
