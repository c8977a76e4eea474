/**
 * TLS on both sides of scopegate, with certificates made by openssl at test time: clients
 * (node-postgres, postgres.js, psql) connect with sslmode=verify-full; scopegate reaches a
 * TLS-enabled PostgreSQL with server_tls verify-full; the attacks on the negotiation
 * (plain bytes stuffed after SSLRequest, SSLRequest inside TLS, a handshake that never
 * ends, plain text after 'S', plain text under require, direct TLS without ALPN) are refused;
 * certificates reload on SIGHUP; CancelRequest works over TLS; the audit line says TLS.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import pg from 'pg';
import postgres from 'postgres';
import pino from 'pino';
import { runProcess, type ProcessResult } from './harness/process.js';
import { giveKeyToPostgres, makeCA, type Issued, type TestCA } from './harness/certs.js';
import { cancelRequestPacket, errorFields, fe, firstError, RawClient, sslRequest, startupPacket, waitFor, type Msg } from './harness/rawclient.js';
import { startScopegate, type RunningScopegate } from './harness/scopegate.js';
import { SUPERUSER } from './harness/postgres.js';
import { DB, errorOf, startFixture, type Fixture } from './scope.fixture.test.js';
import { ClientAuthenticator } from '../src/auth/exchange.js';
import { parseAuthConfig } from '../src/auth/index.js';
import { AuthError } from '../src/auth/errors.js';

const PSQL = '/usr/bin/psql';
const GSSENC_REQUEST = 80877104;

/** A TLS client connection to scopegate after SSLRequest/'S' (what libpq does), or direct TLS. */
async function tlsTo(port: number, opts: ConnectionOptions & { direct?: boolean } = {}): Promise<TLSSocket> {
  const raw: Socket | undefined = opts.direct ? undefined : await new Promise<Socket>((resolve, reject) => {
    const s = netConnect({ port, host: '127.0.0.1' });
    s.once('error', reject);
    s.once('connect', () => {
      s.write(sslRequest());
      s.once('data', (d: Buffer) => {
        if (d.toString() !== 'S') reject(new Error(`SSLRequest answered ${JSON.stringify(d.toString())}`));
        else resolve(s);
      });
    });
  });
  return new Promise((resolve, reject) => {
    const t = tlsConnect({ ...(raw ? { socket: raw } : { port, host: '127.0.0.1' }), ...opts });
    t.once('secureConnect', () => { t.off('error', reject); resolve(t); });
    t.once('error', reject);
  });
}

/** The bytes a socket receives until the server closes it. */
function bytesUntilClosed(s: Socket): Promise<Buffer> {
  const got: Buffer[] = [];
  s.on('data', (d: Buffer) => got.push(d));
  return new Promise((resolve) => {
    let done = false;
    const end = (): void => { if (!done) { done = true; resolve(Buffer.concat(got)); } };
    s.on('close', end);
    s.on('end', end);
    s.on('error', end);
  });
}

/** The typed messages in `b`. */
function messages(b: Buffer): Msg[] {
  const out: Msg[] = [];
  let off = 0;
  while (off + 5 <= b.length) {
    const len = b.readInt32BE(off + 1);
    out.push({ type: String.fromCharCode(b[off]!), body: b.subarray(off + 5, off + 1 + len) });
    off += 1 + len;
  }
  return out;
}

