// Concern: a pool of 2 whose connections are killed while clients arrive in bursts never leaves a client waiting while a server connection sits idle (the 'pool stall'), and every kill costs at most one transaction.
/**
 * The stall (found by this suite, fixed in src/pool/database-pool.ts): a connection generic-pool
 * opened for a waiting acquire, when that acquire was served meanwhile by a released connection,
 * landed in generic-pool's available list, where clients queued in DatabasePool never saw it;
 * they waited for the next release or query_wait_timeout while it sat idle.
 *
 * Sizes (defaults are what `npm test` runs):
 *   SG_FAULTS_BURSTS        bursts (default 12)
 *   SG_FAULTS_BURST_CLIENTS clients per burst (default 12)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { waitFor } from '../harness/rawclient.js';
import { classify, envNumber, startFaultFixture, type FaultFixture } from './support.js';

const BURSTS = envNumber('SG_FAULTS_BURSTS', 12);
const BURST_CLIENTS = envNumber('SG_FAULTS_BURST_CLIENTS', 12);

/** A login event trigger that makes the pool's logins take `slow_login.delay` seconds. */
const SLOW_LOGIN_SQL = `
CREATE TABLE slow_login (delay float8 NOT NULL);
CREATE FUNCTION slow_login() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN IF session_user = 'authenticator' THEN PERFORM pg_sleep(coalesce((SELECT max(delay) FROM public.slow_login), 0)); END IF; END $$;
CREATE EVENT TRIGGER slow_login ON login EXECUTE FUNCTION slow_login();
`;

const pidOf = async (c: pg.Client): Promise<number> => Number((await c.query('SELECT pg_backend_pid() AS p')).rows[0].p);

describe('pool stall with pool_size 2', { timeout: 300_000 }, () => {
  let fx: FaultFixture;
  before(async () => {
    fx = await startFaultFixture({ poolSize: 2, pool: { query_wait_timeout: '6s' }, setupSql: SLOW_LOGIN_SQL });
  });
  after(async () => { await fx?.stop(); });

  it('a connection whose login ends after its waiter was served by a released one goes to the next queued client', async (t) => {
    const [h, x, w1, w3] = await Promise.all(['hold', 'killed', 'first', 'queued'].map((s) => fx.connect(s)));
    try {
      // Both connections held by open transactions.
      await h.query('BEGIN');
      const hPid = await pidOf(h);
      await x.query('BEGIN');
      const xPid = await pidOf(x);
      assert.notEqual(hPid, xPid);
      // Logins now take 2 s. One held connection is killed: its slot is free.
      await fx.su('INSERT INTO slow_login VALUES (2)');
      await fx.pg.sql(`SELECT pg_terminate_backend(${xPid}, 5000)`);
      await assert.rejects(x.query('SELECT 1'), (e: unknown) => /^(sqlstate:57P01|sqlstate:08006|closed)$/.test(classify(e)));
      await waitFor(async () => (await fx.serverConnections()).length === 1, 'the killed connection gone');
      // `first` needs a connection: the pool opens one for it (2 s of login)...
      const firstTx = (async () => { await w1.query('BEGIN'); return pidOf(w1); })();
      const loggingIn = (await waitFor(async () => (await fx.serverConnections()).find((c) => c.pid !== hPid && c.wait_event === 'PgSleep'), 'the new connection logging in'))!;
      // ...but `hold` commits first, and its connection goes to `first`, which keeps it.
      await h.query('COMMIT');
      assert.equal(await firstTx, hPid, 'precondition: the released connection served the waiter the new one was opened for');
      // `queued` arrives while the login still runs: the pool is full (one in use, one logging in).
      const t0 = Date.now();
      const queued = pidOf(w3);
      const still = (await fx.serverConnections()).find((c) => c.pid === loggingIn.pid);
      assert.equal(still?.wait_event, 'PgSleep', 'precondition: the client queued while the new connection was still logging in');
      // The new connection must serve it as soon as its login is done.
      const got = await queued.then((pid) => pid, (e: unknown) => { throw new Error(`the queued client got ${classify(e)}: ${(e as Error).message} after ${Date.now() - t0} ms, while connection ${loggingIn.pid} was idle`); });
      t.diagnostic(`queued client served after ${Date.now() - t0} ms (the login took 2 s; query_wait_timeout 6 s)`);
      assert.equal(got, loggingIn.pid);
      await w1.query('COMMIT');
    } finally {
      await fx.su('DELETE FROM slow_login');
    }
  });

  it(`${BURSTS} bursts of ${BURST_CLIENTS} clients, one server connection killed in each`, async (t) => {
    const outcomes = new Map<string, number>();
    const bump = (k: string): void => { outcomes.set(k, (outcomes.get(k) ?? 0) + 1); };
    const perBurstFailures: number[] = [];
    let slowestMs = 0;
    let kills = 0;
    let id = 1_000_000;
    for (let round = 0; round < BURSTS; round++) {
      let firstCommit: () => void = () => undefined;
      const committed = new Promise<void>((resolve) => { firstCommit = resolve; });
      let failures = 0;
      const killer = (async () => {
        await committed;
        const conns = await fx.serverConnections();
        const victim = conns[round % Math.max(1, conns.length)];
        if (victim !== undefined && (await fx.pg.sql(`SELECT pg_terminate_backend(${victim.pid}, 5000) AS ok`)).rows[0].ok === true) kills++;
      })();
      await Promise.all(Array.from({ length: BURST_CLIENTS }, async (_, i) => {
        const t0 = Date.now();
        let c: pg.Client | null = null;
        try {
          c = await fx.connect(`burst-${round}-${i}`);
          await c.query('BEGIN');
          await c.query({ text: 'INSERT INTO fault_rows (id, client) VALUES ($1, $2)', values: [id++, i] });
          // A quarter hold their connection a little longer.
          if (i % 4 === 0) await c.query('SELECT pg_sleep(0.05)');
          await c.query('COMMIT');
          firstCommit();
          bump('committed');
        } catch (e) {
          failures++;
          bump(classify(e));
        } finally {
          slowestMs = Math.max(slowestMs, Date.now() - t0);
          await c?.end().catch(() => undefined);
        }
      }));
      firstCommit();
      await killer;
      perBurstFailures.push(failures);
    }
    t.diagnostic(`outcomes ${JSON.stringify(Object.fromEntries(outcomes))}; kills ${kills}; failures per burst ${JSON.stringify(perBurstFailures)}; slowest client ${slowestMs} ms`);
    for (const k of outcomes.keys()) assert.match(k, /^(committed|sqlstate:57P01|sqlstate:08006|closed)$/, `outcome ${k}`);
    const failed = [...outcomes].filter(([k]) => k !== 'committed').reduce((s, [, n]) => s + n, 0);
    assert.ok(failed <= kills, `${failed} failures for ${kills} kills`);
    for (const f of perBurstFailures) assert.ok(f <= 1, 'one kill per burst failed more than one transaction');
    // Back to full service: both connections usable at once.
    const a = await fx.connect('after-a');
    const b = await fx.connect('after-b');
    await a.query('BEGIN');
    await b.query('BEGIN');
    assert.notEqual(await pidOf(a), await pidOf(b));
    await a.query('COMMIT');
    await b.query('COMMIT');
    await a.end();
    await b.end();
  });
});
