/**
 * Peering (peer_id / peers): two real scopegate processes in front of one real PostgreSQL, as
 * behind a TCP load balancer. A CancelRequest sent to the instance that does not hold the
 * client is forwarded to the one that does; wrong keys, unknown peer ids, forwarding loops
 * and floods of cancels are dropped or bounded.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import pg from 'pg';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { startScopegate, type LogLine, type RunningScopegate } from './harness/scopegate.js';
import { freePort } from './harness/ports.js';
import { sendCancel, waitFor } from './harness/rawclient.js';
import { hopsOf, issueSecret, MAX_FORWARDS_IN_FLIGHT, parsePeering, peerIdOf } from '../src/server/peers.js';
import { ConfigError } from '../src/errors.js';
import { makeCA, type TestCA } from './harness/certs.js';
import { SERVER_TLS_DEFAULT } from '../src/server/tls-config.js';

const HOST = '127.0.0.1';
let db: TestPostgres;
let a: RunningScopegate;
let b: RunningScopegate;
let portA = 0;
let portB = 0;
let httpB = 0;
const open: pg.Client[] = [];

function instanceConfig(id: number, port: number, peers: Array<Record<string, unknown>>): Record<string, unknown> {
  return {
    listen: { host: HOST, port },
    databases: { app: { url: db.url('postgres'), pool_size: 4 } },
    pool: { mode: 'transaction', query_wait_timeout: '10s' },
    // debug: the forward and drop lines are what the tests count.
    log: { level: 'debug' },
    ...(id === 2 ? { admin: { scope: 'scopegate:admin', listen_http: `${HOST}:${httpB}` } } : {}),
    peer_id: id,
    peers,
  };
}

/** One list shared by both instances (each ignores its own entry). */
function sharedPeers(): Array<{ id: number; host: string; port: number }> {
  return [{ id: 1, host: HOST, port: portA }, { id: 2, host: HOST, port: portB }];
}

async function clientOn(port: number, name: string): Promise<pg.Client> {
  const c = new pg.Client({ host: HOST, port, user: 'app_user', database: 'app', application_name: name });
  c.on('error', () => undefined);
  await c.connect();
  open.push(c);
  return c;
}

function keyOf(c: pg.Client): { pid: number; secret: number } {
  const k = c as unknown as { processID: number; secretKey: number };
  return { pid: k.processID, secret: k.secretKey };
}

const forwards = (sg: RunningScopegate): LogLine[] => sg.logs.filter((l) => l.msg === 'cancel request forwarded to peer');
const reloads = (sg: RunningScopegate): number => sg.logs.filter((l) => l.msg === 'configuration reloaded').length;
/** B's /metrics value of `name` with `labels` (0 when the series is absent). */
async function metricB(name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`http://${HOST}:${httpB}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}
const drops = (sg: RunningScopegate, reason: string): LogLine[] => sg.logs.filter((l) => l.msg === 'cancel request dropped' && l.reason === reason);

/** Starts `SELECT pg_sleep(30)` on `c` and waits until the server runs it. */
async function sleeping(c: pg.Client, name: string): Promise<{ settled: () => boolean; result: Promise<unknown> }> {
  let done = false;
  const result = c.query('SELECT pg_sleep(30)').then(() => { done = true; return null; }, (e: unknown) => { done = true; return e; });
  await waitFor(async () => (await db.sql(`SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND application_name = '${name}' AND query = 'SELECT pg_sleep(30)'`)).rowCount === 1, `${name}'s sleep to run`);
  return { settled: () => done, result };
}

async function stillSleeping(name: string): Promise<boolean> {
  return (await db.sql(`SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND application_name = '${name}' AND query = 'SELECT pg_sleep(30)'`)).rowCount === 1;
}

before(async () => {
  db = await startPostgres();
  portA = await freePort();
  portB = await freePort();
  httpB = await freePort();
  a = await startScopegate(instanceConfig(1, portA, sharedPeers()));
  b = await startScopegate(instanceConfig(2, portB, sharedPeers()));
});

after(async () => {
  for (const c of open) await c.end().catch(() => undefined);
  if (a) await a.stop();
  if (b) await b.stop();
  if (db) await db.stop();
});

