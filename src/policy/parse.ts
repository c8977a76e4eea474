/** libpg-query wrapper: parse, fingerprint and normalize, cached per distinct text. */
import { fingerprintSync, initWasm, normalizeSync, ParserFailure, parseSync, wasmReady } from './wasm.js';
import { LruCache } from './cache.js';
import { lexCostRefusal } from './lex-cost.js';

/** A parse-tree node: `{ TypeName: body }` wrappers and bodies are both plain objects. */
export type Node = { readonly [key: string]: unknown };

export function isNode(v: unknown): v is Node {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Depth first through a parse tree: the first non-null answer of `visit` for a node, or null. */
export function findNode<T>(tree: unknown, visit: (n: Node) => T | null): T | null {
  if (Array.isArray(tree)) {
    for (const t of tree) {
      const hit = findNode(t, visit);
      if (hit !== null) return hit;
    }
    return null;
  }
  if (!isNode(tree)) return null;
  const here = visit(tree);
  if (here !== null) return here;
  for (const v of Object.values(tree)) {
    if (typeof v !== 'object' || v === null) continue;
    const hit = findNode(v, visit);
    if (hit !== null) return hit;
  }
  return null;
}

/** Calls `visit` for every node of a parse tree. */
export function eachNode(tree: unknown, visit: (n: Node) => void): void {
  findNode<never>(tree, (n) => { visit(n); return null; });
}

/** The unqualified name a FuncCall body calls, as the parser decoded it ('' if none). */
export function calledName(fc: Node): string {
  if (!Array.isArray(fc.funcname)) return '';
  const last: unknown = fc.funcname[fc.funcname.length - 1];
  return isNode(last) && isNode(last.String) && typeof last.String.sval === 'string' ? last.String.sval : '';
}

export interface ParsedStatement {
  /** Parse-tree node type, e.g. SelectStmt. */
  type: string;
  body: Node;
  /** The statement's own text (stmt_location/stmt_len are byte offsets). */
  text: string;
}

export type ParsedText =
  | { ok: true; statements: ParsedStatement[]; fingerprint: string; normalized: string }
  | {
    ok: false; error: string; fingerprint: ''; normalized: string;
    /** The parser itself failed (not the text's syntax). */ failure?: true;
    /** Not parsed: lexing it would cost too much (lex-cost.ts); refused with 54001 and this hint. */ tooComplex?: { hint: string };
  };

/** Loads the WASM parser once. Every other function here needs it to have resolved. */
export function initParser(): Promise<void> {
  return initWasm();
}

export function parserReady(): boolean {
  return wasmReady();
}

const stats = { parses: 0 };
/** How many times the real parser ran (tests check the cache with it). */
export function parseCount(): number {
  return stats.parses;
}

/** A parse tree takes about this many bytes per byte of its text (JSON: 16). */
const TREE_BYTES_PER_CHAR = 32;
/** Trees kept, by size: big texts are decided off the event loop and need no tree here. */
const PARSE_CACHE_BYTES = 256 * 1024 * 1024;
let parseCache = new LruCache<string, ParsedText>(10_000, PARSE_CACHE_BYTES);

export function setParseCacheSize(n: number): void {
  if (n !== parseCache.maxSize) parseCache = new LruCache<string, ParsedText>(n, PARSE_CACHE_BYTES);
}

function sliceBytes(text: string, bytes: Buffer | null, loc: number, len: number): string {
  // Offsets are bytes; for pure-ASCII text they equal string indexes.
  if (bytes === null) return (len > 0 ? text.slice(loc, loc + len) : text.slice(loc)).trim();
  return bytes.toString('utf8', loc, len > 0 ? loc + len : bytes.length).trim();
}

function doParse(text: string): ParsedText {
  if (!wasmReady()) throw new Error('policy parser not initialised: await initParser() first');
  stats.parses++;
  // libpg-query refuses an empty string; Postgres answers it with EmptyQueryResponse.
  if (text.trim() === '') return { ok: true, statements: [], fingerprint: '', normalized: '' };
  // Before the parser, which would lex the text three times (parse, fingerprint, normalize).
  const costly = lexCostRefusal(text);
  if (costly !== null) return { ok: false, error: costly.message, fingerprint: '', normalized: text.slice(0, 200), tooComplex: { hint: costly.hint ?? '' } };
  let tree: unknown;
  try {
    tree = parseSync(text);
  } catch (err) {
    if (err instanceof ParserFailure) return { ok: false, error: err.message, fingerprint: '', normalized: '', failure: true };
    return { ok: false, error: (err as Error).message, fingerprint: '', normalized: '' };
  }
  const stmts = isNode(tree) && Array.isArray(tree.stmts) ? tree.stmts : [];
  const ascii = !/[^\x00-\x7f]/.test(text);
  const bytes = ascii ? null : Buffer.from(text, 'utf8');
  const statements: ParsedStatement[] = [];
  for (const raw of stmts) {
    if (!isNode(raw) || !isNode(raw.stmt)) continue;
    const entry = Object.entries(raw.stmt)[0];
    if (entry === undefined || !isNode(entry[1])) continue;
    const loc = typeof raw.stmt_location === 'number' ? raw.stmt_location : 0;
    const len = typeof raw.stmt_len === 'number' ? raw.stmt_len : 0;
    statements.push({ type: entry[0], body: entry[1], text: sliceBytes(text, bytes, loc, len) });
  }
  let fingerprint = '';
  let normalized = '';
  try {
    fingerprint = fingerprintSync(text);
  } catch {
    // Unusual statements may parse but not fingerprint; the decision does not depend on it.
  }
  try {
    normalized = normalizeSync(text);
  } catch {
    normalized = '';
  }
  return { ok: true, statements, fingerprint, normalized };
}

/** Parses once per distinct text (bounded cache). */
export function parseCached(text: string): ParsedText {
  const hit = parseCache.get(text);
  if (hit !== undefined) return hit;
  const p = doParse(text);
  // A failure of the parser says nothing lasting about the text: the next instance may parse it.
  if (p.ok || p.failure !== true) parseCache.set(text, p, text.length * TREE_BYTES_PER_CHAR);
  return p;
}
