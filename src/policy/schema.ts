/** The policy file: YAML schema, validation, defaults. */
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';
import { policyExprError } from './exprs.js';
import { splitSqlName } from './names.js';
import { ACTIONS, type Action, type Mask, type NamePattern, type Policy, type RowFilter, type Rule, type ScopePolicy } from './types.js';

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'a mapping' : typeof v;
}

function checkKeys(o: Obj, allowed: readonly string[], at: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw new ConfigError(at === '' ? k : `${at}.${k}`, `unknown key (expected one of: ${allowed.join(', ')})`);
  }
}

function str(v: unknown, at: string): string {
  if (typeof v !== 'string') throw new ConfigError(at, `must be a string, got ${typeName(v)}`);
  if (v.trim() === '') throw new ConfigError(at, 'must not be empty');
  return v;
}

function strList(v: unknown, at: string): string[] {
  if (!Array.isArray(v) || v.length === 0) throw new ConfigError(at, `must be a non-empty list of strings, got ${typeName(v)}`);
  return v.map((x, i) => str(x, `${at}[${i}]`));
}

function oneOf<T extends string>(v: unknown, options: readonly T[], at: string): T {
  const s = str(v, at);
  if (!(options as readonly string[]).includes(s)) throw new ConfigError(at, `must be one of ${options.join(', ')}, got "${s}"`);
  return s as T;
}

/** `orders`, `public.orders`, `"Orders"`, `public.*`, `*` (every schema). */
function namePattern(text: string, defaultSchema: string, at: string): NamePattern {
  if (text.trim() === '*') return { schema: '*', name: '*' };
  const parts = splitSqlName(text.replace(/\.\*$/, '.__star__'));
  if (parts === null || parts.length > 2) throw new ConfigError(at, `"${text}" is not a valid name (name, schema.name, schema.* or *)`);
  const fix = (p: string): string => (p === '__star__' ? '*' : p);
  return parts.length === 1 ? { schema: defaultSchema, name: fix(parts[0]!) } : { schema: parts[0]!, name: fix(parts[1]!) };
}

const TABLE_ACTIONS: readonly Action[] = ['select', 'insert', 'update', 'delete', 'truncate', 'lock', 'usage', 'ddl'];
const COLUMN_ACTIONS: readonly Action[] = ['select', 'insert', 'update'];

function parseRule(raw: unknown, defaultSchema: string, at: string): Rule {
  if (!isObj(raw)) throw new ConfigError(at, `must be a mapping like { actions: [select], tables: [orders] }, got ${typeName(raw)}`);
  checkKeys(raw, ['actions', 'tables', 'columns', 'functions', 'channels', 'star'], at);
  if (raw.actions === undefined) throw new ConfigError(`${at}.actions`, 'is required');
  const actions = new Set<Action>(strList(raw.actions, `${at}.actions`).map((a, i) => oneOf(a.toLowerCase(), ACTIONS, `${at}.actions[${i}]`)));
  if (actions.has('all')) {
    if (actions.size > 1) throw new ConfigError(`${at}.actions`, 'all cannot be combined with other actions');
    for (const k of ['tables', 'columns', 'functions', 'channels']) {
      if (raw[k] !== undefined) throw new ConfigError(`${at}.${k}`, 'actions: [all] applies to everything and takes no targets');
    }
    if (raw.star !== undefined) throw new ConfigError(`${at}.star`, 'actions: [all] applies to everything and takes no options');
    return { actions, tables: null, columns: null, functions: null, channels: null, starExpand: false };
  }
  const wantsTables = TABLE_ACTIONS.some((a) => actions.has(a));
  let tables: NamePattern[] | null = null;
  if (raw.tables !== undefined) {
    if (!wantsTables) throw new ConfigError(`${at}.tables`, `none of the actions (${[...actions].join(', ')}) applies to tables`);
    tables = strList(raw.tables, `${at}.tables`).map((t, i) => namePattern(t, defaultSchema, `${at}.tables[${i}]`));
  } else if (wantsTables) {
    throw new ConfigError(`${at}.tables`, `is required for ${TABLE_ACTIONS.filter((a) => actions.has(a)).join(', ')}`);
  }
  let columns: Set<string> | null = null;
  if (raw.columns !== undefined) {
    if (!COLUMN_ACTIONS.some((a) => actions.has(a))) throw new ConfigError(`${at}.columns`, 'columns only restrict select, insert and update');
    columns = new Set(strList(raw.columns, `${at}.columns`).map((c, i) => {
      const p = splitSqlName(c);
      if (p === null || p.length !== 1 || p[0] === '*') throw new ConfigError(`${at}.columns[${i}]`, `"${c}" is not a column name`);
      return p[0]!;
    }));
  }
  let functions: NamePattern[] | null = null;
  if (raw.functions !== undefined) {
    if (!actions.has('execute')) throw new ConfigError(`${at}.functions`, 'functions need actions: [execute]');
    functions = strList(raw.functions, `${at}.functions`).map((f, i) => namePattern(f, defaultSchema, `${at}.functions[${i}]`));
  } else if (actions.has('execute')) {
    throw new ConfigError(`${at}.functions`, 'is required for execute');
  }
  let channels: Set<string> | null = null;
  if (raw.channels !== undefined) {
    if (!actions.has('listen') && !actions.has('notify')) throw new ConfigError(`${at}.channels`, 'channels need actions listen or notify');
    channels = new Set(strList(raw.channels, `${at}.channels`));
  }
  let starExpand = false;
  if (raw.star !== undefined) {
    oneOf(raw.star, ['expand'] as const, `${at}.star`);
    if (!actions.has('select') || columns === null) throw new ConfigError(`${at}.star`, 'star: expand needs actions: [select] and columns');
    starExpand = true;
  }
  return { actions, tables, columns, functions, channels, starExpand };
}

