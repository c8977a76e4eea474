/**
 * Test certificates made at test time with the openssl CLI: a CA, server and client
 * certificates signed by it, each with a serial of its own (tests tell them apart by it).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export interface Issued {
  cert: string;
  key: string;
  /** Hex serial as X509Certificate reports it. */
  serial: string;
  /** SHA-256 fingerprint as X509Certificate and getPeerCertificate report it. */
  fingerprint256: string;
}

export interface TestCA {
  dir: string;
  /** The CA certificate's path. */
  ca: string;
  caPem: Buffer;
  /** A certificate signed by this CA: `sans` like 'IP:127.0.0.1,DNS:localhost'; `usage` serverAuth or clientAuth. */
  issue(name: string, opts: { cn: string; sans?: string; usage: 'serverAuth' | 'clientAuth'; serial: number }): Issued;
  remove(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Makes a CA (EC P-256, valid two days) in a temp directory of its own. */
export function makeCA(cn = 'scopegate test CA'): TestCA {
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-tls-'));
  chmodSync(dir, 0o755);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt',
    '-days', '2', '-subj', `/CN=${cn}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  const ca = join(dir, 'ca.crt');
  return {
    dir,
    ca,
    caPem: readFileSync(ca),
    issue(name, opts) {
      const ext = join(dir, `${name}.ext`);
      writeFileSync(ext, [
        'basicConstraints=CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        `extendedKeyUsage=${opts.usage}`,
        ...(opts.sans ? [`subjectAltName=${opts.sans}`] : []),
      ].join('\n') + '\n');
      openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${opts.cn}`], dir);
      openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', String(opts.serial), '-days', '2', '-out', `${name}.crt`, '-extfile', ext], dir);
      const cert = join(dir, `${name}.crt`);
      const key = join(dir, `${name}.key`);
      chmodSync(key, 0o600);
      const x = new X509Certificate(readFileSync(cert));
      return { cert, key, serial: x.serialNumber, fingerprint256: x.fingerprint256 };
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** PostgreSQL wants its key owned by the user it runs as (as root, the tests run it as `postgres`). */
export function giveKeyToPostgres(key: string): void {
  if (userInfo().uid !== 0) return;
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  chownSync(key, uid, gid);
}
