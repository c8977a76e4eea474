/** The `client_tls` and `server_tls` config sections: sslmodes, protocol range, certificate files read into TLS contexts. */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createSecureContext, type SecureContextOptions, type SecureVersion } from 'node:tls';
import { constants } from 'node:crypto';
import { ConfigError } from '../errors.js';

/** libpq's and PgBouncer's sslmode values, weakest first. */
export const SSLMODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSLMODES)[number];

export interface TlsProtocols {
  min: SecureVersion;
  max: SecureVersion;
}

/** TLS between clients and scopegate (PgBouncer's client_tls_*). */
export interface ClientTlsConfig {
  sslmode: SslMode;
  /** The files' contents as node:tls options, read (and tried) when the config is loaded and on every reload; null when disabled. */
  options: SecureContextOptions | null;
  /** verify-ca / verify-full: a client must present a certificate signed by ca_file. */
  requireClientCert: boolean;
  protocols: TlsProtocols;
  /** The files as resolved, for logs. */
  files: { cert: string | null; key: string | null; ca: string | null };
}

/** TLS between scopegate and PostgreSQL (libpq's sslmode; PgBouncer's server_tls_*). */
export interface ServerTlsConfig {
  sslmode: SslMode;
  /** Trusted roots for verify-ca / verify-full (null: Node's bundled roots). */
  ca: Buffer | null;
  protocols: TlsProtocols;
}

/** With no client_tls section: no TLS to clients, SSLRequest answered 'N' (as before TLS existed). */
export const CLIENT_TLS_OFF: ClientTlsConfig = Object.freeze({
  sslmode: 'disable',
  options: null,
  requireClientCert: false,
  protocols: { min: 'TLSv1.2', max: 'TLSv1.3' },
  files: { cert: null, key: null, ca: null },
}) as ClientTlsConfig;

/**
 * With no server_tls section: prefer, as libpq and PgBouncer default to. A server that answers
 * 'N' is used in plain text as before; one with ssl=on gets TLS (encrypted, not verified:
 * set verify-full to be protected from an active attacker).
 */
export const SERVER_TLS_DEFAULT: ServerTlsConfig = Object.freeze({ sslmode: 'prefer', ca: null, protocols: { min: 'TLSv1.2', max: 'TLSv1.3' } }) as ServerTlsConfig;

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(o: Obj, allowed: readonly string[], at: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw new ConfigError(`${at}.${k}`, `unknown key (expected one of: ${allowed.join(', ')})`);
  }
}

function sslmode(v: unknown, key: string): SslMode {
  if (typeof v === 'string' && (SSLMODES as readonly string[]).includes(v)) return v as SslMode;
  throw new ConfigError(key, `expected one of ${SSLMODES.join(', ')}, got ${JSON.stringify(v)}`);
}

/** PgBouncer's tls_protocols words; nothing below TLS 1.2 is ever offered. */
function protocols(v: unknown, key: string): TlsProtocols {
  if (v === undefined || v === 'secure' || v === 'all') return { min: 'TLSv1.2', max: 'TLSv1.3' };
  if (v === 'tlsv1.2') return { min: 'TLSv1.2', max: 'TLSv1.2' };
  if (v === 'tlsv1.3') return { min: 'TLSv1.3', max: 'TLSv1.3' };
  if (v === 'tlsv1.2,tlsv1.3' || v === 'tlsv1.3,tlsv1.2') return { min: 'TLSv1.2', max: 'TLSv1.3' };
  if (typeof v === 'string' && /tlsv1(\.[01])?\b|legacy/.test(v)) {
    throw new ConfigError(key, `${JSON.stringify(v)}: TLS below 1.2 is not supported (use secure, tlsv1.2, tlsv1.3 or all)`);
  }
  throw new ConfigError(key, `expected secure, tlsv1.2, tlsv1.3 or all, got ${JSON.stringify(v)}`);
}