/** A concrete table name (no patterns): `orders`, `public.orders`. */
function tableName(text: string, defaultSchema: string, at: string): { schema: string; name: string } {
  const p = splitSqlName(text);
  if (p === null || p.length > 2 || p.some((x) => x === '*')) throw new ConfigError(at, `"${text}" is not a table name (name or schema.name)`);
  return p.length === 1 ? { schema: defaultSchema, name: p[0]! } : { schema: p[0]!, name: p[1]! };
}

function exprText(v: unknown, kind: 'filter' | 'mask', at: string): string {
  const sql = str(v, at);
  const err = policyExprError(kind, sql);
  if (err !== null) throw new ConfigError(at, err);
  return sql;
}

function parseRowFilters(raw: unknown, defaultSchema: string, at: string): RowFilter[] {
  if (raw === undefined) return [];
  if (!isObj(raw)) throw new ConfigError(at, `must be a mapping of table names to SQL conditions, got ${typeName(raw)}`);
  return Object.entries(raw).map(([t, v]) => ({ table: tableName(t, defaultSchema, `${at}.${t}`), sql: exprText(v, 'filter', `${at}.${t}`) }));
}

function parseMasks(raw: unknown, defaultSchema: string, at: string): Mask[] {
  if (raw === undefined) return [];
  if (!isObj(raw)) throw new ConfigError(at, `must be a mapping of table.column to SQL expressions, got ${typeName(raw)}`);
  return Object.entries(raw).map(([k, v]) => {
    const p = splitSqlName(k);
    if (p === null || p.length < 2 || p.length > 3 || p.some((x) => x === '*')) throw new ConfigError(`${at}.${k}`, `"${k}" is not table.column or schema.table.column`);
    const column = p[p.length - 1]!;
    const table = p.length === 2 ? { schema: defaultSchema, name: p[0]! } : { schema: p[0]!, name: p[1]! };
    return { table, column, sql: exprText(v, 'mask', `${at}.${k}`) };
  });
}

/** Validates a parsed policy document; throws ConfigError naming the dotted key path. */
export function parsePolicy(doc: unknown): Policy {
  if (!isObj(doc)) throw new ConfigError('(root)', `policy must be a YAML mapping, got ${typeName(doc)}`);
  checkKeys(doc, ['default_schema', 'catalog', 'mode', 'scopes'], '');
  let defaultSchema = 'public';
  if (doc.default_schema !== undefined) {
    const p = splitSqlName(str(doc.default_schema, 'default_schema'));
    if (p === null || p.length !== 1) throw new ConfigError('default_schema', 'must be a schema name');
    defaultSchema = p[0]!;
  }
  const catalog = doc.catalog === undefined ? 'read' : oneOf(doc.catalog, ['read', 'deny'] as const, 'catalog');
  const mode = doc.mode === undefined ? 'enforce' : oneOf(doc.mode, ['enforce', 'audit'] as const, 'mode');
  if (!isObj(doc.scopes) || Object.keys(doc.scopes).length === 0) {
    throw new ConfigError('scopes', `must be a mapping of scope names to { role, allow }, got ${typeName(doc.scopes)}`);
  }
  const scopes: ScopePolicy[] = [];
  for (const [name, raw] of Object.entries(doc.scopes)) {
    const at = `scopes.${name}`;
    if (/\s/.test(name) || name === '') throw new ConfigError(at, 'scope names cannot contain spaces');
    if (!isObj(raw)) throw new ConfigError(at, `must be a mapping { role, allow }, got ${typeName(raw)}`);
    checkKeys(raw, ['role', 'allow', 'row_filters', 'masks'], at);
    if (raw.role === undefined) throw new ConfigError(`${at}.role`, 'is required: statements granted by a scope run under its role');
    const role = str(raw.role, `${at}.role`);
    if (!Array.isArray(raw.allow) || raw.allow.length === 0) throw new ConfigError(`${at}.allow`, `must be a non-empty list of rules, got ${typeName(raw.allow)}`);
    const rules = raw.allow.map((r, i) => parseRule(r, defaultSchema, `${at}.allow[${i}]`));
    const rowFilters = parseRowFilters(raw.row_filters, defaultSchema, `${at}.row_filters`);
    const masks = parseMasks(raw.masks, defaultSchema, `${at}.masks`);
    scopes.push({ name, role, all: rules.some((r) => r.actions.has('all')), rules, rowFilters, masks });
  }
  return { defaultSchema, catalog, mode, scopes };
}

export interface LoadedPolicy {
  policy: Policy;
  /** Content hash: the same file gives the same version, any change a new one. */
  version: string;
  /** The YAML it was read from (the decision workers load the same). */
  text: string;
}

export function parsePolicyText(text: string): LoadedPolicy {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError('(root)', `not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  const policy = parsePolicy(doc);
  const version = createHash('sha256').update(text).digest('hex').slice(0, 12);
  return { policy, version, text };
}

export function loadPolicyFile(file: string): LoadedPolicy {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('(file)', `cannot read ${file}: ${(err as Error).message}`);
  }
  return parsePolicyText(text);
}
