/** Refusals inside a transaction: the server raises them, the client sees only scopegate's message. */
import type { SqlError } from '../errors.js';
import { quoteLiteral } from '../session/settings.js';
import { errorResponse } from './messages.js';

/**
 * A DO block that raises `err` on the server, so a transaction aborts exactly as Postgres
 * would. The message carries client text: its literals are E'' (read the same whatever the
 * session's settings) and the body's dollar tag is one the text does not contain.
 */
export function raiseStatement(err: SqlError): string {
  const body = `BEGIN RAISE EXCEPTION USING ERRCODE = ${quoteLiteral(err.code)}, MESSAGE = ${quoteLiteral(err.message)}${err.hint ? `, HINT = ${quoteLiteral(err.hint)}` : ''}; END`;
  let tag = '$scopegate$';
  for (let i = 0; body.includes(tag); i++) tag = `$scopegate${i}$`;
  return `DO ${tag} ${body} ${tag}`;
}

/** Refusals raised but not yet answered; past this many the oldest are forgotten. */
const MAX_PENDING = 16;

const E = 0x45;
/** The CONTEXT Postgres adds to an error raised in a DO block. */
const DO_CONTEXT = /^PL\/pgSQL function inline_code_block line \d+ at RAISE$/;

/**
 * Replaces the server's answer to a raiseStatement with the refusal as scopegate sends it
 * outside a transaction: the same code, message and hint, without the CONTEXT
 * ("PL/pgSQL function inline_code_block") and source location that say how it was raised.
 */
export class RefusalFilter {
  private readonly pending: SqlError[] = [];

  /** A raiseStatement of `err` went to the server: its ErrorResponse is to be replaced. */
  expect(err: SqlError): void {
    if (this.pending.length >= MAX_PENDING) this.pending.shift();
    this.pending.push(err);
  }

  get active(): boolean {
    return this.pending.length !== 0;
  }

  /**
   * buf[start, end) as the client should see it: null when unchanged. The range holds whole
   * messages (the backend gathers small ones); anything that does not frame is left alone.
   * Only an ErrorResponse with a pending refusal's code and message and the DO block's
   * CONTEXT is replaced, so the server's own errors pass as they are.
   */
  filter(buf: Buffer, start: number, end: number): Buffer | null {
    let parts: Buffer[] | null = null;
    let copied = start;
    let off = start;
    while (off + 5 <= end && this.pending.length !== 0) {
      const len = buf.readInt32BE(off + 1);
      if (len < 4) return parts === null ? null : finish(parts, buf, copied, end);
      const next = off + 1 + len;
      if (next > end) break;
      if (buf[off] === E) {
        const i = this.match(buf, off + 5, next);
        if (i >= 0) {
          const err = this.pending.splice(i, 1)[0]!;
          (parts ??= []).push(buf.subarray(copied, off), errorResponse(err));
          copied = next;
        }
      }
      off = next;
    }
    return parts === null ? null : finish(parts, buf, copied, end);
  }

  /** Index of the pending refusal this ErrorResponse body answers, or -1. */
  private match(buf: Buffer, from: number, to: number): number {
    let code: string | null = null;
    let message: string | null = null;
    let where: string | null = null;
    let p = from;
    while (p < to && buf[p] !== 0) {
      const field = buf[p]!;
      const z = buf.indexOf(0, p + 1);
      if (z < 0 || z >= to) return -1;
      const v = buf.toString('utf8', p + 1, z);
      if (field === 0x43) code = v;
      else if (field === 0x4d) message = v;
      else if (field === 0x57) where = v;
      p = z + 1;
    }
    if (where === null || !DO_CONTEXT.test(where)) return -1;
    return this.pending.findIndex((e) => e.code === code && e.message === message);
  }
}

function finish(parts: Buffer[], buf: Buffer, copied: number, end: number): Buffer {
  parts.push(buf.subarray(copied, end));
  return Buffer.concat(parts);
}
