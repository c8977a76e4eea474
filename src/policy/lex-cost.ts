/** A linear pre-scan of a statement text: how many characters PostgreSQL's lexer (libpg-query) would read twice, and the refusal when too many. */
import { SqlError, SQLSTATE } from '../errors.js';

/*
 * scan.l's {operator} rule matches a whole run of operator characters, then trims it: at the
 * first slash-star or dash-dash inside it (comment starts), and, when the run has none of
 * ~!@#^&|`?% before its last char, off its trailing + and - (so `=-` lexes as `=` `-`). The
 * rest is put back (yyless) and read again by the next token; {xcstart} (slash-star plus the
 * operator characters after it) likewise puts back all but its first two characters. A run of
 * n such characters can so be read ~n²/2 times, and libpg-query lexes every text three times
 * (parse, fingerprint, normalize). Everything else the lexer puts back is bounded per token.
 */

/** Re-read characters allowed beyond REREAD_PER_CHAR per character of text. */
export const REREAD_BASE = 1_000_000;
/** Re-read characters allowed per character of text. */
export const REREAD_PER_CHAR = 4;

/** The most re-reads a text of `length` characters may cost. */
export function rereadLimit(length: number): number {
  return REREAD_PER_CHAR * length + REREAD_BASE;
}

const OP = new Uint8Array(128);
for (const c of '~!@#^&|`?+-*/%<>=') OP[c.charCodeAt(0)] = 1;

const PLUS = 0x2b, MINUS = 0x2d, STAR = 0x2a, SLASH = 0x2f, QUOTE = 0x27, DQUOTE = 0x22, DOLLAR = 0x24, BACKSLASH = 0x5c;

function isOp(c: number): boolean {
  return c < 128 && OP[c] === 1;
}

function isIdentStart(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f || c >= 0x80;
}

function isIdentCont(c: number): boolean {
  return isIdentStart(c) || (c >= 0x30 && c <= 0x39) || c === DOLLAR;
}

function isDolqCont(c: number): boolean {
  return isIdentStart(c) || (c >= 0x30 && c <= 0x39);
}

/** Index past the quote that closes the literal opened at `open` ('' or "" doubled inside; backslash escapes in E'...'). */
function skipQuoted(s: string, open: number, q: number, backslashes: boolean): number {
  const len = s.length;
  for (let i = open + 1; i < len; i++) {
    const c = s.charCodeAt(i);
    if (backslashes && c === BACKSLASH) { i++; continue; }
    if (c === q) {
      if (s.charCodeAt(i + 1) === q) { i++; continue; }
      return i + 1;
    }
  }
  return len;
}

/**
 * Characters the lexer would read again, estimated in one pass over `sql` (time linear in its
 * length). Stops counting once past `stop`. Strings ('...' as under standard_conforming_strings,
 * which scopegate pins; E'...' with backslash escapes), quoted identifiers, dollar quotes and
 * -- comments cost nothing; nested C-style comments are followed as the lexer does.
 */
