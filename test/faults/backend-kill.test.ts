// Concern: server connections killed one by one (pg_terminate_backend) under load: each kill costs at most the transaction running on it, that client gets an error and its next transaction succeeds, no confirmed commit is lost, and the pool refills.
/**
 * Sizes (defaults are what `npm test` runs):
 *   SG_FAULTS_CLIENTS  insert clients (default 8, over a pool of 4)
 *   SG_FAULTS_KILLS    server connections killed (default 16)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../harness/rawclient.js';
import { auditRows, badOutcomes, describeLoad, envNumber, insertLoad, startFaultFixture, type FaultFixture } from './support.js';

const CLIENTS = envNumber('SG_FAULTS_CLIENTS', 8);
const KILLS = envNumber('SG_FAULTS_KILLS', 16);
const POOL = 4;

describe('server connections killed under load', { timeout: 600_000 }, () => {
  let fx: FaultFixture;
  before(async () => {
    fx = await startFaultFixture({ poolSize: POOL, pool: { query_wait_timeout: '15s' } });
  });
  after(async () => { await fx?.stop(); });

  it(`${KILLS} kills, one at a time, under ${CLIENTS} clients on a pool of ${POOL}`, async (t) => {
    let running = true;
    // Per worker: whether it failed and has not committed since, and what its next transaction did.
    const pendingRecovery = new Set<number>();
    let nextAfterFailureOk = 0;
    let nextAfterFailureFailed = 0;
    const { report: live, done } = insertLoad({
      clients: CLIENTS,
      running: () => running,
      connect: (i) => fx.connect(`writer-${i}`),
      onTransaction: (i, ok) => {
        if (pendingRecovery.has(i)) {
          if (ok) nextAfterFailureOk++;
          else nextAfterFailureFailed++;
        }
        if (ok) pendingRecovery.delete(i);
        else pendingRecovery.add(i);
      },
    });
    const killed: Array<{ pid: number; state: string | null; failuresCaused: number }> = [];
    let maxConnections = 0;
    const refillMs: number[] = [];
    try {
      await waitFor(async () => (await fx.serverConnections()).length === POOL && live.committed > CLIENTS * 3, 'a full pool under load', 60_000);
      for (let k = 0; k < KILLS; k++) {
        const conns = await fx.serverConnections();
        maxConnections = Math.max(maxConnections, conns.length);
        // Mostly a connection inside a transaction (the worst moment), every third an idle one.
        const busy = conns.filter((c) => c.xact);
        const idle = conns.filter((c) => !c.xact);
        const among = k % 3 === 2 && idle.length > 0 ? idle : busy.length > 0 ? busy : conns;
        const pick = among[k % among.length]!;
        const failedBefore = live.failed;
        const killedAt = Date.now();
        const r = await fx.pg.sql(`SELECT pg_terminate_backend(${pick.pid}, 5000) AS ok`);
        assert.equal((r.rows[0] as { ok: boolean }).ok, true);
        // The pool refills: a new server connection takes the killed one's place.
        const committedAtKill = live.committed;
        await waitFor(async () => {
          const now = await fx.serverConnections();
          maxConnections = Math.max(maxConnections, now.length);
          return !now.some((c) => c.pid === pick.pid) && now.length === POOL && live.committed > committedAtKill + CLIENTS;
        }, `the pool refilled after kill ${k + 1}`, 60_000);
        refillMs.push(Date.now() - killedAt);
        // Every worker that failed has committed since: then the next kill.
        await waitFor(() => pendingRecovery.size === 0, `clients recovered after kill ${k + 1}`, 60_000);
        killed.push({ pid: pick.pid, state: pick.state, failuresCaused: live.failed - failedBefore });
      }
    } finally {
      running = false;
    }
    const report = await done;
    const audit = await auditRows(fx.su, [report]);
    const byState = new Map<string, { kills: number; failures: number }>();
    for (const k of killed) {
      const e = byState.get(k.state ?? 'null') ?? { kills: 0, failures: 0 };
      e.kills++;
      e.failures += k.failuresCaused;
      byState.set(k.state ?? 'null', e);
    }
    t.diagnostic(describeLoad('insert load', report, audit));
    t.diagnostic(`kills ${killed.length}: by state at the kill ${JSON.stringify(Object.fromEntries(byState))}; next transaction after a failure: ${nextAfterFailureOk} ok, ${nextAfterFailureFailed} failed`);
    t.diagnostic(`ms from kill to a full pool again (and ${CLIENTS} commits): median ${median(refillMs)}, max ${Math.max(...refillMs)}; most server connections seen ${maxConnections}`);
    for (const s of report.samples.slice(-6)) t.diagnostic(`  sample: ${s}`);

    assert.deepEqual(badOutcomes(report), [], `failures that were not errors: ${report.samples.join('\n')}`);
    assert.ok(!report.outcomes.has('sqlstate:53300'), 'a client waited out query_wait_timeout while connections were being replaced');
    // Each kill costs at most the one transaction running on the killed connection.
    for (const k of killed) assert.ok(k.failuresCaused <= 1, `kill of ${k.pid} (${k.state}) failed ${k.failuresCaused} transactions`);
    assert.ok(report.failed <= KILLS, `${report.failed} failures for ${KILLS} kills`);
    assert.ok(report.failed > 0, 'kills inside transactions reached their clients');
    // The failed client's next transaction (on a new connection) succeeded.
    assert.equal(nextAfterFailureFailed, 0);
    assert.equal(nextAfterFailureOk, report.failed);
    assert.deepEqual(audit.lost, []);
    assert.deepEqual(audit.phantom, []);
    assert.equal(audit.strangers, 0);
    assert.ok(maxConnections <= POOL, `the pool opened ${maxConnections} connections for pool_size ${POOL}`);
  });
});

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.floor(s.length / 2)]!;
}
