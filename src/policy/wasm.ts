/** The libpg-query WASM parser of this thread, and what happens when it fails. */
import * as lib from 'libpg-query';

/**
 * Once the parser has trapped or run out of stack inside WASM, this thread's parser is not
 * trusted again: measured, a fresh instance in the same thread could fail on every later
 * text (`Maximum call stack size exceeded` for a 200-byte SELECT), while a new thread's was
 * sound. So a decision worker whose parser failed exits and is replaced, and the event loop,
 * if its own ever fails, sends every text to the workers from then on.
 */
let broken: string | null = null;
let loaded = false;

export async function initWasm(): Promise<void> {
  await lib.loadModule();
  loaded = true;
}

export function wasmReady(): boolean {
  return loaded;
}

/** Why this thread's parser is no longer used (null while it is sound). */
export function wasmBroken(): string | null {
  return broken;
}

/** Thrown for a text when the parser itself failed (or had failed before), not the text's syntax. */
export class ParserFailure extends Error {
  constructor(why: string) {
    super(`the SQL parser failed: ${why}`);
  }
}

/**
 * Runs `f` on the parser. libpg-query reports what it found wrong with a text as an Error
 * (SqlError from parse, a plain Error from fingerprint and normalize): the parser is sound
 * after those. A WASM trap (`memory access out of bounds`, `unreachable`) or a RangeError
 * (the native stack ran out inside WASM) may have left its memory corrupt.
 */
function guarded<T>(f: () => T): T {
  if (broken !== null) throw new ParserFailure(broken);
  try {
    return f();
  } catch (err) {
    if (err instanceof Error && !(err instanceof WebAssembly.RuntimeError) && !(err instanceof RangeError)) throw err;
    broken = err instanceof Error ? err.message : 'the WASM module aborted';
    throw new ParserFailure(broken);
  }
}

export function parseSync(text: string): { stmts?: Array<{ stmt?: unknown }> } {
  return guarded(() => lib.parseSync(text) as { stmts?: Array<{ stmt?: unknown }> });
}

export function fingerprintSync(text: string): string {
  return guarded(() => lib.fingerprintSync(text));
}

export function normalizeSync(text: string): string {
  return guarded(() => lib.normalizeSync(text));
}
