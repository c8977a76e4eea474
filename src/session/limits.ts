/** Limits on what one client may ask scopegate to parse: the size of a statement text and the number of statements in it. */
import { SqlError, SQLSTATE } from '../errors.js';

/**
 * The parser's cost grows with the text (a million `SELECT 1;` take seconds), and it runs on
 * the event loop every client shares: a text past these limits is refused before it is
 * parsed, with Postgres's 54000, and the session goes on.
 */
export interface StatementLimits {
  /** Bytes of one Query's or Parse's message (max_statement_size). */
  readonly maxBytes: number;
  /** Statements in one Query (max_statements_per_query). */
  readonly maxStatements: number;
}

/** The refusal for a statement text of `bytes` bytes, or null when within the limits. */
export function statementRefusal(limits: StatementLimits, sql: string, bytes: number): SqlError | null {
  if (bytes > limits.maxBytes) {
    return new SqlError(SQLSTATE.PROGRAM_LIMIT_EXCEEDED, `statement of ${bytes} bytes exceeds max_statement_size (${limits.maxBytes})`, {
      hint: 'Send it in smaller statements, or raise pool.max_statement_size.',
    });
  }
  // Cheap to count only when there could be too many.
  if (bytes / 2 < limits.maxStatements) return null;
  const n = countStatements(sql, limits.maxStatements + 1);
  if (n > limits.maxStatements) {
    return new SqlError(SQLSTATE.PROGRAM_LIMIT_EXCEEDED, `more than ${limits.maxStatements} statements in one query exceeds max_statements_per_query`, {
      hint: 'Send fewer statements per query, or raise pool.max_statements_per_query.',
    });
  }
  return null;
}

/**
 * Statements separated by `;` outside quotes and comments ('...', E'...', "...", $tag$...$tag$,
 * -- and nested C-style comments), counted up to `stop`. A lexical count for the limit only: the parser
 * still decides what the text means.
 */
export function countStatements(sql: string, stop = Infinity): number {
  let n = 0;
  let content = false;
  const len = sql.length;
  for (let i = 0; i < len && n < stop; i++) {
    const c = sql.charCodeAt(i);
    if (c === 0x3b) { // ;
      if (content) n++;
      content = false;
      continue;
    }
    if (c === 0x27 || c === 0x22) { // ' or "
      const escapes = c === 0x27 && i > 0 && (sql.charCodeAt(i - 1) | 0x20) === 0x65; // E'...'
      i = skipQuoted(sql, i, c, escapes);
    } else if (c === 0x2d && sql.charCodeAt(i + 1) === 0x2d) { // --
      const nl = sql.indexOf('\n', i);
      i = nl < 0 ? len : nl;
      continue;
    } else if (c === 0x2f && sql.charCodeAt(i + 1) === 0x2a) { // /*
      i = skipComment(sql, i);
      continue;
    } else if (c === 0x24) { // $tag$
      const m = /^\$([A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$/.exec(sql.slice(i, i + 64));
      if (m !== null) {
        const close = sql.indexOf(m[0], i + m[0].length);
        i = close < 0 ? len : close + m[0].length - 1;
      }
    } else if (c <= 0x20) {
      continue;
    }
    content = true;
  }
  return content && n < stop ? n + 1 : n;
}

function skipQuoted(sql: string, open: number, q: number, escapes: boolean): number {
  for (let i = open + 1; i < sql.length; i++) {
    const c = sql.charCodeAt(i);
    if (escapes && c === 0x5c) { i++; continue; }
    if (c === q) {
      if (sql.charCodeAt(i + 1) === q) { i++; continue; } // '' or "" inside
      return i;
    }
  }
  return sql.length;
}

function skipComment(sql: string, open: number): number {
  let depth = 0;
  for (let i = open; i < sql.length - 1; i++) {
    if (sql.charCodeAt(i) === 0x2f && sql.charCodeAt(i + 1) === 0x2a) { depth++; i++; }
    else if (sql.charCodeAt(i) === 0x2a && sql.charCodeAt(i + 1) === 0x2f) { depth--; i++; if (depth === 0) return i; }
  }
  return sql.length;
}
