/** Reads table columns (pg_attribute) and one-argument function names (pg_proc) for `*` expansion, masks and attribute notation. */
import pg from 'pg';
import type { Logger } from 'pino';
import type { DatabaseConfig } from '../config.js';
import { connectPgClient } from '../backend/connect.js';
import type { CatalogData, ColumnCatalog } from './types.js';

/**
 * Table columns in catalog order, read from pg_attribute (visible whatever the login
 * role's privileges), for `star: expand` and masks. Reloaded on policy reload and after DDL
 * that went through scopegate.
 */
export class DatabaseCatalog {
  private loads = 0;
  private loading: Promise<ColumnCatalog | null> | null = null;

  constructor(private readonly db: DatabaseConfig, private readonly log: Logger) {}

  /** Re-reads the catalog into a new snapshot (null when it cannot); concurrent calls share one load. */
  reload(): Promise<ColumnCatalog | null> {
    this.loading ??= this.load().finally(() => { this.loading = null; });
    return this.loading;
  }

  private async load(): Promise<ColumnCatalog | null> {
    let c: pg.Client | null = null;
    try {
      c = await connectPgClient(this.db, 5_000);
      const r = await c.query<{ nspname: string; relname: string; attname: string }>(
        `SELECT n.nspname, c.relname, a.attname
           FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND a.attnum > 0 AND NOT a.attisdropped
            AND n.nspname NOT LIKE 'pg_toast%'
          ORDER BY n.nspname, c.relname, a.attnum`,
      );
      // `t.name` calls name(t) when name is no column of t: every function callable with one argument.
      const f = await c.query<{ proname: string }>(
        `SELECT DISTINCT proname FROM pg_catalog.pg_proc
          WHERE prokind IN ('f', 'a', 'w') AND pronargs >= 1 AND (pronargs - pronargdefaults <= 1 OR provariadic <> 0)`,
      );
      const tables = new Map<string, string[]>();
      for (const row of r.rows) {
        const key = `${row.nspname}.${row.relname}`;
        let cols = tables.get(key);
        if (!cols) tables.set(key, (cols = []));
        cols.push(row.attname);
      }
      const version = `${this.db.name}:${++this.loads}`;
      this.log.debug({ db: this.db.name, tables: tables.size, version }, 'column catalog loaded');
      return catalogFromData({ version, tables: [...tables], functions: f.rows.map((r) => r.proname) });
    } catch (err) {
      this.log.warn({ db: this.db.name, err: (err as Error).message }, 'could not read the column catalog; star expansion is refused until it loads');
      return null;
    } finally {
      await c?.end().catch(() => undefined);
    }
  }
}

/** A catalog from its plain-data form (the same in the event loop and in a decision worker). */
export function catalogFromData(data: CatalogData): ColumnCatalog {
  const tables = new Map(data.tables);
  const functions = new Set(data.functions);
  return { version: data.version, data, columns: (schema: string, table: string) => tables.get(`${schema}.${table}`), oneArgFunction: (name: string) => functions.has(name) };
}
