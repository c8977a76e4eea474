/** Opening a connection to PostgreSQL: TCP, then TLS as server_tls.sslmode says (libpq's semantics). */
import { connect, isIP, type Socket } from 'node:net';
import { checkServerIdentity, connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import pg from 'pg';
import type { DatabaseConfig } from '../config.js';
import { SqlError, SQLSTATE } from '../errors.js';
import type { ServerTlsConfig } from '../server/tls-config.js';
import type { ServerReads } from './server-reads.js';

const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/** Where connectServer goes: a database entry, or a peer (server/peers.ts) with the same TLS rules. */
export type ServerEndpoint = Pick<DatabaseConfig, 'name' | 'host' | 'port' | 'server_tls'>;

/** require and stronger: a server that answers 'N' is refused. */
function tlsRequired(t: ServerTlsConfig): boolean {
  return t.sslmode === 'require' || t.sslmode === 'verify-ca' || t.sslmode === 'verify-full';
}

/** node:tls options for a connection to `db`: verification as the sslmode says. */
export function serverTlsOptions(db: ServerEndpoint): ConnectionOptions {
  const t = db.server_tls;
  const verify = t.sslmode === 'verify-ca' || t.sslmode === 'verify-full';
  return {
    host: db.host,
    ...(isIP(db.host) === 0 ? { servername: db.host } : {}),
    ...(t.ca !== null ? { ca: t.ca } : {}),
    minVersion: t.protocols.min,
    maxVersion: t.protocols.max,
    // require: encrypted, like libpq, but an active attacker can stand in for the server.
    rejectUnauthorized: verify,
    checkServerIdentity: t.sslmode === 'verify-full' ? checkServerIdentity : () => undefined,
    ALPNProtocols: ['postgresql'],
  };
}

/**
 * Connects to `db` and negotiates TLS: disable sends no SSLRequest; allow and prefer use TLS
 * when the server answers 'S' and plain text on 'N' (allow is treated as prefer: scopegate
 * does not retry a refused plain login with TLS); require and stronger refuse 'N'. `track`
 * sees each socket as it is made, so a timeout can destroy it. Resolves once the stream is
 * ready for the StartupMessage. With `reads`, a plain-TCP connection is read into its
 * reusable buffer (no 'data' events; `reads.inUse` says so); over TLS it reads as a stream.
 */
export function connectServer(db: ServerEndpoint, track: (s: Socket) => void, reads?: ServerReads): Promise<Socket> {
  const t = db.server_tls;
  const where = `${db.host}:${db.port}`;
  return new Promise((resolve, reject) => {
    const raw = connect({ host: db.host, port: db.port, noDelay: true, ...(reads !== undefined ? { onread: reads.onread } : {}) });
    track(raw);
    const onError = (err: Error): void => reject(err);
    const onClose = (): void => reject(new Error('connection closed during login'));
    raw.on('error', onError);
    raw.on('close', onClose);
    const ready = (s: Socket): void => {
      raw.off('error', onError);
      raw.off('close', onClose);
      if (reads !== undefined) reads.inUse = s === raw;
      resolve(s);
    };
    raw.once('connect', () => {
      if (t.sslmode === 'disable') { ready(raw); return; }
      raw.write(SSL_REQUEST);
      const answered = (chunk: Buffer): void => {
        reads?.detach();
        if (chunk.length > 1) {
          // Bytes after the one-byte answer were sent before TLS (CVE-2021-23222): never read as the server's.
          raw.destroy();
          reject(new SqlError(SQLSTATE.PROTOCOL_VIOLATION, `server ${where} sent unencrypted data after its answer to SSLRequest`));
          return;
        }
        if (chunk[0] === 0x4e /* N */) {
          if (tlsRequired(t)) {
            raw.destroy();
            reject(new SqlError(SQLSTATE.CONNECTION_FAILURE, `server ${where} does not accept TLS, but databases.${db.name}.server_tls.sslmode is ${t.sslmode}`));
            return;
          }
          ready(raw);
          return;
        }
        if (chunk[0] !== 0x53 /* S */) {
          raw.destroy();
          reject(new SqlError(SQLSTATE.PROTOCOL_VIOLATION, `server ${where} answered SSLRequest with ${JSON.stringify(String.fromCharCode(chunk[0] ?? 0))}`));
          return;
        }
        const s = tlsConnect({ ...serverTlsOptions(db), socket: raw });
        track(s);
        s.on('error', (err: Error) => reject(new SqlError(SQLSTATE.CONNECTION_FAILURE, `TLS to server ${where} failed (server_tls.sslmode ${t.sslmode}): ${err.message}`)));
        s.once('secureConnect', () => {
          s.removeAllListeners('error');
          ready(s);
        });
      };
      if (reads !== undefined) reads.sink = answered;
      else raw.once('data', answered);
    });
  });
}

/**
 * A connected node-postgres client for `db` with the same TLS rules (the catalog read and
 * the login-role checks carry the login's password too). prefer/allow retry in plain text
 * only when the server said it has no TLS.
 */
export async function connectPgClient(db: DatabaseConfig, timeoutMs: number): Promise<pg.Client> {
  const base: pg.ClientConfig = { host: db.host, port: db.port, user: db.user, password: db.password ?? undefined, database: db.dbname, connectionTimeoutMillis: timeoutMs };
  const mode = db.server_tls.sslmode;
  if (mode === 'disable') {
    const c = new pg.Client({ ...base, ssl: false });
    await c.connect();
    return c;
  }
  const c = new pg.Client({ ...base, ssl: serverTlsOptions(db) });
  try {
    await c.connect();
    return c;
  } catch (err) {
    if (tlsRequired(db.server_tls) || !/does not support SSL/.test((err as Error).message)) throw err;
  }
  const plain = new pg.Client({ ...base, ssl: false });
  await plain.connect();
  return plain;
}
