/**
 * SASL OAUTHBEARER (RFC 7628) message codec, following what PostgreSQL 18's server accepts
 * (src/backend/libpq/auth-oauth.c). Pure functions over Buffers; the proxy does the framing:
 *
 *   server: AuthenticationSASL ["OAUTHBEARER"]
 *   client: SASLInitialResponse "OAUTHBEARER", data = n,,\x01auth=Bearer <token>\x01\x01
 *   success: AuthenticationOk (no SASLFinal)
 *   failure or discovery (empty auth=): AuthenticationSASLContinue with oauthBearerFailure(),
 *     the client answers a single \x01 (checkOAuthBearerErrorAck), then ErrorResponse.
 *
 * parseOAuthBearerInitial throws AuthError with SQLSTATE 08P01 for a message that breaks
 * the SASL syntax (answer with ErrorResponse at once), and 28000 / check `malformed token`
 * when only the bearer credentials are malformed (PostgreSQL treats that as a failed
 * validation: send the failure JSON, wait for \x01, then ErrorResponse).
 */
import { SQLSTATE } from '../errors.js';
import { AuthError } from './errors.js';

export const OAUTHBEARER = 'OAUTHBEARER';
export const KVSEP = 0x01;
/** PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH: the largest SASL message it accepts. */
export const MAX_OAUTHBEARER_MESSAGE = 65535;

export type OAuthBearerInitial =
  | { kind: 'token'; token: string; authzid: string | null }
  | { kind: 'discovery' };

function malformed(detail: string): AuthError {
  return new AuthError('malformed oauthbearer message', {
    code: SQLSTATE.PROTOCOL_VIOLATION,
    message: 'malformed OAUTHBEARER message',
    detail,
  });
}

function showByte(b: number | undefined): string {
  if (b === undefined) return 'end of message';
  return b >= 0x21 && b <= 0x7e ? `"'${String.fromCharCode(b)}'"` : `0x${b.toString(16).padStart(2, '0')}`;
}

