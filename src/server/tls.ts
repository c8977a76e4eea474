/** The TLS front door: reads a new client's first packets, answers SSLRequest/GSSENCRequest, terminates TLS, hands over the socket. */
import type { Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { SqlError, SQLSTATE } from '../errors.js';
import { CANCEL_REQUEST, GSSENC_REQUEST, SSL_REQUEST } from '../protocol/codes.js';
import * as msg from '../protocol/messages.js';
import type { ClientTlsConfig } from './tls-config.js';

/** What a client session knows of its connection's TLS. */
export interface ClientTls {
  /** As OpenSSL names it: 'TLSv1.3', 'TLSv1.2'. */
  readonly version: string;
  readonly cipher: string;
}

/** A client past the front door: the socket to speak the protocol on (TLS or not) and what was read of it. */
export interface ClientTransport {
  readonly tls: ClientTls | null;
  /** Bytes already read that belong to the session (the start of its startup packet). */
  readonly pending: Buffer;
  /** When client_login_timeout runs out (ms since the epoch; 0: none): the session keeps this deadline. */
  readonly loginDeadline: number;
}

/** ALPN protocol name of PostgreSQL 17's direct TLS (sslnegotiation=direct). */
const ALPN = 'postgresql';
/** First byte of a TLS handshake record: a ClientHello sent without SSLRequest. */
const TLS_HANDSHAKE = 0x16;
const ENCRYPTION_ACCEPTED = Buffer.from('S');

function fatal(code: string, message: string, detail?: string, hint?: string): Buffer {
  return msg.errorResponse(new SqlError(code, message, { severity: 'FATAL', ...(detail ? { detail } : {}), ...(hint ? { hint } : {}) }));
}

/** Handshakes in progress on one TLS server, by the peer's address and port. */
interface Handshakes {
  server: TlsServer;
  waiting: Map<string, { secure: (t: TLSSocket) => void; failed: (err: Error, t: TLSSocket) => void }>;
}

function peerKey(s: Socket): string {
  return `${s.remoteAddress ?? ''}|${s.remotePort ?? 0}`;
}

/**
 * A node:tls server that is never listened on: raw sockets are handed to it (its documented
 * 'connection' injection), so OpenSSL's handshake, client-certificate verification and ALPN
 * are node's own. One per config: a reload makes a new one, handshakes already done keep theirs.
 */
function handshakes(cfg: ClientTlsConfig): Handshakes | null {
  if (cfg.options === null) return null;
  const waiting: Handshakes['waiting'] = new Map();
  const server = createTlsServer({
    ...cfg.options,
    requestCert: cfg.requireClientCert,
    // Checked in the door, so the client gets a FATAL that says why instead of a reset.
    rejectUnauthorized: false,
    // PostgreSQL 17: a client that offers ALPN must offer `postgresql` (direct TLS must offer it).
    ALPNCallback: ({ protocols }: { protocols: string[] }) => (protocols.includes(ALPN) ? ALPN : undefined),
  });
  server.on('secureConnection', (t: TLSSocket) => waiting.get(peerKey(t))?.secure(t));
  server.on('tlsClientError', (err: Error, t: TLSSocket) => {
    const w = waiting.get(peerKey(t));
    if (w !== undefined) w.failed(err, t);
    else t.destroy();
  });
  return { server, waiting };
}

/**
 * Reads a connection's first bytes before any session exists, as PostgreSQL's
 * ProcessStartupPacket does: GSSENCRequest gets 'N', SSLRequest gets 'S' (TLS) or 'N'
 * (client_tls disabled), a first byte 0x16 is direct TLS (ALPN `postgresql` required).
 * Whatever else comes first is the session's. The TLS context is swapped on reload;
 * connections already up keep the one they were made with.
 */
export class TlsFrontDoor {
  private tls: Handshakes | null;

  constructor(private cfg: ClientTlsConfig, private readonly log: Logger) {
    this.tls = handshakes(cfg);
  }

  /** Takes the certificates of a reloaded config (read and checked by its loading); the next handshake uses them. */
  reload(cfg: ClientTlsConfig): void {
    this.cfg = cfg;
    this.tls = handshakes(cfg);
    if (cfg.sslmode !== 'disable') this.log.info({ sslmode: cfg.sslmode, cert_file: cfg.files.cert }, 'client_tls: certificates reloaded');
  }

  get sslmode(): ClientTlsConfig['sslmode'] {
    return this.cfg.sslmode;
  }

  /**
   * Negotiates encryption on a new connection; `ready` gets the socket to hand to a session
   * (not called when the connection is refused or closed here: `gone` is).
   */
  admit(raw: Socket, loginTimeoutMs: number, ready: (socket: Socket, t: ClientTransport) => void, gone: () => void): void {
    const cfg = this.cfg;
    const hs = this.tls;
    const log = this.log;
    const loginDeadline = loginTimeoutMs > 0 ? Date.now() + loginTimeoutMs : 0;
    let sock: Socket = raw;
    let buf: Buffer = Buffer.alloc(0);
    let first = true;
    let sslAnswered = false;
    let gssAnswered = false;
    let tls: ClientTls | null = null;
    let finished = false;
    const addr = raw.remoteAddress ?? 'unknown';

    const finish = (): void => {
      if (finished) return;
      finished = true;
      if (timer !== null) clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onGone);
      gone();
    };
    const refuse = (answer: Buffer | null, why: string): void => {
      log.info({ addr, why }, 'client refused before startup');
      finish();
      if (answer !== null) sock.end(answer);
      else sock.destroy();
      // A client that never reads must not hold the socket open.
      sock.setTimeout(10_000, () => sock.destroy());
    };
    const onGone = (): void => finish();
    // An error need not close a TLS socket (node's renegotiation limit only emits one): close it.
    const onError = (): void => { finish(); sock.destroy(); };
    let handshaking = false;
    const timer = loginDeadline === 0 ? null : setTimeout(() => {
      log.info({ addr, tls: tls !== null }, 'client_login_timeout: closing a client that did not log in');
      finish();
      // Mid-handshake there is no channel to say why; otherwise the session's own FATAL.
      if (handshaking) { sock.destroy(); return; }
      sock.end(fatal(SQLSTATE.PROTOCOL_VIOLATION, `client_login_timeout: login not completed within ${loginTimeoutMs / 1000}s`));
      sock.setTimeout(10_000, () => sock.destroy());
    }, loginTimeoutMs);
    timer?.unref();

    const handOver = (): void => {
      finished = true;
      if (timer !== null) clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onGone);
      sock.off('error', onError);
      ready(sock, { tls, pending: buf, loginDeadline });
    };

    const upgrade = (direct: boolean): void => {
      const h = hs!;
      handshaking = true;
      raw.pause();
      raw.off('data', onData);
      raw.off('close', onGone);
      // Bytes already read (direct TLS: the ClientHello) are replayed into the TLS socket.
      if (buf.length > 0) raw.unshift(buf);
      buf = Buffer.alloc(0);
      const key = peerKey(raw);
      const cleanup = (): void => { h.waiting.delete(key); };
      raw.once('close', () => { cleanup(); finish(); });
      h.waiting.set(key, {
        failed: (err, t) => {
          cleanup();
          if (!finished) log.info({ addr, err: err.message }, 'client TLS handshake failed');
          finish();
          t.destroy();
        },
        secure: (t) => {
          cleanup();
          handshaking = false;
          sock = t;
          if (finished) { t.destroy(); return; }
          t.on('close', onGone);
          t.on('error', onError);
          if (direct && t.alpnProtocol !== ALPN) {
            refuse(null, 'direct TLS without ALPN postgresql');
            return;
          }
          if (cfg.requireClientCert && !t.authorized) {
            const why = Object.keys(t.getPeerCertificate()).length === 0 ? 'no certificate' : String(t.authorizationError);
            refuse(fatal(SQLSTATE.INVALID_AUTHORIZATION, 'connection requires a valid client certificate', `client_tls.sslmode is ${cfg.sslmode}: ${why}`), `client certificate: ${why}`);
            return;
          }
          tls = { version: t.getProtocol() ?? 'unknown', cipher: t.getCipher().name };
          t.on('data', onData);
        },
      });
      h.server.emit('connection', raw);
    };

    const step = (): void => {
      while (!finished) {
        if (first && buf.length > 0 && buf[0] === TLS_HANDSHAKE) {
          first = false;
          if (hs === null) { refuse(null, 'direct TLS while client_tls is disabled'); return; }
          upgrade(true);
          return;
        }
        if (buf.length < 8) return;
        first = false;
        const len = buf.readInt32BE(0);
        const code = buf.readInt32BE(4);
        const negotiation = len === 8 && (code === SSL_REQUEST || code === GSSENC_REQUEST);
        if (!negotiation) {
          const cancel = len === 16 && code === CANCEL_REQUEST;
          // A cancel key is useless to an eavesdropper who is not already on the wire, and
          // libpq's PQcancel (psql's ^C) never uses TLS: cancels are accepted either way.
          if (tls === null && !cancel && (cfg.sslmode === 'require' || cfg.sslmode === 'verify-ca' || cfg.sslmode === 'verify-full')) {
            refuse(fatal(SQLSTATE.INVALID_AUTHORIZATION, 'TLS is required: connect with sslmode=require (or verify-full)', undefined, `client_tls.sslmode is ${cfg.sslmode}: scopegate accepts no login over plain TCP.`), 'plain text while client_tls requires TLS');
            return;
          }
          handOver();
          return;
        }
        if (tls !== null) {
          // Once TLS is up, PostgreSQL treats either request as an unsupported protocol version.
          refuse(fatal(SQLSTATE.PROTOCOL_VIOLATION, `${code === SSL_REQUEST ? 'SSLRequest' : 'GSSENCRequest'} received inside a TLS connection`), 'encryption request inside TLS');
          return;
        }
        if (code === GSSENC_REQUEST) {
          if (gssAnswered || sslAnswered) { refuse(fatal(SQLSTATE.PROTOCOL_VIOLATION, 'GSSENCRequest received twice'), 'repeated GSSENCRequest'); return; }
          gssAnswered = true;
          buf = buf.subarray(8);
          sock.write(msg.ENCRYPTION_REFUSED);
          continue;
        }
        if (sslAnswered) { refuse(fatal(SQLSTATE.PROTOCOL_VIOLATION, 'SSLRequest received twice'), 'repeated SSLRequest'); return; }
        sslAnswered = true;
        buf = buf.subarray(8);
        if (hs === null) {
          sock.write(msg.ENCRYPTION_REFUSED);
          continue;
        }
        if (buf.length > 0) {
          // Bytes sent in plain text before 'S' (CVE-2021-23214): taking them as if they
          // came over TLS would let a man in the middle inject commands.
          refuse(fatal(SQLSTATE.PROTOCOL_VIOLATION, 'received unencrypted data after SSL request', 'This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.'), 'unencrypted data after SSLRequest');
          return;
        }
        sock.write(ENCRYPTION_ACCEPTED);
        upgrade(false);
        return;
      }
    };

    function onData(chunk: Buffer): void {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      step();
    }

    raw.on('data', onData);
    raw.on('error', onError);
    raw.on('close', onGone);
  }
}
