// Concern: the issuer's JWKS endpoint down (refusing, then hanging) and back: logins with cached keys keep working, a new key id fails promptly with 28000 (never a hang), and once the endpoint is back new keys are accepted without restarting scopegate.
/**
 * A real JWKS server (test/harness/issuer.ts) on a fixed port, stopped, replaced by a socket
 * that accepts and never answers, then started again publishing a rotated key. scopegate runs
 * with jwks_cache_max_age 1 ms (every login finds the cache stale and refreshes in the
 * background), jwks_cooldown 1 s and http_timeout 2 s.
 *
 * Sizes (defaults are what `npm test` runs):
 *   SG_FAULTS_LOGINS  logins with a cached key in each outage phase (default 20)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import { makeKey, signWith, startJwksServer, type JwksServer, type LocalKey } from '../harness/issuer.js';
import { waitFor } from '../harness/rawclient.js';
import { AUDIENCE, classify, envNumber, SCOPE, startFaultFixture, type FaultFixture } from './support.js';

const LOGINS = envNumber('SG_FAULTS_LOGINS', 20);
const HTTP_TIMEOUT_MS = 2000;

describe('JWKS endpoint down and back', { timeout: 300_000 }, () => {
  let jwks: JwksServer | null = null;
  let port = 0;
  let issuer = '';
  let k1: LocalKey;
  let k2: LocalKey;
  let fx: FaultFixture;
  let sgPid: number | undefined;

  before(async () => {
    k1 = await makeKey('RS256', 'cached-1');
    k2 = await makeKey('ES256', 'rotated-2');
    jwks = await startJwksServer([k1.publicJwk]);
    port = Number(new URL(jwks.url).port);
    issuer = jwks.issuer;
    fx = await startFaultFixture({
      poolSize: 2,
      auth: {
        method: 'oauth', issuer, audience: AUDIENCE, jwks_url: jwks.jwksUrl,
        jwks_cache_max_age: '1ms', jwks_cooldown: '1s', http_timeout: `${HTTP_TIMEOUT_MS}ms`, failure_delay: { after: 100_000 },
      },
    });
    sgPid = fx.sg.proc.pid;
  });
  after(async () => {
    await jwks?.stop();
    await fx?.stop();
  });

  const tokenFor = (key: LocalKey, sub: string): Promise<string> => {
    const now = Math.floor(Date.now() / 1000);
    // A fresh jti each time: the verified-token cache never answers for it, the key cache must.
    return signWith(key, { iss: issuer, aud: AUDIENCE, sub, scope: SCOPE, iat: now, exp: now + 600, jti: randomUUID() });
  };

  /** Logs in with a token signed by `key` and runs a transaction; returns how long the login took. */
  async function loginAndWork(key: LocalKey, sub: string, id: number): Promise<number> {
    const t0 = Date.now();
    const c = await fx.connect(sub, { password: await tokenFor(key, sub) });
    const ms = Date.now() - t0;
    try {
      await c.query('BEGIN');
      await c.query({ text: 'INSERT INTO fault_rows (id, client) VALUES ($1, 0)', values: [id] });
      await c.query('COMMIT');
    } finally {
      await c.end();
    }
    return ms;
  }

  /** A login that must fail: the error the client got and how long it took. */
  async function failedLogin(key: LocalKey, sub: string): Promise<{ code: string; message: string; detail: string; ms: number }> {
    const t0 = Date.now();
    try {
      const c = await fx.connect(sub, { password: await tokenFor(key, sub) });
      await c.end();
    } catch (err) {
      const e = err as { code?: string; message?: string; detail?: string };
      return { code: e.code ?? classify(err), message: e.message ?? '', detail: e.detail ?? '', ms: Date.now() - t0 };
    }
    assert.fail(`login with ${key.kid} succeeded`);
  }

  let nextId = 1;
  const loginsWithCachedKey = async (phase: string): Promise<number[]> => {
    const ms: number[] = [];
    for (let i = 0; i < LOGINS; i++) ms.push(await loginAndWork(k1, `${phase}-${i}`, nextId++));
    return ms;
  };

  it('while the endpoint is up, a token with its key logs in', async () => {
    await loginAndWork(k1, 'up', nextId++);
    assert.ok(jwks!.jwksHits >= 1);
  });

  it('endpoint refusing connections: cached keys keep working, a new kid fails at once with 28000', async (t) => {
    await jwks!.stop();
    jwks = null;
    const ms = await loginsWithCachedKey('down');
    const fail = await failedLogin(k2, 'down-new-kid');
    // Within the cooldown no fetch is tried: it fails the same way without waiting.
    const again = await failedLogin(k2, 'down-new-kid-again');
    t.diagnostic(`refused: ${LOGINS} logins with the cached key, max ${Math.max(...ms)} ms; new kid: ${fail.code} "${fail.message}" ${fail.detail ? `(${fail.detail}) ` : ''}after ${fail.ms} ms, again after ${again.ms} ms`);
    assert.equal(fail.code, '28000');
    assert.match(fail.message, /OAuth authentication failed: (unknown signing key|signing keys unavailable)/);
    assert.equal(again.code, '28000');
  });

  it('endpoint accepting and never answering: cached keys keep working, a new kid fails with 28000 after http_timeout, not a hang', async (t) => {
    const held: Socket[] = [];
    const blackhole: Server = createServer((s) => { held.push(s); s.on('error', () => undefined); });
    await new Promise<void>((resolve, reject) => { blackhole.once('error', reject); blackhole.listen(port, '127.0.0.1', () => resolve()); });
    try {
      // Logins with the cached key go on until one finds the cooldown over and starts a
      // background refresh, which the endpoint now holds open.
      let before = 0;
      await waitFor(async () => { await loginAndWork(k1, `hanging-wait-${before++}`, nextId++); return held.length >= 1; }, 'a background refresh reaching the hanging endpoint', 30_000, 50);
      const ms = await loginsWithCachedKey('hanging');
      const fail = await failedLogin(k2, 'hanging-new-kid');
      t.diagnostic(`hanging: ${before} logins until a refresh hung, then ${LOGINS} logins with the cached key during it, max ${Math.max(...ms)} ms; ${held.length} requests to the endpoint held open; new kid: ${fail.code} "${fail.message}" after ${fail.ms} ms (http_timeout ${HTTP_TIMEOUT_MS} ms)`);
      assert.equal(fail.code, '28000');
      assert.match(fail.message, /OAuth authentication failed: (unknown signing key|signing keys unavailable)/);
      assert.ok(held.length >= 1, 'scopegate did try the endpoint');
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((resolve) => blackhole.close(() => resolve()));
    }
  });

  it('endpoint back with a rotated key: the new kid logs in without restarting scopegate', async (t) => {
    const back = Date.now();
    jwks = await startJwksServer([k1.publicJwk, k2.publicJwk], { port });
    let attempts = 0;
    await waitFor(async () => {
      attempts++;
      try {
        await loginAndWork(k2, `back-${attempts}`, nextId);
        nextId++;
        return true;
      } catch (err) {
        if (classify(err) !== 'sqlstate:28000') throw err;
        return false;
      }
    }, 'a login with the rotated key after the endpoint came back', 30_000, 100);
    t.diagnostic(`back: the rotated kid logged in ${Date.now() - back} ms after the endpoint returned, attempt ${attempts} (jwks_cooldown 1 s); JWKS requests served ${jwks.jwksHits}`);
    await loginAndWork(k1, 'back-cached', nextId++);
    assert.equal(fx.sg.proc.pid, sgPid);
    assert.equal(fx.sg.proc.exitCode, null);
    // Every login above committed its row.
    assert.equal(Number((await fx.su('SELECT count(*) AS n FROM fault_rows')).rows[0].n), nextId - 1);
  });
});
