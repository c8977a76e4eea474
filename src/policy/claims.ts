/** Token claims inside row filters and masks: claim() and claim_array() values. */
import { createHash } from 'node:crypto';
import { claimFunction, claimPathArg } from './exprs.js';
import { isNode, type Node } from './parse.js';
import type { Claims } from './types.js';

/** Looks up 'org.id' as claims.org.id (an exact key containing the dot wins). */
export function claimValue(claims: Claims | undefined, path: string): { found: boolean; value: unknown } {
  if (claims === undefined) return { found: false, value: undefined };
  if (Object.prototype.hasOwnProperty.call(claims, path)) return { found: claims[path] !== undefined, value: claims[path] };
  let cur: unknown = claims;
  for (const part of path.split('.')) {
    if (typeof cur !== 'object' || cur === null || Array.isArray(cur) || !Object.prototype.hasOwnProperty.call(cur, part)) return { found: false, value: undefined };
    cur = (cur as Record<string, unknown>)[part];
  }
  return { found: cur !== undefined, value: cur };
}

/** A claim value as text: strings as they are, everything else as JSON. */
export function claimText(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v) ?? 'null';
}

const stringConst = (s: string): Node => ({ A_Const: { sval: { sval: s } } });
const textType = (array: boolean): Node => ({ names: [{ String: { sval: 'text' } }], typemod: -1, ...(array ? { arrayBounds: [{ Integer: { ival: -1 } }] } : {}) });

/** The literal a claim() becomes, typed by the JSON value (built as AST: nothing to inject into). */
export function claimLiteral(v: unknown): Node {
  if (typeof v === 'string') return stringConst(v);
  if (typeof v === 'boolean') return { A_Const: { boolval: v ? { boolval: true } : {} } };
  if (typeof v === 'number' && Number.isFinite(v)) {
    if (Number.isInteger(v) && Math.abs(v) <= 2147483647) return { A_Const: { ival: v === 0 ? {} : { ival: v } } };
    return { A_Const: { fval: { fval: String(v) } } };
  }
  return stringConst(claimText(v));
}

/** ARRAY['a','b']::text[] (an empty claim array stays typed). */
export function claimArrayLiteral(items: readonly unknown[]): Node {
  const elements = items.map((x) => stringConst(claimText(x)));
  return { TypeCast: { arg: { A_ArrayExpr: elements.length > 0 ? { elements } : {} }, typeName: textType(true) } };
}

/** Tracks which claims a decision used, so the cache can key on exactly those values. */
export class ClaimResolver {
  readonly used = new Map<string, unknown>();
  readonly missing = new Set<string>();
  readonly notArray = new Set<string>();

  constructor(private readonly claims: Claims | undefined) {}

  private get(path: string): { found: boolean; value: unknown } {
    const r = claimValue(this.claims, path);
    this.used.set(path, r.found ? r.value : undefined);
    if (!r.found) this.missing.add(path);
    return r;
  }

  /** A deep copy of a policy expression with claim()/claim_array() replaced by literals. */
  substitute(v: unknown): unknown {
    if (Array.isArray(v)) return v.map((x) => this.substitute(x));
    if (!isNode(v)) return v;
    const fc = v.FuncCall;
    if (isNode(fc)) {
      const fn = claimFunction(fc);
      const path = fn !== null && Array.isArray(fc.args) ? claimPathArg(fc.args[0]) : null;
      if (fn !== null && path !== null) {
        const r = this.get(path);
        // A missing claim denies the statement; NULL only keeps the tree well-formed meanwhile.
        if (!r.found) return { A_Const: { isnull: true } };
        if (fn === 'claim') return claimLiteral(r.value);
        if (!Array.isArray(r.value)) {
          this.notArray.add(path);
          return claimArrayLiteral([]);
        }
        return claimArrayLiteral(r.value);
      }
    }
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = this.substitute(x);
    return out;
  }
}

/** Digest of the claim values a decision depended on (paths in the given order). */
// A token's claims object lives as long as its cached identity: digests are kept with it,
// so a cached decision costs no hashing per statement.
const digests = new WeakMap<object, Map<string, string>>();

export function claimsDigest(paths: readonly string[], claims: Claims | undefined): string {
  if (claims === undefined) return computeDigest(paths, claims);
  const key = paths.join('\u0000');
  let m = digests.get(claims);
  const hit = m?.get(key);
  if (hit !== undefined) return hit;
  const d = computeDigest(paths, claims);
  if (m === undefined) digests.set(claims, (m = new Map()));
  if (m.size < 64) m.set(key, d);
  return d;
}

function computeDigest(paths: readonly string[], claims: Claims | undefined): string {
  const h = createHash('sha256');
  for (const p of paths) {
    const r = claimValue(claims, p);
    h.update(JSON.stringify([p, r.found, r.found ? r.value : null]) ?? '');
    h.update('\u0000');
  }
  return h.digest('base64url');
}
