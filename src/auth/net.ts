/** Client address helpers: parsing, CIDR matching (IPv4-mapped IPv6 aware), loopback test. */
import { isIP } from 'node:net';

export interface Cidr {
  family: 4 | 6;
  base: bigint;
  prefix: number;
}

interface Addr {
  family: 4 | 6;
  value: bigint;
}

function parseV4(s: string): bigint | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let v = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

function parseV6(s: string): bigint | null {
  let str = s;
  const pct = str.indexOf('%');
  if (pct >= 0) str = str.slice(0, pct);
  if (isIP(str) !== 6) return null;
  const lastColon = str.lastIndexOf(':');
  const maybeV4 = str.slice(lastColon + 1);
  if (maybeV4.includes('.')) {
    // Rewrite an embedded dotted quad as two hex groups.
    const v4 = parseV4(maybeV4);
    if (v4 === null) return null;
    str = `${str.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const halves = str.split('::');
  if (halves.length > 2) return null;
  const toGroups = (h: string): number[] => (h === '' ? [] : h.split(':').map((g) => parseInt(g, 16)));
  const head = toGroups(halves[0]!);
  let groups: number[];
  if (halves.length === 2) {
    const rest = toGroups(halves[1]!);
    const fill = 8 - head.length - rest.length;
    if (fill < 0) return null;
    groups = [...head, ...new Array<number>(fill).fill(0), ...rest];
  } else {
    groups = head;
  }
  if (groups.length !== 8 || groups.some((g) => Number.isNaN(g) || g < 0 || g > 0xffff)) return null;
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

/** Parses an address; IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes IPv4. */
export function parseAddress(s: string): Addr | null {
  const t = s.trim();
  if (isIP(t) === 4) {
    const v = parseV4(t);
    return v === null ? null : { family: 4, value: v };
  }
  const v6 = parseV6(t.startsWith('[') && t.endsWith(']') ? t.slice(1, -1) : t);
  if (v6 === null) return null;
  if (v6 >> 32n === 0xffffn) return { family: 4, value: v6 & 0xffffffffn };
  return { family: 6, value: v6 };
}

/** Parses `10.0.0.0/8`, `::1/128`, `::ffff:127.0.0.1/128` or a bare address. */
export function parseCidr(s: string): Cidr | null {
  const [addrPart, prefixPart, extra] = s.trim().split('/');
  if (addrPart === undefined || extra !== undefined) return null;
  const raw = addrPart.trim();
  const addr = parseAddress(raw);
  if (!addr) return null;
  // A mapped address written as IPv6 with an IPv6 prefix length: shift it into IPv4 terms.
  const wasMapped = addr.family === 4 && raw.includes(':');
  const width = addr.family === 4 ? 32 : 128;
  let prefix = width;
  if (prefixPart !== undefined) {
    if (!/^\d{1,3}$/.test(prefixPart)) return null;
    prefix = Number(prefixPart);
    if (wasMapped) {
      if (prefix < 96 || prefix > 128) return null;
      prefix -= 96;
    }
    if (prefix > width) return null;
  }
  const mask = prefix === 0 ? 0n : ((1n << BigInt(prefix)) - 1n) << BigInt(width - prefix);
  return { family: addr.family, base: addr.value & mask, prefix };
}

export function cidrContains(c: Cidr, address: string): boolean {
  const a = parseAddress(address);
  if (!a || a.family !== c.family) return false;
  const width = c.family === 4 ? 32 : 128;
  const mask = c.prefix === 0 ? 0n : ((1n << BigInt(c.prefix)) - 1n) << BigInt(width - c.prefix);
  return (a.value & mask) === c.base;
}

/** 127.0.0.0/8, ::1, their IPv4-mapped forms, and Unix-socket peers (empty / path address). */
export function isLoopback(address: string): boolean {
  if (address === '' || address === 'localhost' || address.startsWith('/')) return true;
  const a = parseAddress(address);
  if (!a) return false;
  if (a.family === 4) return a.value >> 24n === 127n;
  return a.value === 1n;
}
