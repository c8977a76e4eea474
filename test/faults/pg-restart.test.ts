// Concern: PostgreSQL restarted (fast shutdown, same port and data directory) under pgbench and node-driver load: every failure reaches its client as an error, no confirmed commit is lost, and scopegate serves new transactions afterwards without being restarted.
/**
 * Sizes (defaults are what `npm test` runs):
 *   SG_FAULTS_CLIENTS   node-driver insert clients (default 6)
 *   SG_FAULTS_PGBENCH   pgbench clients (default 3)
 *   SG_FAULTS_RESTARTS  restarts under load (default 1)
 *   SG_FAULTS_SECONDS   steady load before each restart and after the last, in seconds (default 2)
 *   SG_FAULTS_OUTAGE_ROUNDS  the server stays down until the insert clients have failed this many
 *                       times each on average (default 2; scopegate's login backoff grows meanwhile)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { PgbenchResult } from '../../bench/runner.js';
import { waitFor } from '../harness/rawclient.js';
import { auditRows, badOutcomes, describeLoad, envNumber, insertLoad, pace, pgbenchErrors, startFaultFixture, type FaultFixture } from './support.js';

const CLIENTS = envNumber('SG_FAULTS_CLIENTS', 6);
const PGBENCH_CLIENTS = envNumber('SG_FAULTS_PGBENCH', 3);
const RESTARTS = envNumber('SG_FAULTS_RESTARTS', 1);
const SECONDS = envNumber('SG_FAULTS_SECONDS', 2);
const OUTAGE_ROUNDS = envNumber('SG_FAULTS_OUTAGE_ROUNDS', 2);
const POOL = 4;

describe('PostgreSQL restarted under load', { timeout: 600_000 }, () => {
  let fx: FaultFixture;
  before(async () => {
    fx = await startFaultFixture({ poolSize: POOL, pgbench: true, pool: { query_wait_timeout: '10s', server_connect_timeout: '5s' } });
  });
  after(async () => { await fx?.stop(); });

  it(`${RESTARTS} fast restart(s) under ${CLIENTS} insert clients and ${PGBENCH_CLIENTS} pgbench clients`, async (t) => {
    const sgPid = fx.sg.proc.pid;
    let running = true;
    const { report: live, done: load } = insertLoad({ clients: CLIENTS, running: () => running, connect: (i) => fx.connect(`writer-${i}`) });

    // pgbench runs back to back for the whole scenario; a restart aborts its clients, the next run starts at once.
    const benchRuns: PgbenchResult[] = [];
    const bench = (async () => {
      while (running) {
        const res = await fx.pgbench({ clients: PGBENCH_CLIENTS, seconds: 2 });
        benchRuns.push(res);
        if (res.exitCode !== 0) await pace(200); // pacing while the server is down
      }
    })();

    const loginFailures = (): number => fx.sg.logs.filter((l) => l.msg === 'server login failed').length;
    const historyRows = async (): Promise<number> => Number((await fx.su('SELECT count(*) AS n FROM pgbench_history')).rows[0].n);
    const recoveries: number[] = [];
    const outageFailures: number[] = [];
    const outages: Array<{ ms: number; logins: number }> = [];
    for (let k = 0; k < RESTARTS; k++) {
      const committedBefore = live.committed;
      const historyBefore = await historyRows();
      const steadyUntil = Date.now() + SECONDS * 1000;
      await waitFor(() => live.committed >= committedBefore + CLIENTS * 3 && Date.now() >= steadyUntil, 'steady insert load before the restart', 60_000);
      await waitFor(async () => (await historyRows()) > historyBefore, 'pgbench transactions before the restart', 60_000);

      await fx.pg.stopFast();
      // The server has exited. Down until the clients have failed OUTAGE_ROUNDS times each on
      // average since: every failure is an error that reached a client while nothing could serve it.
      const failedBefore = live.failed + live.connectFailures;
      const loginFailuresBefore = loginFailures();
      const stoppedAt = Date.now();
      await waitFor(() => live.failed + live.connectFailures >= failedBefore + CLIENTS * OUTAGE_ROUNDS, 'failures seen by the clients while the server is down', 120_000);
      outageFailures.push(live.failed + live.connectFailures - failedBefore);
      outages.push({ ms: Date.now() - stoppedAt, logins: loginFailures() - loginFailuresBefore });
      const committedAtStart = live.committed;
      const startedAt = Date.now();
      await fx.pg.start();
      await waitFor(() => live.committed > committedAtStart, 'a commit after the restart', 60_000);
      recoveries.push(Date.now() - startedAt);
      await waitFor(() => live.committed >= committedAtStart + CLIENTS * 3, 'steady load after the restart', 60_000);
    }
    const tailUntil = Date.now() + SECONDS * 1000;
    await waitFor(() => Date.now() >= tailUntil, 'the tail of the load', 60_000);
    running = false;
    const report = await load;
    await bench;

    // pgbench after the restarts, on the same scopegate process: no failures at all.
    const clean = await fx.pgbench({ clients: PGBENCH_CLIENTS, seconds: 2 });
    const cleanExtended = await fx.pgbench({ clients: PGBENCH_CLIENTS, seconds: 2, mode: 'extended' });

    const audit = await auditRows(fx.su, [report]);
    const benchProcessed = benchRuns.reduce((s, r) => s + (r.transactions ?? 0), 0);
    const benchAborted = benchRuns.reduce((s, r) => s + r.abortedClients, 0);
    const benchMessages = new Map<string, number>();
    for (const r of benchRuns) for (const line of pgbenchErrors(r)) {
      const key = line.replace(/client \d+/g, 'client N').replace(/command \d+/g, 'command N').replace(/\d+\.\d+ s/g, '').slice(0, 160);
      benchMessages.set(key, (benchMessages.get(key) ?? 0) + 1);
    }
    const sums = (await fx.su(`SELECT (SELECT sum(abalance) FROM pgbench_accounts)::bigint AS a, (SELECT sum(bbalance) FROM pgbench_branches)::bigint AS b,
      (SELECT sum(tbalance) FROM pgbench_tellers)::bigint AS t, (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::bigint AS h, (SELECT count(*) FROM pgbench_history)::int AS n`)).rows[0] as { a: string; b: string; t: string; h: string; n: number };

    t.diagnostic(describeLoad('insert load', report, audit));
    t.diagnostic(`restarts ${RESTARTS}: outages ${JSON.stringify(outages.map((o) => `${o.ms} ms, ${o.logins} failed server logins`))}; client failures per outage ${JSON.stringify(outageFailures)}; ms from postgres start to the first commit through scopegate ${JSON.stringify(recoveries)}`);
    t.diagnostic(`pgbench under restarts: ${benchRuns.length} runs, ${benchProcessed} transactions processed, ${benchAborted} clients aborted; history rows ${sums.n}`);
    for (const [m, n] of benchMessages) t.diagnostic(`  pgbench x${n}: ${m}`);
    t.diagnostic(`pgbench after the restarts: simple ${clean.transactions} tx (failed ${clean.failed}, aborted ${clean.abortedClients}), extended ${cleanExtended.transactions} tx (failed ${cleanExtended.failed}, aborted ${cleanExtended.abortedClients})`);
    for (const s of report.samples.slice(-5)) t.diagnostic(`  sample: ${s}`);

    // Every failure reached its client as an error or a close: no hang, no wrong answer.
    assert.deepEqual(badOutcomes(report), [], `failures that were not errors: ${report.samples.join('\n')}`);
    assert.ok(report.failed + report.connectFailures >= CLIENTS * RESTARTS, 'the restarts were felt by the clients');
    // No confirmed commit lost; nothing committed that never sent COMMIT.
    assert.deepEqual(audit.lost, [], 'confirmed ids missing after the restart');
    assert.deepEqual(audit.phantom, [], 'ids of transactions that failed before COMMIT are in the table');
    assert.equal(audit.strangers, 0);
    // pgbench: each processed transaction left its history row; balances add up (atomicity across the restarts).
    assert.ok(sums.n >= benchProcessed + clean.transactions! + cleanExtended.transactions!, `history ${sums.n} < processed`);
    assert.equal(sums.a, sums.h);
    assert.equal(sums.b, sums.h);
    assert.equal(sums.t, sums.h);
    // The same scopegate process serves new work after the restarts.
    assert.equal(fx.sg.proc.exitCode, null);
    assert.equal(fx.sg.proc.pid, sgPid);
    for (const r of [clean, cleanExtended]) {
      assert.equal(r.exitCode, 0, r.output);
      assert.equal(r.abortedClients, 0, r.output);
      assert.equal(r.failed, 0, r.output);
      assert.ok((r.transactions ?? 0) > 0, r.output);
    }
    const c = await fx.connect('after-restart');
    assert.equal((await c.query('SELECT count(*)::int AS n FROM fault_rows WHERE id = ANY($1::bigint[])', [report.confirmed.slice(0, 100)])).rows[0].n, Math.min(100, report.confirmed.length));
    await c.end();
  });
});

