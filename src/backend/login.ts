/** Logging in to PostgreSQL as the configured user (SCRAM-SHA-256, md5, cleartext, trust). */
import type { Socket } from 'node:net';
import { connectServer } from './connect.js';
import { serialize } from 'pg-protocol';
import { Parser } from 'pg-protocol/dist/parser.js';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import type { DatabaseConfig } from '../config.js';
import { SqlError, SQLSTATE } from '../errors.js';
import { lexicalBreach, SERVER_LEXICAL } from '../policy/lexical.js';
import { md5Password, ScramClient } from './scram.js';
import { ServerReads } from './server-reads.js';

export interface LoginResult {
  socket: Socket;
  pid: number;
  secret: number;
  params: Map<string, string>;
  /** The reusable-buffer reads of a plain-TCP connection; null over TLS (read as a stream). */
  reads: ServerReads | null;
}

interface Fields { [k: string]: unknown }

function field<T>(msg: BackendMessage, name: string): T {
  return (msg as unknown as Fields)[name] as T;
}

/**
 * Opens a connection to Postgres (TLS as server_tls says, connect.ts) and logs in as the configured role (trust, cleartext,
 * md5 or SCRAM-SHA-256). Uses pg-protocol's parser: login happens once per backend, off the
 * hot path.
 */
export function login(db: DatabaseConfig, timeoutMs: number, extraParams: Record<string, string> = {}, reusableReads = false): Promise<LoginResult> {
  return new Promise((resolve, reject) => {
    const reads = reusableReads ? new ServerReads() : undefined;
    let socket: Socket | null = null;
    const params = new Map<string, string>();
    let pid = 0;
    let secret = 0;
    let scram: ScramClient | null = null;
    let done = false;
    const parser = new Parser();
    const timer = timeoutMs > 0 ? setTimeout(() => fail(new SqlError(SQLSTATE.CONNECTION_FAILURE, `server_connect_timeout: no login to ${db.host}:${db.port} within ${timeoutMs} ms`)), timeoutMs) : null;

    function fail(err: Error): void {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      socket?.destroy();
      reject(err instanceof SqlError ? err : new SqlError(SQLSTATE.CONNECTION_FAILURE, `cannot connect to server ${db.host}:${db.port}: ${err.message}`));
    }

    const needPassword = (): string => {
      if (db.password === null) throw new SqlError(SQLSTATE.INVALID_PASSWORD, `server ${db.host}:${db.port} asks for a password but databases.${db.name}.url has none`);
      return db.password;
    };

    function send(data: Buffer): void {
      socket!.write(data);
    }

    function onMessage(msg: BackendMessage): void {
      switch (msg.name) {
        case 'authenticationOk':
          break;
        case 'authenticationCleartextPassword':
          send(serialize.password(needPassword()));
          break;
        case 'authenticationMD5Password':
          send(serialize.password(md5Password(db.user, needPassword(), field<Buffer>(msg, 'salt'))));
          break;
        case 'authenticationSASL': {
          const mechs = field<string[]>(msg, 'mechanisms');
          if (!mechs.includes('SCRAM-SHA-256')) throw new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, `server offers SASL ${mechs.join(', ')}; scopegate supports SCRAM-SHA-256`);
          scram = new ScramClient(needPassword());
          send(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.clientFirst()));
          break;
        }
        case 'authenticationSASLContinue':
          if (!scram) throw new Error('unexpected SASLContinue');
          send(serialize.sendSCRAMClientFinalMessage(scram.clientFinal(field<string>(msg, 'data'))));
          break;
        case 'authenticationSASLFinal':
          if (!scram) throw new Error('unexpected SASLFinal');
          scram.verifyServerFinal(field<string>(msg, 'data'));
          break;
        case 'parameterStatus':
          params.set(field<string>(msg, 'parameterName'), field<string>(msg, 'parameterValue'));
          break;
        case 'backendKeyData':
          pid = field<number>(msg, 'processID');
          secret = field<number>(msg, 'secretKey');
          break;
        case 'readyForQuery': {
          // Pinned in the startup packet, but a login trigger or extension can still change them.
          for (const [name, value] of params) {
            const breach = lexicalBreach(name, value);
            if (breach !== null) throw new SqlError(breach.code, `server login refused: ${breach.message}`, { hint: breach.hint });
          }
          if (params.get('standard_conforming_strings') === undefined) throw new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, 'server login refused: the server does not report standard_conforming_strings');
          done = true;
          if (timer) clearTimeout(timer);
          const s = socket!;
          s.removeAllListeners('data');
          s.removeAllListeners('error');
          s.removeAllListeners('close');
          reads?.detach();
          resolve({ socket: s, pid, secret, params, reads: reads?.inUse === true ? reads : null });
          break;
        }
        case 'error': {
          const e = msg as unknown as { message: string; code?: string; severity?: string };
          throw new SqlError(e.code ?? SQLSTATE.CONNECTION_FAILURE, `server login failed: ${e.message}`);
        }
        case 'notice':
          break;
        default:
          throw new Error(`unexpected ${msg.name} during login`);
      }
    }

    connectServer(db, (s) => { socket = s; }, reads).then((s) => {
      if (done) { s.destroy(); return; }
      socket = s;
      const onData = (chunk: Buffer): void => {
        if (done) return;
        try {
          parser.parse(chunk, onMessage);
        } catch (err) {
          fail(err as Error);
        }
      };
      // The parser may keep a chunk's unfinished tail: a reusable buffer's bytes are copied.
      if (reads?.inUse === true) reads.sink = (chunk) => onData(Buffer.from(chunk));
      else s.on('data', onData);
      s.on('error', fail);
      s.on('close', () => fail(new Error('connection closed during login')));
      s.write(serialize.startup({ user: db.user, database: db.dbname, application_name: 'scopegate', ...extraParams, ...SERVER_LEXICAL }));
    }, fail);
  });
}
