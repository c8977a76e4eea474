// Concern: a client that stops reading a large result: scopegate stops reading the server (Postgres waits in ClientWrite) instead of buffering, its memory stays bounded, other clients are served, and once the slow client leaves its server connection is back in service (not held until the drain timeout).
/**
 * scopegate's backpressure: when a write to the client returns false, the server socket is
 * paused until the client socket drains (ClientSession.forward / Backend.pause). This file
 * found that a client leaving while paused left its server socket paused: the janitor's cancel
 * could never take effect (Postgres acts on a cancel only once its blocked write completes), so
 * the pool slot was held until the 30 s drain timeout and the connection then closed. Fixed in
 * Backend.attach (a new owner starts unpaused).
 *
 * Sizes (defaults are what `npm test` runs):
 *   SG_FAULTS_RESULT_ROWS  rows of 1,000 bytes in the large result (default 1,000,000: ~1 GB)
 *   SG_FAULTS_CLIENTS      bystander clients (default 4)
 *   SG_FAULTS_TX           transactions per bystander (default 40)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { dataRow, fe, waitFor } from '../harness/rawclient.js';
import { envNumber, hsToken, rawLogin, startFaultFixture, type FaultFixture } from './support.js';

const ROWS = envNumber('SG_FAULTS_RESULT_ROWS', 1_000_000);
const BYSTANDERS = envNumber('SG_FAULTS_CLIENTS', 4);
const TX = envNumber('SG_FAULTS_TX', 40);
const POOL = 3;
const ROW_BYTES = 1000;
/** A DataRow of one 1,000-byte text column on the wire: type, length, column count, column length, value. */
const WIRE_ROW = 1 + 4 + 2 + 4 + ROW_BYTES;

const pidOf = async (c: pg.Client): Promise<number> => Number((await c.query('SELECT pg_backend_pid() AS p')).rows[0].p);

describe('a client that stops reading a large result', { timeout: 300_000 }, () => {
  let fx: FaultFixture;
  let baselineKb = 0;
  before(async () => {
    fx = await startFaultFixture({ poolSize: POOL, pool: { query_wait_timeout: '5s' } });
    // Warm up (parser, pools, buffers) so the baseline is scopegate at work, not at rest.
    const w = await fx.connect('warmup');
    for (let i = 0; i < 3; i++) assert.equal((await w.query(`SELECT repeat('x', ${ROW_BYTES}) FROM generate_series(1, 20000)`)).rowCount, 20000);
    for (let i = 0; i < 50; i++) await w.query({ text: 'SELECT count(*) FROM fault_rows WHERE id = $1', values: [i] });
    await w.end();
    baselineKb = fx.rssKb();
  });
  after(async () => { await fx?.stop(); });

  /** A raw client that sent the large query and then stopped reading; resolves once Postgres is blocked writing it. */
  async function stalledClient(sub: string, rows: number): Promise<{ raw: Awaited<ReturnType<typeof rawLogin>>['raw']; serverPid: number }> {
    const { raw } = await rawLogin(fx.sg.port, sub, await hsToken(sub));
    raw.socket.pause();
    raw.write(fe.query(`SELECT repeat('x', ${ROW_BYTES}) AS v FROM generate_series(1, ${rows})`));
    // Backpressure reached the server: Postgres waits for its socket to drain.
    const blocked = await waitFor(async () => (await fx.serverConnections()).find((c) => c.state === 'active' && c.wait_event === 'ClientWrite'), 'Postgres blocked writing the large result (ClientWrite)', 30_000);
    return { raw, serverPid: blocked!.pid };
  }

  it(`${ROWS} rows (${Math.round(ROWS * WIRE_ROW / 1e6)} MB) to a paused client: bounded memory, ${BYSTANDERS} bystanders served, the connection back in service after the client leaves`, async (t) => {
    const resultBytes = ROWS * WIRE_ROW;
    const { raw, serverPid } = await stalledClient('slow', ROWS);
    let maxKb = fx.rssKb();
    const sample = (): void => { maxKb = Math.max(maxKb, fx.rssKb()); };

    // Others are served on the other pool connections meanwhile, with correct answers.
    let served = 0;
    await Promise.all(Array.from({ length: BYSTANDERS }, async (_, i) => {
      const c = await fx.connect(`bystander-${i}`);
      for (let k = 0; k < TX; k++) {
        const id = 1 + i * 100_000 + k;
        await c.query('BEGIN');
        await c.query({ text: 'INSERT INTO fault_rows (id, client) VALUES ($1, $2)', values: [id, i] });
        const back = await c.query({ text: 'SELECT client FROM fault_rows WHERE id = $1', values: [id] });
        assert.equal(back.rows[0].client, i);
        await c.query('COMMIT');
        served++;
        if (k % 10 === 0) sample();
      }
      await c.end();
    }));
    sample();
    // The slow client's server connection is still blocked in its write: nothing drained it into memory.
    const still = (await fx.serverConnections()).find((c) => c.pid === serverPid);
    assert.equal(still?.wait_event, 'ClientWrite');
    const growthKb = maxKb - baselineKb;
    const receivedBytes = raw.socket.bytesRead;
    t.diagnostic(`result ${(resultBytes / 1e6).toFixed(0)} MB; scopegate VmRSS baseline ${baselineKb} kB, max while stalled ${maxKb} kB (growth ${growthKb} kB); the paused client received ${receivedBytes} bytes; ${served} bystander transactions served meanwhile`);
    // Correctness bound on buffering (not a timing threshold): far less than the result is held.
    assert.ok(growthKb * 1024 < resultBytes / 2, `scopegate grew by ${growthKb} kB for a ${resultBytes}-byte result`);
    assert.equal(served, BYSTANDERS * TX);

    // The slow client leaves: its connection is cancelled, drained and returned (or closed).
    const closedAt = Date.now();
    raw.close();
    const holders = await Promise.all(Array.from({ length: POOL }, (_, i) => fx.connect(`after-${i}`)));
    const pids = await Promise.all(holders.map(async (c) => { await c.query('BEGIN'); return pidOf(c); }));
    t.diagnostic(`ms from the slow client's close to all ${POOL} pool connections in use at once: ${Date.now() - closedAt}; the slow client's connection ${pids.includes(serverPid) ? 'was returned' : 'was closed'}`);
    assert.equal(new Set(pids).size, POOL);
    for (const c of holders) { await c.query('COMMIT'); await c.end(); }
    await waitFor(async () => (await fx.serverConnections()).every((c) => c.state === 'idle'), 'every server connection idle');
  });

  it('a paused client that resumes reading gets the whole result, in order', async () => {
    const rows = Math.min(ROWS, 50_000);
    const { raw } = await stalledClient('resumer', rows);
    raw.socket.resume();
    let n = 0;
    let complete = '';
    for (;;) {
      const m = await raw.read(30_000);
      if (m.type === 'D') {
        const v = dataRow(m.body)[0];
        if (v?.length !== ROW_BYTES || v !== 'x'.repeat(ROW_BYTES)) assert.fail(`row ${n} is ${v?.length} bytes`);
        n++;
      } else if (m.type === 'C') {
        complete = m.body.toString('utf8', 0, m.body.length - 1);
      } else if (m.type === 'Z') {
        break;
      } else if (m.type !== 'T') {
        assert.fail(`unexpected message ${m.type}`);
      }
    }
    assert.equal(n, rows);
    assert.equal(complete, `SELECT ${rows}`);
    const again = await raw.query('SELECT 42 AS v');
    assert.deepEqual(again.filter((m) => m.type === 'D').map((m) => dataRow(m.body)), [['42']]);
    raw.close();
  });
});
