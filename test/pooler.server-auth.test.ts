import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPostgres } from './harness/postgres.js';
import { startScopegate } from './harness/scopegate.js';

// scopegate logs in to the server as the configured role with whatever the server asks for.
describe('server login methods', () => {
  for (const method of ['md5', 'password'] as const) {
    it(`logs in when the server asks for ${method === 'password' ? 'a cleartext password' : 'md5'}`, async () => {
      const db = await startPostgres({ authMethod: method });
      try {
        await db.sql(`SET password_encryption = '${method === 'md5' ? 'md5' : 'scram-sha-256'}'; CREATE ROLE sg_login LOGIN PASSWORD 'pw-${method}'`);
        const sg = await startScopegate({ databases: { app: { url: db.url('postgres', 'sg_login', `pw-${method}`) } }, log: { level: 'info' } });
        try {
          const c = new pg.Client({ host: '127.0.0.1', port: sg.port, user: 'u', database: 'app' });
          await c.connect();
          try {
            assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, 'sg_login');
          } finally {
            await c.end();
          }
        } finally {
          await sg.stop();
        }
        // A wrong password is the server's refusal, passed on to the client at once.
        const bad = await startScopegate({ databases: { app: { url: db.url('postgres', 'sg_login', 'wrong') } }, log: { level: 'info' } });
        try {
          const c = new pg.Client({ host: '127.0.0.1', port: bad.port, user: 'u', database: 'app' });
          await assert.rejects(c.connect(), (e: Error & { code?: string }) => e.code === '28P01' && /password authentication failed/.test(e.message));
        } finally {
          await bad.stop();
        }
      } finally {
        await db.stop();
      }
    });
  }
});
