/** Loggers: pino for operations, a separate JSON stream for audit lines. */
import pino, { type Logger } from 'pino';

/** The process log: pino JSON on stdout (stderr would mix with the demo's banner). */
export function createLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}

/**
 * The audit stream: one JSON line per scope decision, on stdout or appended to a file.
 * Writes are buffered (sonic-boom) so auditing stays off the statement's critical path.
 */
export function createAuditLogger(dest: string): Logger {
  const stream = pino.destination({ dest: dest === 'stdout' ? 1 : dest, sync: false, minLength: dest === 'stdout' ? 0 : 4096, mkdir: true });
  return pino({ level: 'info', base: { stream: 'audit' }, timestamp: pino.stdTimeFunctions.isoTime }, stream);
}