describe('peer_id / peers configuration', () => {
  it('validates ids, hosts, ports and duplicates; absent is peering off', () => {
    assert.deepEqual(parsePeering(undefined, undefined, '.', SERVER_TLS_DEFAULT), { peer_id: 0, peers: [] });
    assert.deepEqual(parsePeering(3, [{ id: 3, host: 'a', port: 6432 }, { id: 4, host: 'b', port: 6433 }], '.', SERVER_TLS_DEFAULT).peers.map((p) => p.id), [3, 4]);
    const bad = (id: unknown, peers: unknown, key: string): void => {
      assert.throws(() => parsePeering(id, peers, '.', SERVER_TLS_DEFAULT), (e) => e instanceof ConfigError && e.message.includes(key), key);
    };
    bad(16384, undefined, 'peer_id');
    bad(-1, undefined, 'peer_id');
    bad(1, { id: 2 }, 'peers');
    bad(1, [{ id: 0, host: 'a', port: 1 }], 'peers[0].id');
    bad(1, [{ id: 2, host: 'a', port: 1 }, { id: 2, host: 'b', port: 2 }], 'peers[1].id');
    bad(1, [{ id: 2, host: '', port: 1 }], 'peers[0].host');
    bad(1, [{ id: 2, host: 'a', port: 70000 }], 'peers[0].port');
    bad(1, [{ id: 2, host: 'a', port: 1, tls: true }], 'peers[0].tls');
    bad(1, [{ id: 2, host: 'a', port: 1, server_tls: { sslmode: 'always' } }], 'peers[0].server_tls.sslmode');
    const [p] = parsePeering(1, [{ id: 2, host: 'a', port: 1, server_tls: { sslmode: 'require' } }], '.', SERVER_TLS_DEFAULT).peers;
    assert.equal(p!.server_tls.sslmode, 'require');
  });
});