function readPem(v: unknown, key: string, baseDir: string): { path: string; pem: Buffer } {
  if (typeof v !== 'string' || v === '') throw new ConfigError(key, `expected a file path, got ${JSON.stringify(v)}`);
  const path = resolve(baseDir, v);
  try {
    return { path, pem: readFileSync(path) };
  } catch (err) {
    throw new ConfigError(key, `cannot read ${path}: ${(err as Error).message}`);
  }
}

/** Parses `client_tls`; reads the files and builds the context, so a bad file fails the load (or the reload). */
export function parseClientTls(raw: unknown, baseDir: string): ClientTlsConfig {
  if (raw === undefined || raw === null) return CLIENT_TLS_OFF;
  if (!isObj(raw)) throw new ConfigError('client_tls', 'expected { sslmode, cert_file, key_file, ca_file, protocols }');
  checkKeys(raw, ['sslmode', 'cert_file', 'key_file', 'ca_file', 'protocols'], 'client_tls');
  const mode = raw.sslmode === undefined ? 'prefer' : sslmode(raw.sslmode, 'client_tls.sslmode');
  const protos = protocols(raw.protocols, 'client_tls.protocols');
  if (mode === 'disable') return { ...CLIENT_TLS_OFF, protocols: protos };
  if (raw.cert_file === undefined) throw new ConfigError('client_tls.cert_file', `missing: sslmode ${mode} needs the server certificate (PEM)`);
  if (raw.key_file === undefined) throw new ConfigError('client_tls.key_file', `missing: sslmode ${mode} needs the certificate's private key (PEM)`);
  const requireClientCert = mode === 'verify-ca' || mode === 'verify-full';
  if (requireClientCert && raw.ca_file === undefined) {
    throw new ConfigError('client_tls.ca_file', `missing: sslmode ${mode} verifies client certificates against it`);
  }
  const cert = readPem(raw.cert_file, 'client_tls.cert_file', baseDir);
  const key = readPem(raw.key_file, 'client_tls.key_file', baseDir);
  const ca = raw.ca_file === undefined ? null : readPem(raw.ca_file, 'client_tls.ca_file', baseDir);
  const options: SecureContextOptions = { cert: cert.pem, key: key.pem, ...(ca ? { ca: ca.pem } : {}), minVersion: protos.min, maxVersion: protos.max,
    // As PostgreSQL: no TLS 1.2 renegotiation (a client could otherwise renegotiate at will).
    secureOptions: constants.SSL_OP_NO_RENEGOTIATION };
  try {
    // Built once here so a key that does not match its certificate fails the load, not a handshake.
    createSecureContext(options);
  } catch (err) {
    throw new ConfigError('client_tls', `cannot use ${cert.path} / ${key.path}${ca ? ` / ${ca.path}` : ''}: ${(err as Error).message}`);
  }
  return { sslmode: mode, options, requireClientCert, protocols: protos, files: { cert: cert.path, key: key.path, ca: ca?.path ?? null } };
}

/** Parses `server_tls` (global) or `databases.X.server_tls` (over `base`, the global one). */
export function parseServerTls(raw: unknown, at: string, baseDir: string, base: ServerTlsConfig = SERVER_TLS_DEFAULT): ServerTlsConfig {
  if (raw === undefined || raw === null) return base;
  if (!isObj(raw)) throw new ConfigError(at, 'expected { sslmode, ca_file, protocols }');
  checkKeys(raw, ['sslmode', 'ca_file', 'protocols'], at);
  const mode = raw.sslmode === undefined ? base.sslmode : sslmode(raw.sslmode, `${at}.sslmode`);
  const ca = raw.ca_file === undefined ? base.ca : readPem(raw.ca_file, `${at}.ca_file`, baseDir).pem;
  if (ca !== null && raw.ca_file !== undefined) {
    try {
      createSecureContext({ ca });
    } catch (err) {
      throw new ConfigError(`${at}.ca_file`, `not a usable PEM certificate list: ${(err as Error).message}`);
    }
  }
  return { sslmode: mode, ca, protocols: raw.protocols === undefined ? base.protocols : protocols(raw.protocols, `${at}.protocols`) };
}
