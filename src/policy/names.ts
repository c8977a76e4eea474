/** Qualified names: resolution against default_schema, case rules, comparison. */
import type { QualName } from './types.js';

/**
 * Splits a possibly qualified SQL name ("public.orders", '"My Table"', 'a."B"') into parts,
 * folding unquoted parts to lower case as Postgres does. Returns null when malformed.
 */
export function splitSqlName(text: string): string[] | null {
  const parts: string[] = [];
  let i = 0;
  const s = text.trim();
  if (s === '') return null;
  while (i <= s.length) {
    let part = '';
    if (s[i] === '"') {
      i++;
      for (;;) {
        if (i >= s.length) return null;
        if (s[i] === '"') {
          if (s[i + 1] === '"') { part += '"'; i += 2; continue; }
          i++;
          break;
        }
        part += s[i++];
      }
      if (part === '') return null;
    } else {
      const start = i;
      while (i < s.length && s[i] !== '.') i++;
      part = s.slice(start, i).trim();
      if (part === '' || part.includes('"')) return null;
      // Postgres folds ASCII letters only (downcase_identifier).
      part = part.replace(/[A-Z]/g, (c) => c.toLowerCase());
    }
    parts.push(part);
    if (i >= s.length) break;
    if (s[i] !== '.') return null;
    i++;
    if (i >= s.length) return null;
  }
  return parts;
}

/** Resolves a policy table/function name: unqualified means `defaultSchema`. */
export function qualify(parts: readonly string[], defaultSchema: string): QualName | null {
  if (parts.length === 1) return { schema: defaultSchema, name: parts[0]! };
  if (parts.length === 2) return { schema: parts[0]!, name: parts[1]! };
  return null;
}

/** Quotes an identifier for display only when needed, so messages read like SQL. */
export function displayIdent(id: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(id) || id === '*' ? id : `"${id.replace(/"/g, '""')}"`;
}

export function displayName(q: QualName): string {
  return `${displayIdent(q.schema)}.${displayIdent(q.name)}`;
}

export function sameName(a: QualName, b: QualName): boolean {
  return a.schema === b.schema && a.name === b.name;
}

export function nameKey(q: QualName): string {
  return `${q.schema}\u0000${q.name}`;
}
