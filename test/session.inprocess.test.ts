// Concern: the pooler runs in-process (importing a module has no side effects), so pool and session logic can be driven from a test.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { parseConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { initParser } from '../src/policy/index.js';
import { buildGate } from '../src/server/run.js';
import { Scopegate } from '../src/server/listener.js';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { fe, firstError, RawClient } from './harness/rawclient.js';

let db: TestPostgres;
let sg: Scopegate;
let port: number;

before(async () => {
  db = await startPostgres();
  await initParser();
  const config = parseConfig({
    listen: { host: '127.0.0.1', port: 0 },
    databases: { app: { url: db.url('postgres'), pool_size: 1 } },
    pool: { mode: 'transaction' },
    auth: { method: 'trust' },
    log: { level: 'silent', audit: 'off' },
  }, null);
  const log = createLogger('silent');
  sg = new Scopegate(config, log, buildGate(config, log, process.cwd(), null));
  port = await sg.listen();
});

after(async () => {
  await sg?.shutdown();
  await db?.stop();
});

describe('scopegate in-process', () => {
  it('serves clients in this process and carries one client\'s SET only to that client', async () => {
    const a = new pg.Client({ host: '127.0.0.1', port, user: 'a', database: 'app' });
    const b = new pg.Client({ host: '127.0.0.1', port, user: 'b', database: 'app' });
    await a.connect();
    await b.connect();
    try {
      await a.query("SET statement_timeout = '4242ms'");
      const pa = (await a.query('SELECT pg_backend_pid() AS p')).rows[0].p as number;
      const rb = (await b.query("SELECT pg_backend_pid() AS p, current_setting('statement_timeout') AS st")).rows[0];
      assert.equal(rb.p, pa, 'pool_size 1: one server connection');
      assert.notEqual(rb.st, '4242ms');
      assert.equal((await a.query('SHOW statement_timeout')).rows[0].statement_timeout, '4242ms');
      assert.equal(sg.pools.get('app')!.db.pool_size, 1);
    } finally {
      await a.end();
      await b.end();
    }
  });

  it('a queued extended batch that starts with DISCARD ALL runs each statement once, in order', async () => {
    await db.sql('CREATE TABLE IF NOT EXISTS inproc_once (v text)');
    const holder = new pg.Client({ host: '127.0.0.1', port, user: 'h', database: 'app' });
    await holder.connect();
    const raw = await RawClient.connect(port);
    try {
      await raw.startup({ user: 'r', database: 'app' });
      // The only server connection is held, so the whole batch waits in the client's queue.
      await holder.query('BEGIN');
      await holder.query('SELECT 1');
      raw.write(Buffer.concat([
        fe.parse('DISCARD ALL'), fe.bind(), fe.execute(),
        fe.parse("INSERT INTO inproc_once VALUES ('once') RETURNING v"), fe.bind(), fe.execute(),
        fe.sync(),
      ]));
      await holder.query('COMMIT');
      const msgs = await raw.readUntilReady();
      assert.equal(firstError(msgs), undefined);
      const tags = msgs.filter((m) => m.type === 'C').map((m) => m.body.toString('utf8', 0, m.body.length - 1));
      assert.deepEqual(tags, ['DISCARD ALL', 'INSERT 0 1']);
      assert.equal((await db.sql("SELECT count(*)::int AS n FROM inproc_once WHERE v = 'once'")).rows[0].n, 1);
    } finally {
      raw.close();
      await holder.end();
    }
  });
});