/** RFC 5801 saslname: =2C and =3D are the only escapes; must be non-empty UTF-8. */
function decodeSaslname(bytes: Buffer): string {
  if (bytes.length === 0) throw malformed('The authorization identity is empty.');
  const s = bytes.toString('utf8');
  if (Buffer.from(s, 'utf8').compare(bytes) !== 0) throw malformed('The authorization identity is not valid UTF-8.');
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '=') {
      const esc = s.slice(i + 1, i + 3);
      if (esc === '2C') out += ',';
      else if (esc === '3D') out += '=';
      else throw malformed('The authorization identity contains an invalid escape.');
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

const KEY_RE = /^[A-Za-z]+$/;

function validValueByte(b: number): boolean {
  return (b >= 0x21 && b <= 0x7e) || b === 0x20 || b === 0x09 || b === 0x0d || b === 0x0a;
}

/** RFC 6750 b64token after a case-insensitive "Bearer " scheme; extra spaces allowed. */
function bearerToken(auth: string): string {
  if (auth.length < 7 || auth.slice(0, 7).toLowerCase() !== 'bearer ') {
    throw new AuthError('malformed token', { detail: 'The auth value does not use the Bearer scheme.' });
  }
  const token = auth.slice(7).replace(/^ +/, '');
  if (token === '') throw new AuthError('malformed token', { detail: 'The bearer token is empty.' });
  if (!/^[A-Za-z0-9\-._~+/]+=*$/.test(token)) {
    throw new AuthError('malformed token', { detail: 'The bearer token is not in the b64token format.' });
  }
  return token;
}

/** Parses the client's initial response (the SASLInitialResponse data). */
export function parseOAuthBearerInitial(buf: Buffer): OAuthBearerInitial {
  if (buf.length === 0) throw malformed('The message is empty.');
  if (buf.length > MAX_OAUTHBEARER_MESSAGE) throw malformed('The message is too long.');
  if (buf.includes(0)) throw malformed('Message length does not match input length.');

  let p = 0;
  // gs2-cb-flag
  const flag = buf[p];
  if (flag === 0x70 /* p */) {
    throw new AuthError('channel binding not supported', {
      code: SQLSTATE.PROTOCOL_VIOLATION,
      message: 'malformed OAUTHBEARER message',
      detail: 'The server does not support channel binding for OAuth, but the client message includes channel binding data.',
    });
  }
  if (flag !== 0x6e /* n */ && flag !== 0x79 /* y */) throw malformed(`Unexpected channel-binding flag ${showByte(flag)}.`);
  p++;
  if (buf[p] !== 0x2c) throw malformed(`Comma expected, but found character ${showByte(buf[p])}.`);
  p++;

  // [gs2-authzid] ","
  let authzid: string | null = null;
  if (buf[p] === 0x61 /* a */) {
    if (buf[p + 1] !== 0x3d) throw malformed('Expected "a=" for the authorization identity.');
    const end = buf.indexOf(0x2c, p + 2);
    if (end < 0) throw malformed('The authorization identity is not terminated.');
    authzid = decodeSaslname(buf.subarray(p + 2, end));
    p = end;
  }
  if (buf[p] !== 0x2c) throw malformed(`Unexpected attribute ${showByte(buf[p])} in client-first-message.`);
  p++;

  if (buf[p] !== KVSEP) throw malformed(`Key-value separator expected, but found character ${showByte(buf[p])}.`);
  p++;

  // *kvpair kvsep
  let auth: string | null = null;
  let terminated = false;
  while (p < buf.length) {
    const end = buf.indexOf(KVSEP, p);
    if (end < 0) throw malformed('Message contains an unterminated key/value pair.');
    if (end === p) {
      terminated = true;
      p++;
      break;
    }
    const eq = buf.indexOf(0x3d, p);
    if (eq < 0 || eq > end) throw malformed('Message contains a key without a value.');
    const key = buf.toString('latin1', p, eq);
    if (key === '') throw malformed('Message contains an empty key name.');
    if (!KEY_RE.test(key)) throw malformed('Message contains an invalid key name.');
    for (let i = eq + 1; i < end; i++) {
      if (!validValueByte(buf[i]!)) throw malformed('Message contains an invalid value.');
    }
    if (key === 'auth') {
      if (auth !== null) throw malformed('Message contains multiple auth values.');
      auth = buf.toString('latin1', eq + 1, end);
    }
    // host, port and unknown keys are ignored (RFC 7628 §3.1).
    p = end + 1;
  }
  if (!terminated) throw malformed('Message did not contain a final terminator.');
  if (auth === null) throw malformed('Message does not contain an auth value.');
  if (p !== buf.length) throw malformed('Message contains additional data after the final terminator.');

  if (auth === '') return { kind: 'discovery' };
  return { kind: 'token', token: bearerToken(auth), authzid };
}

/** The discovery URL advertised to clients: `<issuer>/.well-known/openid-configuration`. */
export function discoveryUrlFor(issuer: string): string {
  if (issuer.includes('/.well-known/')) return issuer;
  return `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
}

/**
 * The server's error challenge (RFC 7628 §3.2.2), sent in AuthenticationSASLContinue after a
 * failed validation or a discovery request. `scope` is omitted when empty.
 */
export function oauthBearerFailure(issuer: string, scope: string): Buffer {
  const body: Record<string, string> = { status: 'invalid_token', 'openid-configuration': discoveryUrlFor(issuer) };
  if (scope !== '') body.scope = scope;
  return Buffer.from(JSON.stringify(body), 'utf8');
}

/** After the error challenge the only valid client message is a single \x01. */
export function checkOAuthBearerErrorAck(buf: Buffer): void {
  if (buf.length !== 1 || buf[0] !== KVSEP) throw malformed('Client did not send a kvsep response.');
}

/** Builds a client initial response (for tests and tools). */
export function oauthBearerInitialResponse(token: string, authzid: string | null = null): Buffer {
  const a = authzid === null ? '' : `a=${authzid.replace(/=/g, '=3D').replace(/,/g, '=2C')}`;
  return Buffer.from(`n,${a},\x01auth=Bearer ${token}\x01\x01`, 'utf8');
}
