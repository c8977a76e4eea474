/** Actions a policy rule can grant. `all` is the superuser-ish escape hatch (see docs/policy.md). */
export const ACTIONS = [
  'select', 'insert', 'update', 'delete', 'truncate', 'lock', 'usage',
  'execute', 'listen', 'notify', 'ddl', 'all',
] as const;
export type Action = (typeof ACTIONS)[number];

/** Actions that act on relations (tables, views, sequences). */
export type RelAction = 'select' | 'insert' | 'update' | 'delete' | 'truncate' | 'lock' | 'usage' | 'ddl';

/** A schema-qualified relation or function name, already case-folded. */
export interface QualName {
  schema: string;
  name: string;
}

/** `*` in either part matches anything. */
export type NamePattern = QualName;

export interface Rule {
  actions: ReadonlySet<Action>;
  tables: readonly NamePattern[] | null;
  /** null: every column. Only restricts select, insert and update. */
  columns: ReadonlySet<string> | null;
  functions: readonly NamePattern[] | null;
  /** For listen/notify; null: every channel. */
  channels: ReadonlySet<string> | null;
  /** `star: expand`: `*` / `t.*` on the rule's column-restricted tables expand to the allowed columns. */
  starExpand: boolean;
}

/** `row_filters: { table: "<boolean SQL expression>" }` of one scope. */
export interface RowFilter {
  table: QualName;
  sql: string;
}

/** `masks: { table.column: "<SQL expression>" }`: the column is readable only as this expression. */
export interface Mask {
  table: QualName;
  column: string;
  sql: string;
}

export interface ScopePolicy {
  name: string;
  role: string;
  /** Has a rule with `actions: [all]`. */
  all: boolean;
  rules: readonly Rule[];
  rowFilters: readonly RowFilter[];
  masks: readonly Mask[];
}

export interface Policy {
  defaultSchema: string;
  catalog: 'read' | 'deny';
  mode: 'enforce' | 'audit';
  /** In file order: role selection depends on it. */
  scopes: readonly ScopePolicy[];
}

/**
 * One thing a statement needs. `column`: null = the relation as a whole (e.g. count(*),
 * DELETE), '*' = every column (SELECT *, whole-row references), else one column.
 */
export type Access =
  | { t: 'rel'; action: RelAction; rel: QualName; column: string | null }
  /** An unqualified column that may belong to any of `candidates`: all must grant it. */
  | { t: 'col_any'; action: 'select'; candidates: readonly QualName[]; column: string }
  | { t: 'func'; fn: QualName; unqualified: boolean }
  | { t: 'channel'; action: 'listen' | 'notify'; channel: string | null }
  /** Only a scope with `all` grants it. `what` completes "permission denied: ...". */
  | { t: 'forbidden'; what: string };

export interface StatementDecision {
  /** Statement kind: select, insert, update, delete, merge, truncate, copy, explain, ddl, set, ... */
  kind: string;
  /** The statement's own text (sliced from the message). */
  text: string;
  allowed: boolean;
  /** Role of the first scope (policy order) covering the statement; null when denied or none held. */
  role: string | null;
  scope: string | null;
  /** What it needs, human-readable: "select public.orders.id", "execute public.place_order". */
  actions: string[];
  error?: { code: string; message: string; hint: string };
}

export interface Decision {
  /** The policy's verdict. In audit mode the proxy lets denied statements through anyway. */
  allowed: boolean;
  /** false in audit mode: log `would_deny` instead of refusing. */
  enforced: boolean;
  /** Role to run the message under (null: the login role; no scope held). */
  role: string | null;
  scope: string | null;
  statements: StatementDecision[];
  error?: { code: string; message: string; hint: string };
  /** granted | empty | denied | forbidden | split_scopes | role_conflict | unparseable */
  reason: string;
  fingerprint: string;
  normalized: string;
  policyVersion: string;
  /** All statements' actions joined, for audit logs. */
  summary: string;
  /** Text to send to Postgres instead of the client's (row filters, masks, star expansion); null: unchanged. */
  rewritten: string | null;
  /** Checks the proxy must run on the Bind's text-format parameters before executing (writes under a row filter). */
  bindChecks: BindCheck[];
}

/** Parameter `param` (1-based) must, as text, be one of `allowed`; otherwise refuse with 42501. */
export interface BindCheck {
  param: number;
  column: string;
  allowed: string[];
}

/** Table columns in catalog order, provided by the proxy (star expansion, masks, attribute notation). */
export interface ColumnCatalog {
  columns(schema: string, table: string): readonly string[] | undefined;
  /**
   * Whether some function of this name can be called with one argument (so `t.name` may mean
   * `name(t)`); absent: no function is known (a name that is no column of a known table is still a call).
   */
  oneArgFunction?(name: string): boolean;
  readonly version: string;
  /** The catalog as plain data, for the decision workers (absent: they are not used). */
  readonly data?: CatalogData;
}

/** A catalog snapshot as plain data: `schema.table` -> columns, and the one-argument functions. */
export interface CatalogData {
  readonly version: string;
  readonly tables: ReadonlyArray<readonly [string, readonly string[]]>;
  readonly functions: readonly string[];
}

/** Token claims (decoded JWT payload or introspection result). */
export type Claims = Readonly<Record<string, unknown>>;