export function lexRereads(sql: string, stop = Infinity): number {
  const len = sql.length;
  let cost = 0;
  /** Nesting of /* comments; -1: outside any. */
  let depth = -1;
  // The operator run the position is in: its end, the next comment start inside it (or
  // runEnd), the next char that keeps a trailing +/-, and the last char that is not + or -
  // up to `pmEnd`. Each moves only forward within a run, so a run costs time linear in it.
  let runEnd = -1, cut = -1, pmEnd = -1, pmLast = -1;
  // The next slash-star, dash-dash and char that keeps a trailing +/- anywhere at or after
  // where they were last looked for (native searches; each moves only forward).
  const next = { slash: -1, dash: -1, keep: -1 };
  let i = 0;
  while (i < len && cost <= stop) {
    const c = sql.charCodeAt(i);
    if (depth >= 0) {
      // Inside a comment (scan.l's xc state).
      if (c === SLASH && sql.charCodeAt(i + 1) === STAR) {
        // <xc>{xcstart}: slash-star and the operator chars after it, all but two put back.
        if (i >= runEnd) runEnd = endOfRun(sql, i);
        cost += runEnd - i - 2;
        depth++;
        i += 2;
      } else if (c === STAR) {
        let j = i + 1;
        while (sql.charCodeAt(j) === STAR) j++;
        if (sql.charCodeAt(j) === SLASH) { depth--; j++; }
        i = j;
      } else {
        i++;
      }
      continue;
    }
    if (isOp(c)) {
      if (i >= runEnd) {
        runEnd = endOfRun(sql, i);
        cut = i; pmEnd = i - 1; pmLast = -1;
      }
      if (c === MINUS && sql.charCodeAt(i + 1) === MINUS) {
        // A -- comment: to the end of the line, read once.
        const nl = sql.indexOf('\n', i);
        i = nl < 0 ? len : nl + 1;
        continue;
      }
      if (c === SLASH && sql.charCodeAt(i + 1) === STAR) {
        // {xcstart}: the run's rest is read, all but slash-star put back.
        cost += runEnd - i - 2;
        depth = 0;
        i += 2;
        continue;
      }
      // {operator}: reads the run's rest [i, runEnd), keeps `n` chars, puts back the others.
      if (cut <= i) cut = nextCommentStart(sql, i + 1, runEnd, next);
      let n = cut - i;
      const last = sql.charCodeAt(i + n - 1);
      if (n > 1 && (last === PLUS || last === MINUS)) {
        if (next.keep < i) {
          KEEP.lastIndex = i;
          next.keep = KEEP.exec(sql)?.index ?? len;
        }
        if (next.keep > i + n - 2) {
          // No char that keeps them: the trailing + and - go back.
          const end = i + n - 1;
          if (end > pmEnd) {
            // The last char in (pmEnd, end] that is not + or - (a native search of the slice).
            const from = Math.max(pmEnd + 1, i);
            const m = LAST_NON_PM.exec(sql.slice(from, end + 1));
            if (m !== null) pmLast = from + m.index;
            pmEnd = end;
          }
          n = pmLast > i ? pmLast - i + 1 : 1;
        }
      }
      cost += runEnd - i - n;
      i += n;
      continue;
    }
    if (c === QUOTE) {
      i = skipQuoted(sql, i, QUOTE, false);
    } else if (c === DQUOTE) {
      i = skipQuoted(sql, i, DQUOTE, false);
    } else if (isIdentStart(c)) {
      let j = i + 1;
      while (j < len && isIdentCont(sql.charCodeAt(j))) j++;
      // E'...' (and e'...'): a string with backslash escapes. Any other identifier before a
      // quote (x'..', b'..', n'..', U&'..', or a longer name) is followed by a plain one.
      if (j === i + 1 && (c | 0x20) === 0x65 && sql.charCodeAt(j) === QUOTE) j = skipQuoted(sql, j, QUOTE, true);
      i = j;
    } else if (c >= 0x30 && c <= 0x39) {
      // A number, with any junk the lexer refuses after it (1e'x' is no E string).
      let j = i + 1;
      while (j < len && (isIdentCont(sql.charCodeAt(j)) || sql.charCodeAt(j) === 0x2e)) j++;
      i = j;
    } else if (c === DOLLAR) {
      i = skipDollar(sql, i);
    } else {
      i++;
    }
  }
  return cost;
}

const RUN_END = /[^~!@#^&|`?+\-*/%<>=]/g;
const KEEP = /[~!@#^&|`?%]/g;
const LAST_NON_PM = /[^+-][+-]*$/;

/** End of the operator-character run starting at `i`. */
function endOfRun(s: string, i: number): number {
  RUN_END.lastIndex = i;
  return RUN_END.exec(s)?.index ?? s.length;
}

/** First index in [from, end-1) where slash-star or dash-dash starts; `end` if none. */
function nextCommentStart(s: string, from: number, end: number, next: { slash: number; dash: number }): number {
  if (next.slash < from) { const k = s.indexOf('/*', from); next.slash = k < 0 ? s.length : k; }
  if (next.dash < from) { const k = s.indexOf('--', from); next.dash = k < 0 ? s.length : k; }
  const k = Math.min(next.slash, next.dash);
  return k + 1 < end ? k : end;
}

/** Past a $tag$...$tag$ string opened at `i`, or past the `$` when it opens none ($1, a stray $). */
function skipDollar(s: string, i: number): number {
  const len = s.length;
  let j = i + 1;
  if (j < len && isIdentStart(s.charCodeAt(j))) {
    j++;
    while (j < len && isDolqCont(s.charCodeAt(j))) j++;
  }
  if (s.charCodeAt(j) !== DOLLAR) return i + 1;
  const tag = s.slice(i, j + 1);
  const close = s.indexOf(tag, j + 1);
  return close < 0 ? len : close + tag.length;
}

/**
 * The refusal (54001) for a text whose lexing would cost more re-reads than the limit allows,
 * or null. Linear in the text; run before any parse, on the event loop or a thread.
 */
export function lexCostRefusal(sql: string): SqlError | null {
  const limit = rereadLimit(sql.length);
  const cost = lexRereads(sql, limit);
  if (cost <= limit) return null;
  return new SqlError(SQLSTATE.STATEMENT_TOO_COMPLEX, 'statement too complex: its runs of operator characters would make the SQL parser read it again and again', {
    hint: `A text may cost its parser at most ${REREAD_PER_CHAR} re-read characters per character plus ${REREAD_BASE.toLocaleString('en-US')}; put spaces between operators (as in "- -1") and end comments before long runs of operator characters.`,
  });
}