function runPsql(conninfo: string, command: string, env: Record<string, string> = {}): Promise<ProcessResult> {
  return runProcess(PSQL, ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-c', command, conninfo], { PGCONNECT_TIMEOUT: '10', ...env }, 30_000);
}

function peerOf(c: pg.Client): TLSSocket {
  return (c as unknown as { connection: { stream: TLSSocket } }).connection.stream;
}

describe('TLS', { timeout: 240_000 }, () => {
  let ca: TestCA;
  let rogue: TestCA;
  let sgCert: Issued;
  let sgCert2: Issued;
  let clientCert: Issued;
  let rogueClient: Issued;
  /** The certificate files scopegate reads (overwritten for the reload test). */
  let live: string;
  let liveCert: string;
  let liveKey: string;
  let fx: Fixture;
  /** trust, no policy, several databases with different server_tls: the server side. */
  let open: RunningScopegate;
  /** trust, client_tls require, client_login_timeout 1s. */
  let strict: RunningScopegate;
  const clients: pg.Client[] = [];
  /** A hostile "server" that answers SSLRequest with `answer` (and whatever follows it in the same write). */
  const hostile: NetServer[] = [];
  const hostileServer = (answer: Buffer): Promise<number> => new Promise((resolve) => {
    const srv = createNetServer((s) => { s.on('error', () => undefined); s.once('data', () => s.write(answer)); });
    hostile.push(srv);
    srv.listen(0, '127.0.0.1', () => resolve((srv.address() as { port: number }).port));
  });

  before(async () => {
    ca = makeCA();
    rogue = makeCA('rogue CA');
    sgCert = ca.issue('sg', { cn: 'scopegate', sans: 'IP:127.0.0.1,DNS:localhost', usage: 'serverAuth', serial: 1001 });
    sgCert2 = ca.issue('sg2', { cn: 'scopegate', sans: 'IP:127.0.0.1,DNS:localhost', usage: 'serverAuth', serial: 1002 });
    // The database's certificate names 127.0.0.1 and pg.scopegate.test, not localhost.
    const pgCert = ca.issue('pg', { cn: 'pg.scopegate.test', sans: 'IP:127.0.0.1,DNS:pg.scopegate.test', usage: 'serverAuth', serial: 2001 });
    clientCert = ca.issue('client', { cn: 'app-client', usage: 'clientAuth', serial: 3001 });
    rogueClient = rogue.issue('client', { cn: 'app-client', usage: 'clientAuth', serial: 3002 });
    giveKeyToPostgres(pgCert.key);
    live = mkdtempSync(join(tmpdir(), 'scopegate-tls-live-'));
    liveCert = join(live, 'server.crt');
    liveKey = join(live, 'server.key');
    copyFileSync(sgCert.cert, liveCert);
    copyFileSync(sgCert.key, liveKey);
    fx = await startFixture({
      pgFlags: ['-c', 'ssl=on', '-c', `ssl_cert_file=${pgCert.cert}`, '-c', `ssl_key_file=${pgCert.key}`],
      config: { client_tls: { sslmode: 'prefer', cert_file: liveCert, key_file: liveKey, protocols: 'secure' }, admin: { scope: 'scopegate:admin' } },
      database: { server_tls: { sslmode: 'verify-full', ca_file: ca.ca } },
    });
    const url = (host: string) => fx.pg.url('postgres').replace('127.0.0.1', host);
    // 'S' and an AuthenticationOk in the same write: the CVE-2021-23222 buffer stuffing.
    const stuffing = await hostileServer(Buffer.concat([Buffer.from('S'), Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0])]));
    const refusing = await hostileServer(Buffer.from('N'));
    open = await startScopegate({
      client_tls: { sslmode: 'prefer', cert_file: sgCert.cert, key_file: sgCert.key },
      server_tls: { sslmode: 'verify-full', ca_file: ca.ca },
      databases: {
        full: { url: url('127.0.0.1'), pool_size: 2 },
        plain: { url: url('127.0.0.1'), pool_size: 2, server_tls: { sslmode: 'disable' } },
        preferred: { url: url('127.0.0.1'), pool_size: 2, server_tls: { sslmode: 'prefer' } },
        byname_ca: { url: url('localhost'), pool_size: 2, server_tls: { sslmode: 'verify-ca' } },
        byname_full: { url: url('localhost'), pool_size: 2 },
        rogue: { url: url('127.0.0.1'), pool_size: 2, server_tls: { ca_file: rogue.ca } },
        stuffed: { url: `postgres://postgres:x@127.0.0.1:${stuffing}/postgres`, pool_size: 1, server_tls: { sslmode: 'prefer' } },
        refused: { url: `postgres://postgres:x@127.0.0.1:${refusing}/postgres`, pool_size: 1, server_tls: { sslmode: 'require' } },
      },
      auth: { method: 'trust' },
      log: { level: 'info' },
    });
    strict = await startScopegate({
      client_tls: { sslmode: 'require', cert_file: sgCert.cert, key_file: sgCert.key, ca_file: ca.ca },
      databases: { full: { url: fx.pg.url('postgres'), pool_size: 2, server_tls: { sslmode: 'require' } } },
      pool: { client_login_timeout: '1s' },
      auth: { method: 'trust' },
      log: { level: 'info' },
    });
  });
  after(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    await open?.stop().catch(() => null);
    await strict?.stop().catch(() => null);
    await fx?.stop();
    for (const h of hostile) h.close();
    ca?.remove();
    rogue?.remove();
    if (live) rmSync(live, { recursive: true, force: true });
  });

  const pgClient = async (port: number, database: string, ssl: pg.ClientConfig['ssl'], extra: pg.ClientConfig = {}): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: SUPERUSER, database, ssl, ...extra });
    c.on('error', () => undefined);
    clients.push(c);
    await c.connect();
    return c;
  };

  test('node-postgres, postgres.js and psql connect with sslmode=verify-full', async () => {
    const c = await pgClient(open.port, 'full', undefined, { connectionString: `postgres://${SUPERUSER}@127.0.0.1:${open.port}/full?sslmode=verify-full&sslrootcert=${ca.ca}` });
    assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
    const s = peerOf(c);
    assert.match(String(s.getProtocol()), /^TLSv1\.[23]$/);
    assert.equal(s.getPeerCertificate().fingerprint256, sgCert.fingerprint256);

    const sql = postgres({ host: '127.0.0.1', port: open.port, user: SUPERUSER, database: 'full', ssl: { ca: ca.caPem, rejectUnauthorized: true }, max: 1, onnotice: () => undefined });
    try {
      const r = await sql<Array<{ n: number }>>`SELECT 2 AS n`;
      assert.equal(r[0]!.n, 2);
    } finally {
      await sql.end();
    }

    const ok = await runPsql(`host=127.0.0.1 port=${open.port} user=${SUPERUSER} dbname=full sslmode=verify-full sslrootcert=${ca.ca}`, '\\conninfo');
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /SSL connection \(protocol: TLSv1\.[23]/);
    // The same psql against another CA's roots: the certificate is not trusted.
    const bad = await runPsql(`host=127.0.0.1 port=${open.port} user=${SUPERUSER} dbname=full sslmode=verify-full sslrootcert=${rogue.ca}`, 'SELECT 1');
    assert.notEqual(bad.code, 0);
    assert.match(bad.err, /certificate verify failed/);
  });

  test('server_tls: verify-full reaches PostgreSQL over TLS; disable does not; a wrong CA or host name is refused', async () => {
    const sslOf = async (db: string): Promise<{ ssl: boolean; version: string | null }> => {
      const c = await pgClient(open.port, db, false);
      const r = await c.query<{ ssl: boolean; version: string | null }>('SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      await c.end();
      return r.rows[0]!;
    };
    const full = await sslOf('full');
    assert.equal(full.ssl, true);
    assert.match(String(full.version), /^TLSv1\.[23]$/);
    assert.equal((await sslOf('plain')).ssl, false);
    assert.equal((await sslOf('preferred')).ssl, true);
    // verify-ca does not look at the name: localhost is not in the certificate, the chain is good.
    assert.equal((await sslOf('byname_ca')).ssl, true);
    const byName = await errorOf(() => pgClient(open.port, 'byname_full', false));
    assert.match(byName.message, /TLS to server localhost:\d+ failed \(server_tls\.sslmode verify-full\).*(altnames|Hostname)/);
    const wrongCa = await errorOf(() => pgClient(open.port, 'rogue', false));
    assert.match(wrongCa.message, /TLS to server 127\.0\.0\.1:\d+ failed.*(self-signed|unable to verify|local issuer)/i);
    // The database-side view: the authenticator's sessions through the fixture came over TLS.
    const viaFx = await fx.su("SELECT count(*)::int AS n FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'authenticator' AND NOT s.ssl");
    assert.equal(viaFx.rows[0].n, 0);
  });

  test('server_tls: plain bytes after the server\'s S, or N under require, end the login', async () => {
    const stuffed = await errorOf(() => pgClient(open.port, 'stuffed', false));
    assert.match(stuffed.message, /sent unencrypted data after its answer to SSLRequest/);
    const refused = await errorOf(() => pgClient(open.port, 'refused', false));
    assert.match(refused.message, /does not accept TLS, but databases\.refused\.server_tls\.sslmode is require/);
  });

  test('the audit line and SHOW CLIENTS say whether the client used TLS, and which version', async () => {
    const tlsClient = await fx.client('orders:read', { sub: 'tls-user', extra: { ssl: { ca: ca.caPem } } });
    await tlsClient.query('SELECT id AS tls_marker FROM orders');
    const plainClient = await fx.client('orders:read', { sub: 'plain-user', extra: { ssl: false } });
    await plainClient.query('SELECT id AS plain_marker FROM orders');
    const t = await fx.sg.waitForLog((l) => l.stream === 'audit' && String(l.statement).includes('tls_marker'));
    const p = await fx.sg.waitForLog((l) => l.stream === 'audit' && String(l.statement).includes('plain_marker'));
    assert.match(String(t.tls), /^TLSv1\.[23]$/);
    assert.equal(t.tls, peerOf(tlsClient).getProtocol());
    assert.equal(p.tls, null);
    // SHOW CLIENTS: the TLS version of the TLS client, empty for the plain one.
    const admin = new pg.Client({ host: '127.0.0.1', port: fx.sg.port, user: 'ops', database: 'pgbouncer', password: await fx.token('scopegate:admin', 'ops'), ssl: false });
    clients.push(admin);
    await admin.connect();
    const rows = (await admin.query('SHOW CLIENTS')).rows as Array<{ sub: string; tls: string }>;
    assert.equal(rows.find((r) => r.sub === 'tls-user')?.tls, peerOf(tlsClient).getProtocol());
    assert.equal(rows.find((r) => r.sub === 'plain-user')?.tls, '');
  });

  test('plain bytes sent after SSLRequest in the same write are refused, not read as if over TLS', async () => {
    const raw = await RawClient.connect(open.port);
    raw.write(Buffer.concat([sslRequest(), startupPacket({ user: SUPERUSER, database: 'full' }), fe.query('SELECT 1')]));
    const got = await raw.readUntilClosed();
    assert.deepEqual(got.map((m) => m.type), ['E']);
    const e = errorFields(got[0]!.body);
    assert.equal(e.C, '08P01');
    assert.equal(e.M, 'received unencrypted data after SSL request');
  });

  test('an SSLRequest (or GSSENCRequest) sent again inside TLS is refused', async () => {
    for (const code of [sslRequest(), (() => { const b = Buffer.alloc(8); b.writeInt32BE(8, 0); b.writeInt32BE(GSSENC_REQUEST, 4); return b; })()]) {
      const t = await tlsTo(open.port, { ca: ca.caPem });
      const closed = bytesUntilClosed(t);
      t.write(code);
      const got = messages(await closed);
      assert.deepEqual(got.map((m) => m.type), ['E']);
      assert.equal(errorFields(got[0]!.body).C, '08P01');
      assert.match(errorFields(got[0]!.body).M!, /received inside a TLS connection/);
    }
  });

  test('a plain StartupMessage after the S answer ends the connection without a login', async () => {
    const s = netConnect({ port: open.port, host: '127.0.0.1' });
    await new Promise((r) => s.once('connect', r));
    s.write(sslRequest());
    const answer = await new Promise<Buffer>((r) => s.once('data', r));
    assert.equal(answer.toString(), 'S');
    const closed = bytesUntilClosed(s);
    s.write(startupPacket({ user: SUPERUSER, database: 'full' }));
    const rest = await closed;
    // At most a TLS alert record (0x15), never a protocol message.
    assert.ok(rest.length === 0 || rest[0] === 0x15, `got ${rest.subarray(0, 16).toString('hex')}`);
  });

  test('GSSENCRequest gets N, then SSLRequest upgrades (libpq gssencmode=prefer)', async () => {
    const s = netConnect({ port: open.port, host: '127.0.0.1' });
    await new Promise((r) => s.once('connect', r));
    const gss = Buffer.alloc(8);
    gss.writeInt32BE(8, 0);
    gss.writeInt32BE(GSSENC_REQUEST, 4);
    s.write(gss);
    assert.equal((await new Promise<Buffer>((r) => s.once('data', r))).toString(), 'N');
    s.write(sslRequest());
    assert.equal((await new Promise<Buffer>((r) => s.once('data', r))).toString(), 'S');
    const t = await new Promise<TLSSocket>((resolve, reject) => {
      const x = tlsConnect({ socket: s, ca: ca.caPem, servername: 'localhost' });
      x.once('secureConnect', () => resolve(x));
      x.once('error', reject);
    });
    const closed = bytesUntilClosed(t);
    t.write(startupPacket({ user: SUPERUSER, database: 'full' }));
    await new Promise<void>((resolve) => { const poll = (): void => { t.once('data', (d: Buffer) => { if (d.includes(Buffer.from('Z\0\0\0\x05I'))) resolve(); else poll(); }); }; poll(); });
    t.write(fe.terminate());
    await closed;
  });

  test('direct TLS (PostgreSQL 17 sslnegotiation=direct) needs ALPN postgresql', async () => {
    const t = await tlsTo(open.port, { direct: true, ca: ca.caPem, ALPNProtocols: ['postgresql'] });
    assert.equal(t.alpnProtocol, 'postgresql');
    const closed = bytesUntilClosed(t);
    t.write(startupPacket({ user: SUPERUSER, database: 'full' }));
    await new Promise<void>((resolve) => { const poll = (): void => { t.once('data', (d: Buffer) => { if (d.includes(Buffer.from('Z\0\0\0\x05I'))) resolve(); else poll(); }); }; poll(); });
    t.write(fe.terminate());
    await closed;
    // No ALPN: the handshake may finish, but the server closes before any protocol byte.
    const noAlpn = await tlsTo(open.port, { direct: true, ca: ca.caPem }).then(async (x) => {
      const b = await bytesUntilClosed(x);
      return b.length;
    }, () => 0);
    assert.equal(noAlpn, 0);
    // Another protocol: refused in the handshake.
    await assert.rejects(tlsTo(open.port, { direct: true, ca: ca.caPem, ALPNProtocols: ['http/1.1'] }));
  });

  test('sslmode require: a plain-text client gets one clear FATAL and nothing else', async () => {
    const raw = await RawClient.connect(strict.port);
    raw.write(startupPacket({ user: SUPERUSER, database: 'full' }));
    const got = await raw.readUntilClosed();
    assert.deepEqual(got.map((m) => m.type), ['E']);
    const e = firstError(got)!;
    assert.equal(e.C, '28000');
    assert.equal(e.S, 'FATAL');
    assert.match(e.M!, /^TLS is required/);
    assert.match(e.H!, /client_tls\.sslmode is require/);
    const viaPg = await errorOf(() => pgClient(strict.port, 'full', false));
    assert.match(viaPg.message, /TLS is required/);
    // Over TLS the same login works.
    const c = await pgClient(strict.port, 'full', { ca: ca.caPem });
    assert.equal((await c.query('SELECT 3 AS n')).rows[0].n, 3);
  });

  test('TLS renegotiation is refused, as PostgreSQL refuses it, and the connection does not linger', async () => {
    // Renegotiation exists up to TLS 1.2. Accepted, a client could renegotiate past node's
    // limit, after which the socket stayed open outside every count and timeout.
    const t = await tlsTo(open.port, { ca: ca.caPem, maxVersion: 'TLSv1.2' });
    assert.equal(t.getProtocol(), 'TLSv1.2');
    const closed = bytesUntilClosed(t);
    // Refused, the server's no_renegotiation alert ends the connection with an 'error' event;
    // accepted, renegotiate()'s callback reports success.
    const outcome = await new Promise<Error | null>((resolve) => {
      t.once('error', resolve);
      const ok = t.renegotiate({ rejectUnauthorized: false }, (err) => resolve(err ?? null));
      if (!ok) resolve(new Error('renegotiate() refused locally'));
    });
    assert.ok(outcome instanceof Error, 'the renegotiation succeeded');
    assert.match(outcome.message, /renegotiation/i);
    await closed;
    await new Promise((resolve) => (t.closed ? resolve(null) : t.once('close', resolve)));
  });

  test('a TLS handshake that never completes is closed by client_login_timeout', async () => {
    const s = netConnect({ port: strict.port, host: '127.0.0.1' });
    await new Promise((r) => s.once('connect', r));
    s.write(sslRequest());
    assert.equal((await new Promise<Buffer>((r) => s.once('data', r))).toString(), 'S');
    const closed = bytesUntilClosed(s);
    // Half a ClientHello record header, then silence.
    s.write(Buffer.from([0x16, 0x03, 0x01]));
    const rest = await closed;
    assert.equal(rest.length, 0);
    await strict.waitForLog((l) => l.msg === 'client_login_timeout: closing a client that did not log in' && l.tls === false);
  });

  test('a CancelRequest over TLS cancels the running statement', async () => {
    const c = await pgClient(open.port, 'full', { ca: ca.caPem });
    const running = c.query('SELECT pg_sleep(60)').then(() => null, (err: pg.DatabaseError) => err);
    const { processID, secretKey } = c as unknown as { processID: number; secretKey: number };
    await waitFor(async () => {
      const r = await fx.pg.sql("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'");
      return r.rows[0].n === 1;
    }, 'the sleep to run');
    const t = await tlsTo(open.port, { ca: ca.caPem });
    const closed = bytesUntilClosed(t);
    t.write(cancelRequestPacket(processID, secretKey));
    await closed;
    const err = await running;
    assert.equal(err?.code, '57014');
  });

  test('certificates reload on SIGHUP: open connections keep working, new ones see the new certificate; a bad file keeps the old', async () => {
    const before = await fx.client('orders:read', { sub: 'reload-1', extra: { ssl: { ca: ca.caPem } } });
    assert.equal(peerOf(before).getPeerCertificate().serialNumber, sgCert.serial);
    copyFileSync(sgCert2.cert, liveCert);
    copyFileSync(sgCert2.key, liveKey);
    const seen = fx.sg.logs.length;
    fx.sg.proc.kill('SIGHUP');
    await fx.sg.waitForLog((l) => l.msg === 'client_tls: certificates reloaded' && fx.sg.logs.indexOf(l) >= seen);
    const afterReload = await fx.client('orders:read', { sub: 'reload-2', extra: { ssl: { ca: ca.caPem } } });
    assert.equal(peerOf(afterReload).getPeerCertificate().serialNumber, sgCert2.serial);
    assert.equal(peerOf(afterReload).getPeerCertificate().fingerprint256, sgCert2.fingerprint256);
    // The connection opened before still runs statements over its first certificate's session.
    assert.equal((await before.query('SELECT count(*)::int AS n FROM orders')).rowCount, 1);
    assert.equal(peerOf(before).getPeerCertificate().serialNumber, sgCert.serial);

    writeFileSync(liveKey, 'not a key\n');
    const seen2 = fx.sg.logs.length;
    fx.sg.proc.kill('SIGHUP');
    const failed = await fx.sg.waitForLog((l) => l.msg === 'reload failed; keeping the running configuration' && fx.sg.logs.indexOf(l) >= seen2);
    assert.match(String(failed.err), /client_tls/);
    const still = await fx.client('orders:read', { sub: 'reload-3', extra: { ssl: { ca: ca.caPem } } });
    assert.equal(peerOf(still).getPeerCertificate().serialNumber, sgCert2.serial);
    copyFileSync(sgCert2.key, liveKey);
  });

  test('client certificates (verify-ca): none or another CA\'s is refused, ours is accepted', async () => {
    strict.writeConfig({
      client_tls: { sslmode: 'verify-ca', cert_file: sgCert.cert, key_file: sgCert.key, ca_file: ca.ca },
      databases: { full: { url: fx.pg.url('postgres'), pool_size: 2, server_tls: { sslmode: 'require' } } },
      pool: { client_login_timeout: '1s' },
      auth: { method: 'trust' },
      log: { level: 'info' },
    });
    const seen = strict.logs.length;
    strict.proc.kill('SIGHUP');
    await strict.waitForLog((l) => l.msg === 'configuration reloaded' && strict.logs.indexOf(l) >= seen);
    const base = `host=127.0.0.1 port=${strict.port} user=${SUPERUSER} dbname=full sslmode=verify-full sslrootcert=${ca.ca}`;
    const none = await runPsql(base, 'SELECT 1', { PGSSLCERT: join(live, 'none.crt'), PGSSLKEY: join(live, 'none.key') });
    assert.notEqual(none.code, 0);
    assert.match(none.err, /connection requires a valid client certificate|certificate required/);
    const wrong = await runPsql(`${base} sslcert=${rogueClient.cert} sslkey=${rogueClient.key}`, 'SELECT 1');
    assert.notEqual(wrong.code, 0);
    const good = await runPsql(`${base} sslcert=${clientCert.cert} sslkey=${clientCert.key}`, 'SELECT 41 + 1');
    assert.equal(good.code, 0, good.err);
    assert.equal(good.out.trim(), '42');
  });

  test('a token over plain TCP from a non-loopback address is refused; the hint names client_tls', async () => {
    writeFileSync(join(live, 'secret.txt'), 'tls-test-secret-0123456789abcdef0123\n');
    const auth = new ClientAuthenticator(parseAuthConfig({ method: 'oauth', issuer: 'https://issuer.test', audience: 'scopegate', secret: 'file:secret.txt', algorithms: ['HS256'] }, live), pino({ level: 'silent' }));
    const sent: Buffer[] = [];
    const peer = (tls: { version: string } | null) => ({
      address: '203.0.113.7', user: 'alice', database: DB, tls,
      send: (b: Buffer) => { sent.push(b); },
      readAuthMessage: () => Promise.resolve({ type: 0x70, body: Buffer.from('\0') }),
    });
    const err = await auth.authenticate(peer(null)).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof AuthError);
    assert.equal(err.check, 'transport not allowed');
    assert.equal(err.code, '28000');
    assert.match(String(err.hint), /client_tls/);
    assert.equal(sent.length, 0, 'no password request went out over plain TCP');
    // Over TLS the same address is asked for its token (and an empty one is refused for that).
    const overTls = await auth.authenticate(peer({ version: 'TLSv1.3' })).then(() => null, (e: unknown) => e);
    assert.ok(overTls instanceof AuthError);
    assert.equal(overTls.check, 'token required');
    assert.equal(sent.length, 1);
  });
});
