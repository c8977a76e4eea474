/** Builders for every protocol message scopegate writes itself: lengths are computed, never typed in. */
import type { SqlError } from '../errors.js';
import { FE } from './codes.js';

/**
 * Builders for the messages scopegate itself sends to clients (as a server) and the few it
 * sends to backends outside pg-protocol's serializer. All return ready-to-write buffers.
 */

function typed(type: string, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function cstr(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

export function authenticationOk(): Buffer {
  return typed('R', Buffer.from([0, 0, 0, 0]));
}

export function authenticationCleartextPassword(): Buffer {
  return typed('R', Buffer.from([0, 0, 0, 3]));
}

export function authenticationSASL(mechanisms: readonly string[]): Buffer {
  const parts: Buffer[] = [Buffer.from([0, 0, 0, 10])];
  for (const m of mechanisms) parts.push(cstr(m));
  parts.push(Buffer.from([0]));
  return typed('R', Buffer.concat(parts));
}

export function authenticationSASLContinue(data: Buffer): Buffer {
  return typed('R', Buffer.concat([Buffer.from([0, 0, 0, 11]), data]));
}

export function parameterStatus(name: string, value: string): Buffer {
  return typed('S', Buffer.concat([cstr(name), cstr(value)]));
}

export function backendKeyData(pid: number, secret: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeInt32BE(pid, 0);
  b.writeInt32BE(secret | 0, 4);
  return typed('K', b);
}

const READY = {
  I: typed('Z', Buffer.from('I')),
  T: typed('Z', Buffer.from('T')),
  E: typed('Z', Buffer.from('E')),
};

export function readyForQuery(status: 'I' | 'T' | 'E'): Buffer {
  return READY[status];
}

export function negotiateProtocolVersion(minor: number, unsupported: readonly string[]): Buffer {
  const head = Buffer.allocUnsafe(8);
  head.writeInt32BE(minor, 0);
  head.writeInt32BE(unsupported.length, 4);
  return typed('v', Buffer.concat([head, ...unsupported.map(cstr)]));
}

export function commandComplete(tag: string): Buffer {
  return typed('C', cstr(tag));
}

export function errorResponse(err: Pick<SqlError, 'code' | 'message' | 'severity' | 'detail' | 'hint'>): Buffer {
  const parts: Buffer[] = [
    Buffer.from('S'), cstr(err.severity),
    Buffer.from('V'), cstr(err.severity),
    Buffer.from('C'), cstr(err.code),
    Buffer.from('M'), cstr(err.message),
  ];
  if (err.detail) parts.push(Buffer.from('D'), cstr(err.detail));
  if (err.hint) parts.push(Buffer.from('H'), cstr(err.hint));
  parts.push(Buffer.from([0]));
  return typed('E', Buffer.concat(parts));
}

export function noticeResponse(code: string, message: string): Buffer {
  return typed('N', Buffer.concat([Buffer.from('S'), cstr('WARNING'), Buffer.from('V'), cstr('WARNING'), Buffer.from('C'), cstr(code), Buffer.from('M'), cstr(message), Buffer.from([0])]));
}

/** Frontend messages scopegate sends to backends on its own account. */
export function query(sql: string): Buffer {
  return typed('Q', cstr(sql));
}

export const SYNC = typed('S', Buffer.alloc(0));

/** Bind of `statement` to `portal` with no parameters, text results. */
export function bind(portal: string, statement: string): Buffer {
  // portal, statement, 0 parameter formats, 0 parameters, 0 result formats
  return typed('B', Buffer.concat([cstr(portal), cstr(statement), Buffer.alloc(6)]));
}

/** Execute of `portal`, every row (maxRows 0). */
export function execute(portal: string): Buffer {
  return typed('E', Buffer.concat([cstr(portal), Buffer.alloc(4)]));
}

/** Close of a portal. */
export function closePortal(name: string): Buffer {
  return typed('C', Buffer.concat([Buffer.from('P'), cstr(name)]));
}

export function copyFail(reason: string): Buffer {
  return typed('f', cstr(reason));
}

/** Backend-side answers scopegate gives the client itself. */
export const PARSE_COMPLETE = typed('1', Buffer.alloc(0));
export const CLOSE_COMPLETE = typed('3', Buffer.alloc(0));
/** The one-byte answer to SSLRequest / GSSENCRequest: go on in plain text. */
export const ENCRYPTION_REFUSED = Buffer.from('N');
export const COPY_FAIL_CLIENT_GONE = copyFail('client disconnected');
export const TERMINATE = typed('X', Buffer.alloc(0));

export function cancelRequest(pid: number, secret: number): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(80877102, 4);
  b.writeInt32BE(pid, 8);
  b.writeInt32BE(secret | 0, 12);
  return b;
}

/** Fields of an ErrorResponse/NoticeResponse body, keyed by field type letter. */
export function parseErrorFields(buf: Buffer, start: number, end: number): Map<string, string> {
  const fields = new Map<string, string>();
  let off = start + 5;
  while (off < end && buf[off] !== 0) {
    const code = String.fromCharCode(buf[off]!);
    const nul = buf.indexOf(0, off + 1);
    if (nul < 0 || nul >= end) break;
    fields.set(code, buf.toString('utf8', off + 1, nul));
    off = nul + 1;
  }
  return fields;
}

/** Parse message: name, then `tail` = query text NUL, int16 count, parameter type oids. */
export function parseMessage(name: string, tail: Buffer): Buffer {
  const nameLen = Buffer.byteLength(name);
  const out = Buffer.allocUnsafe(5 + nameLen + 1 + tail.length);
  out[0] = FE.Parse;
  out.writeInt32BE(4 + nameLen + 1 + tail.length, 1);
  out.write(name, 5);
  out[5 + nameLen] = 0;
  tail.copy(out, 6 + nameLen);
  return out;
}

export function closeStatement(name: string): Buffer {
  const nameLen = Buffer.byteLength(name);
  const out = Buffer.allocUnsafe(5 + 1 + nameLen + 1);
  out[0] = FE.Close;
  out.writeInt32BE(4 + 1 + nameLen + 1, 1);
  out[5] = 0x53; // 'S'
  out.write(name, 6);
  out[6 + nameLen] = 0;
  return out;
}

/**
 * Replaces the statement name of a Bind ('B': portal, statement, rest) or Describe
 * ('D': 'S', statement) message. `nameStart`/`nameEnd` delimit the old name (NUL excluded).
 */
export function renameStatement(buf: Buffer, start: number, end: number, nameStart: number, nameEnd: number, serverName: string): Buffer {
  const newLen = Buffer.byteLength(serverName);
  const total = (end - start) - (nameEnd - nameStart) + newLen;
  const out = Buffer.allocUnsafe(total);
  buf.copy(out, 0, start, nameStart);
  out.write(serverName, nameStart - start);
  buf.copy(out, nameStart - start + newLen, nameEnd, end);
  out.writeInt32BE(total - 1, 1);
  return out;
}


/** A column of a result scopegate answers itself (the admin console): text or int8. */
export interface ColumnDef {
  name: string;
  type: 'text' | 'int8';
}

const TYPE_OID = { text: 25, int8: 20 } as const;
const TYPE_LEN = { text: -1, int8: 8 } as const;

export function rowDescription(cols: readonly ColumnDef[]): Buffer {
  const parts: Buffer[] = [Buffer.from([cols.length >> 8, cols.length & 0xff])];
  for (const c of cols) {
    const f = Buffer.alloc(18);
    // table oid 0, column 0, type oid, type length, typmod -1, text format
    f.writeInt32BE(TYPE_OID[c.type], 6);
    f.writeInt16BE(TYPE_LEN[c.type], 10);
    f.writeInt32BE(-1, 12);
    parts.push(cstr(c.name), f);
  }
  return typed('T', Buffer.concat(parts));
}

/** A DataRow of text values (null: SQL NULL). */
export function dataRow(values: ReadonlyArray<string | null>): Buffer {
  const parts: Buffer[] = [Buffer.from([values.length >> 8, values.length & 0xff])];
  for (const v of values) {
    const len = Buffer.alloc(4);
    if (v === null) {
      len.writeInt32BE(-1, 0);
      parts.push(len);
    } else {
      const b = Buffer.from(v, 'utf8');
      len.writeInt32BE(b.length, 0);
      parts.push(len, b);
    }
  }
  return typed('D', Buffer.concat(parts));
}

export const EMPTY_QUERY_RESPONSE = typed('I', Buffer.alloc(0));

/** A NOTICE with a detail (SHOW HELP). */
export function notice(message: string, detail: string): Buffer {
  return typed('N', Buffer.concat([Buffer.from('S'), cstr('NOTICE'), Buffer.from('V'), cstr('NOTICE'), Buffer.from('C'), cstr('00000'), Buffer.from('M'), cstr(message), Buffer.from('D'), cstr(detail), Buffer.from([0])]));
}
