// Concern: a test-only preload (NODE_OPTIONS=--import) that lets a scale test read a scopegate process's memory after a full GC.
/**
 * Loaded into the scopegate child with `NODE_OPTIONS=--import <this file>` (see
 * probeEnv()); defines no tests. On SIGUSR2 it runs a full garbage collection and prints one
 * JSON line on stdout — `{"msg":"memory probe","seq":n,...process.memoryUsage()}` — which the
 * harness collects with the process's pino log lines. Nothing in src/ knows about it.
 */
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { fileURLToPath } from 'node:url';

/** The environment that loads this probe into a child node process. */
export function probeEnv(): Record<string, string> {
  return { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${fileURLToPath(import.meta.url)}`.trim() };
}

/** One answer to SIGUSR2, as printed. */
export interface MemoryReading {
  msg: 'memory probe';
  seq: number;
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  /** Committed bytes per V8 heap space (new_space, old_space, ...). */
  spaces: Record<string, number>;
}

// Only in the process that was started with the probe (not when a test runner imports the file).
if (process.env.NODE_OPTIONS?.includes(fileURLToPath(import.meta.url)) === true && process.argv.some((a) => a.endsWith('scopegate.js'))) {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (() => void) | undefined;
  let seq = 0;
  process.on('SIGUSR2', () => {
    // Twice: the first pass may leave finalisers' garbage for the second.
    gc?.();
    gc?.();
    const m = process.memoryUsage();
    const line: MemoryReading = { msg: 'memory probe', seq: ++seq, rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, spaces: {} };
    for (const sp of getHeapSpaceStatistics()) line.spaces[sp.space_name] = sp.physical_space_size;
    process.stdout.write(JSON.stringify(line) + '\n');
  });
}
