/** The client_tls and server_tls sections: defaults, sslmodes, protocols, files, per-database override, one-line errors. */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { makeCA } from './harness/certs.js';

const ca = makeCA();
const a = ca.issue('a', { cn: 'a', sans: 'IP:127.0.0.1', usage: 'serverAuth', serial: 11 });
const b = ca.issue('b', { cn: 'b', sans: 'IP:127.0.0.1', usage: 'serverAuth', serial: 12 });
const file = join(ca.dir, 'scopegate.yaml');
const DBS = { app: { url: 'postgres://u:p@127.0.0.1:5432/app' } };

function cfg(doc: Record<string, unknown>) {
  return parseConfig({ databases: DBS, ...doc }, file);
}

function configError(doc: Record<string, unknown>, key: string, problem: RegExp): void {
  assert.throws(() => cfg(doc), (err: unknown) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.key, key);
    assert.match(err.message, problem);
    assert.doesNotMatch(err.message, /\n/);
    return true;
  });
}

describe('TLS config', () => {
  after(() => ca.remove());

  test('defaults: client_tls disable, server_tls prefer, TLS 1.2 and 1.3', () => {
    const c = cfg({});
    assert.equal(c.client_tls.sslmode, 'disable');
    assert.equal(c.client_tls.options, null);
    assert.equal(c.databases.get('app')!.server_tls.sslmode, 'prefer');
    assert.deepEqual(c.databases.get('app')!.server_tls.protocols, { min: 'TLSv1.2', max: 'TLSv1.3' });
  });

  test('client_tls with files (relative to the config file); sslmode defaults to prefer', () => {
    const c = cfg({ client_tls: { cert_file: 'a.crt', key_file: 'a.key' } });
    assert.equal(c.client_tls.sslmode, 'prefer');
    assert.equal(c.client_tls.requireClientCert, false);
    assert.equal(c.client_tls.files.cert, a.cert);
    const v = cfg({ client_tls: { sslmode: 'verify-full', cert_file: a.cert, key_file: a.key, ca_file: 'ca.crt' } });
    assert.equal(v.client_tls.requireClientCert, true);
  });

  test('protocols: secure, all, tlsv1.2, tlsv1.3; nothing below 1.2', () => {
    const p = (protocols: string) => cfg({ client_tls: { cert_file: a.cert, key_file: a.key, protocols } }).client_tls.protocols;
    assert.deepEqual(p('secure'), { min: 'TLSv1.2', max: 'TLSv1.3' });
    assert.deepEqual(p('all'), { min: 'TLSv1.2', max: 'TLSv1.3' });
    assert.deepEqual(p('tlsv1.2'), { min: 'TLSv1.2', max: 'TLSv1.2' });
    assert.deepEqual(p('tlsv1.3'), { min: 'TLSv1.3', max: 'TLSv1.3' });
    configError({ client_tls: { cert_file: a.cert, key_file: a.key, protocols: 'tlsv1.1' } }, 'client_tls.protocols', /below 1\.2/);
    configError({ client_tls: { cert_file: a.cert, key_file: a.key, protocols: 'legacy' } }, 'client_tls.protocols', /below 1\.2/);
    configError({ server_tls: { protocols: 'sslv3' } }, 'server_tls.protocols', /expected secure/);
  });

  test('errors name the key: sslmode, missing or unreadable files, a key of another certificate, unknown keys', () => {
    configError({ client_tls: { sslmode: 'on' } }, 'client_tls.sslmode', /expected one of disable, allow, prefer, require, verify-ca, verify-full/);
    configError({ client_tls: { sslmode: 'require', key_file: a.key } }, 'client_tls.cert_file', /missing/);
    configError({ client_tls: { sslmode: 'require', cert_file: a.cert } }, 'client_tls.key_file', /missing/);
    configError({ client_tls: { sslmode: 'verify-ca', cert_file: a.cert, key_file: a.key } }, 'client_tls.ca_file', /missing/);
    configError({ client_tls: { cert_file: 'nope.crt', key_file: a.key } }, 'client_tls.cert_file', /cannot read/);
    configError({ client_tls: { cert_file: a.cert, key_file: b.key } }, 'client_tls', /cannot use/);
    writeFileSync(join(ca.dir, 'junk.pem'), 'junk\n');
    configError({ client_tls: { cert_file: 'junk.pem', key_file: a.key } }, 'client_tls', /cannot use/);
    configError({ client_tls: { cert_file: a.cert, key_file: a.key, ciphers: 'x' } }, 'client_tls.ciphers', /unknown key/);
    configError({ server_tls: { sslmode: 'verify-full', ca_file: 'nope.crt' } }, 'server_tls.ca_file', /cannot read/);
    configError({ databases: { app: { url: DBS.app.url, server_tls: { sslmode: 'always' } } } }, 'databases.app.server_tls.sslmode', /expected one of/);
  });

  test('server_tls: global, and a database overrides it field by field', () => {
    const c = parseConfig({
      server_tls: { sslmode: 'verify-full', ca_file: 'ca.crt' },
      databases: { app: DBS.app, other: { url: DBS.app.url, server_tls: { sslmode: 'disable' } }, third: { url: DBS.app.url, server_tls: { protocols: 'tlsv1.3' } } },
    }, file);
    const app = c.databases.get('app')!.server_tls;
    assert.equal(app.sslmode, 'verify-full');
    assert.deepEqual(app.ca, ca.caPem);
    assert.equal(c.databases.get('other')!.server_tls.sslmode, 'disable');
    const third = c.databases.get('third')!.server_tls;
    assert.equal(third.sslmode, 'verify-full');
    assert.deepEqual(third.ca, ca.caPem);
    assert.deepEqual(third.protocols, { min: 'TLSv1.3', max: 'TLSv1.3' });
  });

  test('server_login: role pools inherit the database server_tls', () => {
    const c = parseConfig({
      databases: { app: { url: DBS.app.url, server_tls: { sslmode: 'require' }, server_login: 'role', roles: { app_reader: { password: 'x' } } } },
    }, file);
    assert.equal(c.databases.get('app')!.roles.get('app_reader')!.server_tls.sslmode, 'require');
  });
});