describe('two instances as peers', () => {
  it('hands out keys carrying the instance id, the full hop budget and random bits', async () => {
    const cs = await Promise.all([clientOn(portA, 'key_a1'), clientOn(portA, 'key_a2'), clientOn(portB, 'key_b1')]);
    const [k1, k2, k3] = cs.map(keyOf) as [ReturnType<typeof keyOf>, ReturnType<typeof keyOf>, ReturnType<typeof keyOf>];
    assert.equal(peerIdOf(k1.secret >>> 0), 1);
    assert.equal(peerIdOf(k2.secret >>> 0), 1);
    assert.equal(peerIdOf(k3.secret >>> 0), 2);
    for (const k of [k1, k2, k3]) assert.equal(hopsOf(k.secret >>> 0), 3);
    assert.notEqual(k1.pid, k2.pid);
    assert.notEqual(k1.secret, k2.secret);
  });

  it('a cancel sent to B cancels the query of a client on A', async () => {
    const c = await clientOn(portA, 'via_b');
    const q = await sleeping(c, 'via_b');
    const before = forwards(b).length;
    const { pid, secret } = keyOf(c);
    await sendCancel(portB, pid, secret);
    const err = await q.result;
    assert.equal((err as { code?: string }).code, '57014', `expected query_canceled, got ${String(err)}`);
    const fw = forwards(b).slice(before);
    assert.equal(fw.length, 1);
    assert.equal(fw[0]!.peer, 1);
    assert.equal(fw[0]!.hops_left, 2);
    // The client goes on, on A, with its own role.
    assert.equal((await c.query('SELECT 1 AS ok')).rows[0].ok, 1);
  });

  it('the same cancel works through node-postgres pointed at B', async () => {
    const c = await clientOn(portA, 'pg_cancel');
    const q = await sleeping(c, 'pg_cancel');
    // pg's own cancel path: a fresh connection (here to B) that sends the client's key.
    const viaB = new pg.Client({ host: HOST, port: portB, user: 'app_user', database: 'app' });
    viaB.on('error', () => undefined);
    const running = (c as unknown as { activeQuery: unknown }).activeQuery;
    (viaB as unknown as { cancel(client: pg.Client, query: unknown): void }).cancel(c, running);
    const err = await q.result;
    assert.equal((err as { code?: string }).code, '57014');
  });

  it('a wrong key through B cancels nothing; the right one does afterwards', async () => {
    const c = await clientOn(portA, 'wrong_key');
    const q = await sleeping(c, 'wrong_key');
    const { pid, secret } = keyOf(c);
    const droppedBefore = drops(a, 'unknown_key').length;
    // Wrong random bits (peer id and hops intact: B forwards, A finds no such key) and a wrong pid.
    await sendCancel(portB, pid, secret ^ 0x5a5a);
    await sendCancel(portB, pid ^ 0x10, secret);
    await waitFor(() => drops(a, 'unknown_key').length === droppedBefore + 2, 'A to drop both wrong keys');
    assert.equal(q.settled(), false, 'the query must still run');
    assert.ok(await stillSleeping('wrong_key'), 'the sleep still runs on the server');
    await sendCancel(portB, pid, secret);
    assert.equal(((await q.result) as { code?: string }).code, '57014');
  });

  it('a key naming an unknown peer id is dropped, not forwarded', async () => {
    const c = await clientOn(portA, 'unknown_peer');
    const q = await sleeping(c, 'unknown_peer');
    const { pid, secret } = keyOf(c);
    const fwA = forwards(a).length;
    const fwB = forwards(b).length;
    const before = drops(b, 'unknown_peer').length;
    await sendCancel(portB, pid, issueSecret(9, secret));
    await waitFor(() => drops(b, 'unknown_peer').length === before + 1, 'B to drop the key for peer 9');
    assert.equal(drops(b, 'unknown_peer').at(-1)!.peer, 9);
    assert.equal(forwards(a).length, fwA);
    assert.equal(forwards(b).length, fwB);
    assert.equal(q.settled(), false);
    assert.ok(await stillSleeping('unknown_peer'));
    await sendCancel(portA, pid, secret);
    assert.equal(((await q.result) as { code?: string }).code, '57014');
  });

  it('a flood of cancels for a peer that never answers opens at most the forward limit of sockets', async () => {
    const held: Socket[] = [];
    const blackhole: Server = createServer({ allowHalfOpen: true }, (s) => { s.on('error', () => undefined); held.push(s); });
    await new Promise<void>((resolve) => blackhole.listen(0, HOST, resolve));
    const holePort = (blackhole.address() as { port: number }).port;
    try {
      b.writeConfig(instanceConfig(2, portB, [...sharedPeers(), { id: 8, host: HOST, port: holePort, server_tls: { sslmode: 'disable' } }]));
      const before = reloads(b);
      b.proc.kill('SIGHUP');
      await waitFor(() => reloads(b) > before, 'B to reload');
      const fwBefore = forwards(b).length;
      const fwMetric = await metricB('scopegate_peer_cancel_forwards_total');
      const limitMetric = await metricB('scopegate_peer_cancel_drops_total', '{reason="forward_limit"}');
      const dropBefore = drops(b, 'forward_limit').length;
      const total = MAX_FORWARDS_IN_FLIGHT + 24;
      await Promise.all(Array.from({ length: total }, (_, i) => sendCancel(portB, 1000 + i, issueSecret(8, i))));
      await waitFor(() => held.length === MAX_FORWARDS_IN_FLIGHT && drops(b, 'forward_limit').length === dropBefore + 24, 'the limit to be reached');
      assert.equal(forwards(b).length - fwBefore, MAX_FORWARDS_IN_FLIGHT);
      assert.equal(held.length, MAX_FORWARDS_IN_FLIGHT);
      assert.equal(await metricB('scopegate_peer_cancel_forwards_total') - fwMetric, MAX_FORWARDS_IN_FLIGHT);
      assert.equal(await metricB('scopegate_peer_cancel_drops_total', '{reason="forward_limit"}') - limitMetric, 24);
      // Each held socket got exactly one 16-byte CancelRequest naming peer 8 with a hop less.
      const first = await new Promise<Buffer>((resolve) => {
        const s = held[0]!;
        const chunks: Buffer[] = [];
        s.on('data', (d: Buffer) => chunks.push(d));
        s.on('end', () => resolve(Buffer.concat(chunks)));
        s.resume();
      });
      assert.equal(first.length, 16);
      assert.equal(first.readInt32BE(0), 16);
      assert.equal(first.readInt32BE(4), 80877102);
      assert.equal(peerIdOf(first.readUInt32BE(12)), 8);
      assert.equal(hopsOf(first.readUInt32BE(12)), 2);
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((resolve) => blackhole.close(() => resolve()));
    }
    // Freed slots forward again.
    const fw = forwards(b).length;
    await waitFor(async () => {
      await sendCancel(portB, 7, issueSecret(1, 7));
      return forwards(b).length > fw;
    }, 'B to forward again once the peer let go');
  });

  it('a forwarding loop (A and B each list the other as peer 7) stops at the hop limit', async () => {
    b.writeConfig(instanceConfig(2, portB, [...sharedPeers(), { id: 7, host: HOST, port: portA }]));
    a.writeConfig(instanceConfig(1, portA, [...sharedPeers(), { id: 7, host: HOST, port: portB }]));
    const reloadsA = reloads(a);
    const reloadsB = reloads(b);
    b.proc.kill('SIGHUP');
    a.proc.kill('SIGHUP');
    await waitFor(() => reloads(a) > reloadsA && reloads(b) > reloadsB, 'both instances to reload');
    const fwA = forwards(a).length;
    const fwB = forwards(b).length;
    const hopDrops = drops(a, 'hop_limit').length + drops(b, 'hop_limit').length;
    await sendCancel(portA, 4242, issueSecret(7, 42));
    // A -> B (2 hops left) -> A (1) -> B (0) -> B drops it.
    await waitFor(() => drops(a, 'hop_limit').length + drops(b, 'hop_limit').length === hopDrops + 1, 'the loop to end at the hop limit');
    const newA = forwards(a).slice(fwA);
    const newB = forwards(b).slice(fwB);
    assert.equal(newA.length + newB.length, 3, 'exactly three forwards');
    assert.deepEqual(newA.map((l) => l.hops_left), [2, 0]);
    assert.deepEqual(newB.map((l) => l.hops_left), [1]);
    assert.equal(drops(b, 'hop_limit').length > 0, true);
  });

  it("B listing A's id at B's own address forwards to itself three times, then drops", async () => {
    const c = await clientOn(portA, 'self_loop');
    const q = await sleeping(c, 'self_loop');
    const before = reloads(b);
    b.writeConfig(instanceConfig(2, portB, [{ id: 1, host: HOST, port: portB }, { id: 2, host: HOST, port: portB }]));
    b.proc.kill('SIGHUP');
    await waitFor(() => reloads(b) > before, 'B to reload');
    const fwB = forwards(b).length;
    const fwA = forwards(a).length;
    const hopDrops = drops(b, 'hop_limit').length;
    const { pid, secret } = keyOf(c);
    await sendCancel(portB, pid, secret);
    await waitFor(() => drops(b, 'hop_limit').length === hopDrops + 1, 'B to stop at the hop limit');
    assert.deepEqual(forwards(b).slice(fwB).map((l) => l.hops_left), [2, 1, 0]);
    assert.equal(forwards(a).length, fwA);
    // The key never reached A: the query runs until a cancel that does reach it.
    assert.equal(q.settled(), false);
    assert.ok(await stillSleeping('self_loop'));
    await sendCancel(portA, pid, secret);
    assert.equal(((await q.result) as { code?: string }).code, '57014');
  });
});

