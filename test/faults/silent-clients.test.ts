// Concern: clients that connect and send nothing (or half a startup packet, or a startup packet and no password) are closed after client_login_timeout with 08P01, hundreds of them keep nobody else from logging in and working, and their sockets are released.
/**
 * Sizes (defaults are what `npm test` runs):
 *   SG_FAULTS_SILENT   silent connections, split over the three kinds (default 201)
 *   SG_FAULTS_CLIENTS  bystanders logging in while they wait (default 20)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { errorFields, RawClient, startupPacket, waitFor, type Msg } from '../harness/rawclient.js';
import { envNumber, startFaultFixture, type FaultFixture } from './support.js';

const SILENT = envNumber('SG_FAULTS_SILENT', 201);
const BYSTANDERS = envNumber('SG_FAULTS_CLIENTS', 20);
const LOGIN_TIMEOUT_MS = 1000;

type Kind = 'nothing' | 'half a startup packet' | 'startup, no password';
const KINDS: Kind[] = ['nothing', 'half a startup packet', 'startup, no password'];

describe('silent clients and client_login_timeout', { timeout: 300_000 }, () => {
  let fx: FaultFixture;
  before(async () => {
    fx = await startFaultFixture({ poolSize: 4, pool: { client_login_timeout: '1s' } });
  });
  after(async () => { await fx?.stop(); });

  /** scopegate's open files, less its server connections (the pool may grow meanwhile). */
  const fds = async (): Promise<number> => readdirSync(`/proc/${fx.sg.proc.pid}/fd`).length - (await fx.serverConnections()).length;

  it(`${SILENT} silent connections are closed after client_login_timeout; ${BYSTANDERS} others log in and work meanwhile`, async (t) => {
    // A client logged in before the flood, idle for longer than client_login_timeout: the
    // timeout is about logging in, it must not touch it.
    const early = await fx.connect('early');
    await early.query('SELECT 1');
    const fdBaseline = await fds();

    const opened = Date.now();
    const silent = await Promise.all(Array.from({ length: SILENT }, async (_, i) => {
      const kind = KINDS[i % KINDS.length]!;
      // From before the connect: scopegate's timer starts when it accepts, which is later.
      const sentAt = Date.now();
      const raw = await RawClient.connect(fx.sg.port);
      const packet = startupPacket({ user: `silent-${i}`, database: 'app' });
      if (kind === 'half a startup packet') raw.write(packet.subarray(0, packet.length >> 1));
      if (kind === 'startup, no password') raw.write(packet);
      return { raw, kind, sentAt };
    }));
    // Those that sent a whole startup packet are asked for a password and never answer.
    const outcomes = Promise.all(silent.map(async (s) => {
      const got: Msg[] = await s.raw.readUntilClosed(15_000);
      return { ...s, got, closedMs: Date.now() - s.sentAt };
    }));

    // Meanwhile others log in and run transactions.
    const loginMs: number[] = [];
    await Promise.all(Array.from({ length: BYSTANDERS }, async (_, i) => {
      const t0 = Date.now();
      const c = await fx.connect(`bystander-${i}`);
      loginMs.push(Date.now() - t0);
      await c.query('BEGIN');
      await c.query({ text: 'INSERT INTO fault_rows (id, client) VALUES ($1, $2)', values: [10_000 + i, i] });
      await c.query('COMMIT');
      assert.equal((await c.query({ text: 'SELECT count(*)::int AS n FROM fault_rows WHERE id = $1', values: [10_000 + i] })).rows[0].n, 1);
      await c.end();
    }));
    const bystandersDoneMs = Date.now() - opened;

    const results = await outcomes;
    const byKind = new Map<Kind, number[]>();
    for (const r of results) {
      // Every silent connection ends with FATAL 08P01 naming the timeout, then the close.
      const errs = r.got.filter((m) => m.type === 'E');
      assert.equal(errs.length, 1, `${r.kind}: ${r.got.map((m) => m.type).join(',')}`);
      const f = errorFields(errs[0]!.body);
      assert.equal(f.C, '08P01', `${r.kind}: ${JSON.stringify(f)}`);
      assert.equal(f.S, 'FATAL');
      assert.match(f.M ?? '', /client_login_timeout/);
      const before = r.got.filter((m) => m.type !== 'E').map((m) => m.type);
      assert.deepEqual(before, r.kind === 'startup, no password' ? ['R'] : [], `${r.kind}: what came before the error`);
      const list = byKind.get(r.kind) ?? [];
      list.push(r.closedMs);
      byKind.set(r.kind, list);
    }
    for (const [kind, ms] of byKind) {
      ms.sort((a, b) => a - b);
      t.diagnostic(`${kind}: ${ms.length} closed after ${ms[0]}..${ms[ms.length - 1]} ms (median ${ms[ms.length >> 1]}; client_login_timeout ${LOGIN_TIMEOUT_MS} ms)`);
    }
    loginMs.sort((a, b) => a - b);
    t.diagnostic(`${BYSTANDERS} bystanders logged in while ${SILENT} connections were silent: login median ${loginMs[loginMs.length >> 1]} ms, max ${loginMs[loginMs.length - 1]} ms; all done ${bystandersDoneMs} ms after the flood began`);

    // The early client is untouched.
    assert.equal((await early.query('SELECT 7 AS v')).rows[0].v, 7);
    await early.end();
    // Their sockets are gone from scopegate.
    let fdAfter = 0;
    await waitFor(async () => { fdAfter = await fds(); return fdAfter <= fdBaseline; }, `scopegate's open files (less server connections) back to ${fdBaseline}`);
    t.diagnostic(`scopegate open files less server connections: ${fdBaseline} before, ${fdAfter} after`);
  });
});
