/** The startup packet: SSLRequest, GSSENCRequest, CancelRequest, StartupMessage and options. */
import { SqlError, SQLSTATE } from '../errors.js';
import { CANCEL_REQUEST, GSSENC_REQUEST, SSL_REQUEST } from './codes.js';

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; pid: number; secret: Buffer }
  | { kind: 'startup'; major: number; minor: number; params: Map<string, string>; protocolOptions: string[] };

/** Largest startup packet accepted (PostgreSQL uses 10000 bytes too). */
export const MAX_STARTUP_PACKET = 10_000;

/** Parses an untyped startup-phase packet: buf is the whole packet including its length word. */
export function parseStartupPacket(buf: Buffer): StartupPacket {
  const code = buf.readInt32BE(4);
  if (code === SSL_REQUEST) return { kind: 'ssl' };
  if (code === GSSENC_REQUEST) return { kind: 'gssenc' };
  if (code === CANCEL_REQUEST) {
    if (buf.length < 16) throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, 'invalid cancel request', { severity: 'FATAL' });
    return { kind: 'cancel', pid: buf.readInt32BE(8), secret: buf.subarray(12) };
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) {
    throw new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, `unsupported frontend protocol ${major}.${minor}: server supports 3.0`, { severity: 'FATAL' });
  }
  const params = new Map<string, string>();
  const protocolOptions: string[] = [];
  let off = 8;
  while (off < buf.length && buf[off] !== 0) {
    const kEnd = buf.indexOf(0, off);
    if (kEnd < 0) break;
    const vEnd = buf.indexOf(0, kEnd + 1);
    if (vEnd < 0) throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, 'invalid startup packet layout: missing value terminator', { severity: 'FATAL' });
    const key = buf.toString('utf8', off, kEnd);
    const value = buf.toString('utf8', kEnd + 1, vEnd);
    if (key.startsWith('_pq_.')) protocolOptions.push(key);
    else params.set(key, value);
    off = vEnd + 1;
  }
  if (off >= buf.length || buf[off] !== 0) {
    throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, 'invalid startup packet layout: expected terminator as last byte', { severity: 'FATAL' });
  }
  return { kind: 'startup', major, minor, params, protocolOptions };
}

/**
 * Splits libpq's `options` parameter (`-c name=value --name=value`, backslash escapes
 * spaces) into settings.
 */
export function parseOptions(options: string): Map<string, string> {
  const words: string[] = [];
  let cur = '';
  let esc = false;
  let inWord = false;
  for (const ch of options) {
    if (esc) { cur += ch; esc = false; inWord = true; continue; }
    if (ch === '\\') { esc = true; continue; }
    if (/\s/.test(ch)) {
      if (inWord) { words.push(cur); cur = ''; inWord = false; }
      continue;
    }
    cur += ch;
    inWord = true;
  }
  if (inWord) words.push(cur);
  const out = new Map<string, string>();
  for (let i = 0; i < words.length; i++) {
    let w = words[i]!;
    if (w === '-c') {
      w = words[++i] ?? '';
    } else if (w.startsWith('-c')) {
      w = w.slice(2);
    } else if (w.startsWith('--')) {
      w = w.slice(2);
    } else {
      throw new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, `unsupported startup option "${w}": only -c name=value is accepted`, { severity: 'FATAL' });
    }
    const eq = w.indexOf('=');
    if (eq <= 0) throw new SqlError(SQLSTATE.SYNTAX_ERROR, `invalid startup option "${w}": expected name=value`, { severity: 'FATAL' });
    out.set(w.slice(0, eq).replace(/-/g, '_').toLowerCase(), w.slice(eq + 1));
  }
  return out;
}