describe('TLS to a peer (peers[].server_tls)', () => {
  let ca: TestCA;
  let rogue: TestCA;
  let c: RunningScopegate;
  let portC = 0;

  before(async () => {
    ca = makeCA();
    rogue = makeCA('rogue CA');
    const cert = ca.issue('sg', { cn: 'scopegate', sans: 'IP:127.0.0.1,DNS:localhost', usage: 'serverAuth', serial: 1001 });
    portC = await freePort();
    // C takes only TLS clients; B must verify C's certificate to forward to it.
    c = await startScopegate({ ...instanceConfig(3, portC, sharedPeers()), client_tls: { sslmode: 'require', cert_file: cert.cert, key_file: cert.key } });
  });

  after(async () => {
    if (c) await c.stop();
    ca?.remove();
    rogue?.remove();
  });

  const withPeerC = async (caFile: string): Promise<void> => {
    const before = reloads(b);
    b.writeConfig(instanceConfig(2, portB, [...sharedPeers(), { id: 3, host: HOST, port: portC, server_tls: { sslmode: 'verify-full', ca_file: caFile } }]));
    b.proc.kill('SIGHUP');
    await waitFor(() => reloads(b) > before, 'B to reload');
  };

  it('forwards over verified TLS, and not at all to a peer whose certificate does not verify', async () => {
    const client = new pg.Client({ host: HOST, port: portC, user: 'app_user', database: 'app', application_name: 'tls_peer', ssl: { ca: ca.caPem.toString() } });
    client.on('error', () => undefined);
    await client.connect();
    open.push(client);
    const q = await sleeping(client, 'tls_peer');
    const { pid, secret } = keyOf(client);
    assert.equal(peerIdOf(secret >>> 0), 3);

    await withPeerC(rogue.ca);
    const failed = await metricB('scopegate_peer_cancel_forward_failures_total');
    await sendCancel(portB, pid, secret);
    await waitFor(async () => (await metricB('scopegate_peer_cancel_forward_failures_total')) === failed + 1, 'the forward to fail certificate verification');
    assert.equal(q.settled(), false, 'a peer that fails verification is not sent the key');
    assert.ok(await stillSleeping('tls_peer'));

    await withPeerC(ca.ca);
    await sendCancel(portB, pid, secret);
    assert.equal(((await q.result) as { code?: string }).code, '57014');
    assert.equal(await metricB('scopegate_peer_cancel_forward_failures_total'), failed + 1);
  });

  it('a peer that is down costs one warning, not one per cancel', async () => {
    const down = await freePort();
    const before = reloads(b);
    b.writeConfig(instanceConfig(2, portB, [...sharedPeers(), { id: 4, host: HOST, port: down, server_tls: { sslmode: 'disable' } }]));
    b.proc.kill('SIGHUP');
    await waitFor(() => reloads(b) > before, 'B to reload');
    const failed = await metricB('scopegate_peer_cancel_forward_failures_total');
    for (let i = 0; i < 5; i++) await sendCancel(portB, 500 + i, issueSecret(4, i));
    const warnings = (): LogLine[] => b.logs.filter((l) => l.msg === 'forwarding a cancel request to a peer failed' && l.peer === 4);
    await waitFor(async () => (await metricB('scopegate_peer_cancel_forward_failures_total')) === failed + 5 && warnings().length > 0, 'five refused forwards');
    assert.equal(warnings().length, 1);
  });
});
