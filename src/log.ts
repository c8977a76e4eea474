import pino, { type Logger } from 'pino';

/** The process log: pino JSON on stdout (stderr would mix with the demo's banner). */
export function createLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}
