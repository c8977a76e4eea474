/** RFC 7662 token introspection client (client_secret_basic). */
import type { IntrospectionConfig } from './config.js';
import { AuthError } from './errors.js';

/** RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding. */
function basicAuth(id: string, secret: string): string {
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
  return 'Basic ' + Buffer.from(`${enc(id)}:${enc(secret)}`).toString('base64');
}

/** Posts the token to the introspection endpoint and returns the JSON answer. */
export async function introspectToken(cfg: IntrospectionConfig, token: string, timeoutMs: number): Promise<Record<string, unknown>> {
  let res: Response;
  try {
    res = await fetch(cfg.url, {
      method: 'POST',
      headers: {
        authorization: basicAuth(cfg.clientId, cfg.clientSecret),
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
      },
      body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
      redirect: 'error',
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch {
    throw new AuthError('introspection unavailable', { detail: 'The introspection endpoint could not be reached.' });
  }
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new AuthError('introspection unavailable', { detail: `The introspection endpoint answered HTTP ${res.status}.` });
  }
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    throw new AuthError('introspection unavailable', { detail: 'The introspection endpoint did not answer JSON.' });
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new AuthError('introspection unavailable', { detail: 'The introspection answer is not a JSON object.' });
  }
  return body as Record<string, unknown>;
}
