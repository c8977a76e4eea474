/** Deployment artefacts: the Kubernetes manifests agree with the config and each other; the Dockerfile's steps build an image that serves. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { parse as parseYaml, parseAllDocuments, stringify } from 'yaml';
import { loadConfig, type Config } from '../src/config.js';
import { parseAuthConfig } from '../src/auth/config.js';
import { PolicyStore } from '../src/policy/index.js';
import { makeCA, type TestCA } from './harness/certs.js';
import { makeKey, signWith, startJwksServer } from './harness/issuer.js';
import { freePort } from './harness/ports.js';
import { startPostgres, type TestPostgres } from './harness/postgres.js';
import { runProcess } from './harness/process.js';
import { waitFor } from './harness/rawclient.js';
import { listFiles, replayDockerfile, type Stage } from './harness/dockerfile.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const K8S = join(ROOT, 'deploy', 'kubernetes');
const DOCS = readFileSync(join(ROOT, 'docs', 'deployment.md'), 'utf8');

// The parts of the Kubernetes objects this test reads.
interface Meta { name: string; labels?: Record<string, string> }
interface Port { name: string; containerPort: number; protocol?: string }
interface Probe { httpGet: { path: string; port: string | number } }
interface KeyToPath { key: string; path: string; mode?: number }
interface Container {
  name: string; image: string; args?: string[]; command?: string[];
  ports: Port[];
  env?: Array<{ name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }>;
  livenessProbe: Probe; readinessProbe: Probe; startupProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  securityContext: { allowPrivilegeEscalation: boolean; readOnlyRootFilesystem: boolean; runAsNonRoot: boolean; runAsUser: number; runAsGroup: number; capabilities: { drop: string[] }; seccompProfile: { type: string } };
  volumeMounts: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}
interface Volume {
  name: string;
  emptyDir?: Record<string, unknown>;
  projected?: { sources: Array<{ configMap?: { name: string; items: KeyToPath[] }; secret?: { name: string; items: KeyToPath[] } }>; defaultMode?: number };
}
interface Deployment {
  kind: 'Deployment'; metadata: Meta;
  spec: {
    replicas: number; selector: { matchLabels: Record<string, string> };
    template: { metadata: Meta & { labels: Record<string, string> }; spec: {
      automountServiceAccountToken: boolean; terminationGracePeriodSeconds: number;
      securityContext: { runAsNonRoot: boolean; runAsUser: number; runAsGroup: number; fsGroup: number; seccompProfile: { type: string } };
      containers: Container[]; volumes: Volume[];
    } };
  };
}
interface Service { kind: 'Service'; metadata: Meta; spec: { selector: Record<string, string>; ports: Array<{ name: string; port: number; targetPort: string | number }> } }
interface ConfigMap { kind: 'ConfigMap'; metadata: Meta; data: Record<string, string> }
interface Pdb { kind: 'PodDisruptionBudget'; metadata: Meta; spec: { maxUnavailable: number; selector: { matchLabels: Record<string, string> } } }
type K8sObject = Deployment | Service | ConfigMap | Pdb;

/** Every object of every file kustomization.yaml lists (each file may hold several documents). */
function manifests(): { files: string[]; objects: K8sObject[] } {
  const kust = parseYaml(readFileSync(join(K8S, 'kustomization.yaml'), 'utf8')) as { resources: string[] };
  const objects: K8sObject[] = [];
  for (const f of kust.resources) {
    for (const doc of parseAllDocuments(readFileSync(join(K8S, f), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${f} parses`);
      objects.push(doc.toJS() as K8sObject);
    }
  }
  return { files: kust.resources, objects };
}

const { files, objects } = manifests();
function one<K extends K8sObject['kind']>(kind: K): Extract<K8sObject, { kind: K }> {
  const found = objects.filter((o): o is Extract<K8sObject, { kind: K }> => o.kind === kind);
  assert.equal(found.length, 1, `exactly one ${kind}`);
  return found[0]!;
}
const deployment = one('Deployment');
const service = one('Service');
const configMap = one('ConfigMap');
const pdb = one('PodDisruptionBudget');
const pod = deployment.spec.template.spec;
const container = pod.containers[0]!;
const configMount = container.volumeMounts.find((m) => m.name === 'config')!;
const configVolume = pod.volumes.find((v) => v.name === 'config')!;
const configArg = container.args![container.args!.indexOf('--config') + 1]!;

/** Secret name -> keys, from the `kubectl create secret` commands docs/deployment.md tells users to run. */
function documentedSecrets(): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const m of DOCS.matchAll(/kubectl create secret (tls|generic) (\S+)((?: \\\n?|[^\n])*)/g)) {
    const keys = new Set<string>(m[1] === 'tls' ? ['tls.crt', 'tls.key'] : []);
    for (const k of m[3]!.matchAll(/--from-(?:literal|file)=([\w.-]+)=/g)) keys.add(k[1]!);
    out.set(m[2]!, keys);
  }
  return out;
}

/** The image path a mounted file sits at -> where it comes from in the projected config volume. */
function projectedFiles(): Map<string, { kind: 'configMap' | 'secret'; name: string; key: string; mode: number | undefined }> {
  const out = new Map<string, { kind: 'configMap' | 'secret'; name: string; key: string; mode: number | undefined }>();
  for (const src of configVolume.projected!.sources) {
    const kind = src.configMap ? 'configMap' : 'secret';
    const s = (src.configMap ?? src.secret)!;
    for (const it of s.items) out.set(posix.join(configMount.mountPath, it.path), { kind, name: s.name, key: it.key, mode: it.mode ?? configVolume.projected!.defaultMode });
  }
  return out;
}

/** The `env:NAME` references anywhere in a parsed config document. */
function envRefs(v: unknown, out: Set<string> = new Set()): Set<string> {
  if (typeof v === 'string' && v.startsWith('env:')) out.add(v.slice(4));
  else if (Array.isArray(v)) for (const x of v) envRefs(x, out);
  else if (typeof v === 'object' && v !== null) for (const x of Object.values(v)) envRefs(x, out);
  return out;
}

let ca: TestCA;
let secretValues: Map<string, Map<string, string>>;
const APP_PASSWORD = 'authenticator-deploy-pw';

/** Lays out the projected volume as the kubelet would (fsGroup 1000, the items' modes) with test secrets; returns the directory. */
function materialiseConfigVolume(into: string, rewriteConfig: (doc: Record<string, unknown>) => void): string {
  const dir = join(into, 'etc-scopegate');
  for (const [path, src] of projectedFiles()) {
    const file = join(dir, posix.relative(configMount.mountPath, path));
    mkdirSync(dirname(file), { recursive: true });
    chmodSync(dirname(file), 0o755);
    let text = src.kind === 'configMap' ? configMap.data[src.key] : secretValues.get(src.name)?.get(src.key);
    assert.ok(text !== undefined, `${src.kind} ${src.name} has key ${src.key}`);
    if (path === configArg) {
      const doc = parseYaml(text.replaceAll(configMount.mountPath, dir)) as Record<string, unknown>;
      rewriteConfig(doc);
      text = stringify(doc);
    }
    writeFileSync(file, text);
    if (process.getuid?.() === 0) chownSync(file, 0, pod.securityContext.fsGroup);
    chmodSync(file, src.mode ?? 0o644);
  }
  return dir;
}

before(() => {
  ca = makeCA('scopegate deploy test CA');
  const server = ca.issue('server', { cn: 'scopegate', sans: 'IP:127.0.0.1,DNS:localhost', usage: 'serverAuth', serial: 4242 });
  secretValues = new Map([
    ['scopegate-tls', new Map([['tls.crt', readFileSync(server.cert, 'utf8')], ['tls.key', readFileSync(server.key, 'utf8')]])],
    ['scopegate-db', new Map([['app-password', APP_PASSWORD]])],
  ]);
});
after(() => ca?.remove());

test('kustomization lists every manifest in deploy/kubernetes, and each parses', () => {
  const onDisk = readdirSync(K8S).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
  assert.deepEqual([...files].sort(), onDisk);
  assert.deepEqual(objects.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Service']);
});

test("the ConfigMap's config loads through scopegate's own loaders and listens where the pod exposes", () => {
  const dir = mkdtempSync(join(tmpdir(), 'scopegate-deploy-cfg-'));
  const env = container.env!.map((e) => e.name);
  try {
    for (const n of env) process.env[n] = 'from-a-secret';
    const etc = materialiseConfigVolume(dir, () => {});
    const cfg: Config = loadConfig(join(etc, posix.relative(configMount.mountPath, configArg)));
    assert.deepEqual(cfg.listen, { host: '0.0.0.0', port: 6432 });
    assert.deepEqual(cfg.admin?.listen_http, { host: '0.0.0.0', port: 9187 });
    assert.equal(cfg.client_tls.sslmode, 'require', 'tokens travel as passwords: TLS required');
    assert.ok(cfg.client_tls.options !== null, 'the certificate from the Secret loaded');
    assert.equal(cfg.databases.get('app')?.password, 'from-a-secret', 'the server password comes from the environment');
    const auth = parseAuthConfig(cfg.auth, etc);
    assert.equal(auth.method, 'oauth');
    assert.ok(cfg.policy !== null);
    assert.ok(PolicyStore.load(cfg.policy).policy.scopes.length > 0, 'the policy loads');
    // Readiness waits for every pool to reach its server once: without a warm connection a
    // pod would never become ready, so no client would ever be routed to it.
    for (const db of cfg.databases.values()) assert.ok(db.min_pool_size >= 1, `databases.${db.name}.min_pool_size >= 1`);
    // SIGTERM drains for up to pool.shutdown_timeout after the preStop sleep; both must fit in the grace period.
    const sleep = Number(container.lifecycle!.preStop!.exec!.command[1]);
    assert.equal(container.lifecycle!.preStop!.exec!.command[0], 'sleep');
    assert.ok(sleep + cfg.pool.shutdown_timeout / 1000 < pod.terminationGracePeriodSeconds,
      `preStop ${sleep}s + shutdown_timeout ${cfg.pool.shutdown_timeout / 1000}s < terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds}`);
  } finally {
    for (const n of env) delete process.env[n];
    rmSync(dir, { recursive: true, force: true });
  }
});

test('container ports, Service ports, probes and the Dockerfile agree with the config', () => {
  const cfg = parseYaml(configMap.data['scopegate.yaml']!) as { listen: { port: number }; admin: { listen_http: string } };
  const adminPort = Number(cfg.admin.listen_http.split(':').pop());
  const ports = new Map(container.ports.map((p) => [p.name, p.containerPort]));
  assert.deepEqual(Object.fromEntries(ports), { postgres: cfg.listen.port, admin: adminPort });
  // The Service forwards by port name to the same numbers.
  for (const sp of service.spec.ports) {
    assert.ok(typeof sp.targetPort === 'string' && ports.has(sp.targetPort), `Service port ${sp.name} targets a named container port`);
    assert.equal(sp.port, ports.get(sp.targetPort as string));
  }
  assert.deepEqual(service.spec.ports.map((p) => p.name).sort(), [...ports.keys()].sort());
  // Probes go to the admin port, on paths the admin HTTP listener serves.
  const http = readFileSync(join(ROOT, 'src', 'admin', 'http.ts'), 'utf8');
  const routes = new Set([...http.matchAll(/path [!=]== '(\/\w+)'/g)].map((m) => m[1]!));
  for (const [what, p] of [['liveness', container.livenessProbe], ['readiness', container.readinessProbe], ['startup', container.startupProbe!]] as const) {
    assert.equal(p.httpGet.port, 'admin', `${what} probe on the admin port`);
    assert.ok(routes.has(p.httpGet.path), `${what} path ${p.httpGet.path} is served by src/admin/http.ts`);
  }
  assert.equal(container.livenessProbe.httpGet.path, '/healthz');
  assert.equal(container.readinessProbe.httpGet.path, '/readyz');
  const annotations = (deployment.spec.template.metadata as { annotations?: Record<string, string> }).annotations ?? {};
  assert.equal(Number(annotations['prometheus.io/port']), adminPort);
  assert.ok(routes.has(annotations['prometheus.io/path']!));
  // The Dockerfile exposes the same ports and health-checks the same path on the admin port.
  const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const expose = [...dockerfile.matchAll(/^EXPOSE (.+)$/gm)].flatMap((m) => m[1]!.split(/\s+/).map(Number));
  assert.deepEqual(expose.sort(), [...ports.values()].sort());
  assert.match(dockerfile, new RegExp(`HEALTHCHECK[^\\n]*\\\\\\n[^\\n]*http://127\\.0\\.0\\.1:${adminPort}/healthz`));
  // The Deployment's args are the image's CMD: the config the image expects is the one mounted.
  const cmd = JSON.parse(/^CMD (.+)$/m.exec(dockerfile)![1]!) as string[];
  assert.deepEqual(container.args, cmd);
});

test('mounted paths: every file the config names is in the projected volume, from a key that exists', () => {
  const files = projectedFiles();
  const cfg = parseYaml(configMap.data['scopegate.yaml']!) as { policy: string; client_tls: { cert_file: string; key_file: string } };
  for (const path of [configArg, cfg.policy, cfg.client_tls.cert_file, cfg.client_tls.key_file]) {
    assert.ok(files.has(path), `${path} is a file of the config volume (mounted at ${configMount.mountPath})`);
  }
  assert.ok(container.volumeMounts.every((m) => m.name !== 'config' || m.readOnly === true), 'config mounted read-only');
  const secrets = documentedSecrets();
  for (const [path, src] of files) {
    if (src.kind === 'configMap') {
      assert.equal(src.name, configMap.metadata.name);
      assert.ok(configMap.data[src.key] !== undefined, `${path}: ConfigMap key ${src.key}`);
    } else {
      assert.ok(secrets.get(src.name)?.has(src.key), `${path}: Secret ${src.name} key ${src.key} is in docs/deployment.md's kubectl create secret`);
      // fsGroup owns the Secret's files; a group-readable mode is what lets uid 1000 read the key.
      assert.equal((src.mode ?? 0) & 0o047, 0o040, `${path}: group-readable, not world-readable`);
    }
  }
});

test('secrets: every env: in the config is a container env var from a documented Secret key, and nothing else is', () => {
  const refs = envRefs(parseYaml(configMap.data['scopegate.yaml']!));
  const env = container.env ?? [];
  assert.deepEqual(env.map((e) => e.name).sort(), [...refs].sort());
  const secrets = documentedSecrets();
  for (const e of env) {
    const ref = e.valueFrom?.secretKeyRef;
    assert.ok(ref !== undefined && e.value === undefined, `${e.name} comes from a Secret, not a literal`);
    assert.ok(secrets.get(ref.name)?.has(ref.key), `Secret ${ref.name} key ${ref.key} is in docs/deployment.md`);
  }
});

test('selectors: the Deployment, Service and PodDisruptionBudget select the same pods', () => {
  const labels = deployment.spec.template.metadata.labels;
  const matches = (sel: Record<string, string>): boolean => Object.entries(sel).every(([k, v]) => labels[k] === v);
  assert.ok(matches(deployment.spec.selector.matchLabels));
  assert.ok(Object.keys(service.spec.selector).length > 0 && matches(service.spec.selector));
  assert.deepEqual(pdb.spec.selector.matchLabels, deployment.spec.selector.matchLabels);
  assert.equal(deployment.spec.replicas, 2);
  assert.equal(pdb.spec.maxUnavailable, 1);
  assert.ok(pdb.spec.maxUnavailable < deployment.spec.replicas, 'a drain always leaves a pod serving');
});

test('the pod runs unprivileged: non-root uid 1000 (the image USER), read-only root, /tmp an emptyDir, no capabilities, no API token', () => {
  const sc = container.securityContext;
  assert.equal(pod.automountServiceAccountToken, false);
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
  assert.deepEqual([sc.runAsNonRoot, sc.runAsUser, sc.runAsGroup, sc.readOnlyRootFilesystem, sc.allowPrivilegeEscalation], [true, 1000, 1000, true, false]);
  assert.deepEqual(sc.capabilities.drop, ['ALL']);
  assert.equal(sc.seccompProfile.type, 'RuntimeDefault');
  const tmp = container.volumeMounts.find((m) => m.mountPath === '/tmp');
  assert.ok(tmp !== undefined && pod.volumes.find((v) => v.name === tmp.name)?.emptyDir !== undefined, '/tmp is an emptyDir');
  const user = /^USER (\d+):(\d+)$/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
  assert.deepEqual([Number(user?.[1]), Number(user?.[2])], [sc.runAsUser, sc.runAsGroup]);
});

function get(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject).end();
  });
}

test('the Dockerfile, replayed here: builds offline, holds no test or bench file, and the image serves TLS clients against PostgreSQL', async () => {
  const work = mkdtempSync(join(tmpdir(), 'scopegate-image-'));
  chmodSync(work, 0o755);
  let pgsrv: TestPostgres | null = null;
  let jwks: Awaited<ReturnType<typeof startJwksServer>> | null = null;
  let proc: ChildProcess | null = null;
  try {
    // npm ci from the lock file and the local npm cache: no network here (nor needed in a build
    // with a registry mirror). Without the cache, npm ci fails with ENOTCACHED and so does this test.
    const stages: Stage[] = await replayDockerfile(join(ROOT, 'Dockerfile'), ROOT, work, {
      PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root',
      npm_config_offline: 'true', npm_config_update_notifier: 'false',
    });
    assert.equal(stages.length, 2, 'multi-stage: build, then runtime');
    const image = stages[1]!;
    assert.equal(stages[0]!.from, image.from, 'the runtime has the Node.js the build compiled for');
    assert.ok(image.runs.length === 0, 'the runtime stage runs nothing: it only copies from the build');
    const app = join(image.root, image.workdir);
    const inImage = listFiles(app);
    assert.deepEqual([...new Set(inImage.map((f) => f.split('/')[0]))].sort(), ['bin', 'dist', 'node_modules', 'package.json']);
    const ours = inImage.filter((f) => !f.startsWith('node_modules/'));
    assert.deepEqual(ours.filter((f) => /(^|\/)(test|bench)(\/|$)|\.test\.js/.test(f)), [], 'no test or bench file in the image');
    assert.ok(ours.includes('dist/src/cli.js') && ours.includes('dist/src/policy/decision-worker.js'));
    // Production dependencies only: the dev ones are pruned.
    for (const dev of ['typescript', 'fast-check', 'oidc-provider', '@types/node']) assert.ok(!existsSync(join(app, 'node_modules', dev)), `${dev} not in the image`);
    assert.ok(existsSync(join(app, 'node_modules', 'libpg-query')));

    // A real PostgreSQL with the roles the ConfigMap's policy names.
    pgsrv = await startPostgres();
    await pgsrv.sql('CREATE DATABASE app');
    await pgsrv.sql(`CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD '${APP_PASSWORD}';
      CREATE ROLE app_reader NOLOGIN; GRANT app_reader TO authenticator;
      CREATE TABLE orders (id int primary key, total numeric); INSERT INTO orders VALUES (1, 9.5), (2, 20);
      CREATE TABLE secrets (v text); GRANT SELECT ON orders TO app_reader; GRANT SELECT ON secrets TO app_reader;`, 'app');
    const key = await makeKey('RS256');
    jwks = await startJwksServer([key.publicJwk]);
    const pooler = await freePort();
    const admin = await freePort();
    const jwksAt = jwks;
    const pgPort = pgsrv.port;
    // Only what differs between a pod and this machine changes: paths, ports, where Postgres and the issuer are.
    const etc = materialiseConfigVolume(work, (doc) => {
      (doc.listen as { port: number }).port = pooler;
      (doc.admin as { listen_http: string }).listen_http = `127.0.0.1:${admin}`;
      (doc.listen as { host: string }).host = '127.0.0.1';
      const db = (doc.databases as Record<string, { url: string }>).app!;
      db.url = `postgres://authenticator@127.0.0.1:${pgPort}/app`;
      Object.assign(doc.auth as object, { issuer: jwksAt.issuer, jwks_url: jwksAt.jwksUrl });
    });
    // The container's command and environment, as the kubelet would assemble them.
    const argv = [...image.entrypoint, ...container.args!].map((a) => a.replace(configMount.mountPath, etc));
    assert.equal(argv[0], 'node');
    const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...image.env };
    for (const e of container.env!) env[e.name] = secretValues.get(e.valueFrom!.secretKeyRef!.name)!.get(e.valueFrom!.secretKeyRef!.key)!;
    const [uid, gid] = image.user!.split(':').map(Number) as [number, number];
    const asUser = process.getuid?.() === 0 ? { uid, gid } : {};
    const out: string[] = [];
    proc = spawn(process.execPath, argv.slice(1), { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'], ...asUser });
    proc.stdout!.on('data', (d: Buffer) => out.push(d.toString()));
    proc.stderr!.on('data', (d: Buffer) => out.push(d.toString()));
    const exited = new Promise<number | null>((resolve) => proc!.on('exit', (code) => resolve(code)));

    await waitFor(async () => (await get(admin, container.livenessProbe.httpGet.path).catch(() => 0)) === 200, `liveness 200; output: ${out.join('').slice(-2000)}`, 30_000);
    // The image's HEALTHCHECK command itself, run in the image's working directory.
    const hc = image.healthcheck!.cmd.map((a) => a.replace('127.0.0.1:9187', `127.0.0.1:${admin}`));
    assert.equal(hc[0], 'node');
    assert.equal((await runProcess(process.execPath, hc.slice(1))).code, 0, 'HEALTHCHECK passes');
    // Ready with no client: the warm server connection reached Postgres.
    await waitFor(async () => (await get(admin, container.readinessProbe.httpGet.path)) === 200, 'readiness 200', 30_000);

    // A client with a token over TLS, as in the cluster; the statement runs as the scope's role.
    const token = await signWith(key, { iss: jwks.issuer, aud: 'scopegate', sub: 'alice', scope: 'orders:read', exp: Math.floor(Date.now() / 1000) + 300 });
    const client = new pg.Client({ host: '127.0.0.1', port: pooler, database: 'app', user: 'alice', password: token, ssl: { ca: ca.caPem, servername: 'localhost' } });
    await client.connect();
    try {
      const r = await client.query<{ u: string; n: string }>('SELECT current_user AS u, count(*)::text AS n FROM orders');
      assert.deepEqual(r.rows, [{ u: 'app_reader', n: '2' }]);
      await assert.rejects(client.query('SELECT * FROM secrets'), (e: Error & { code?: string }) => e.code === '42501', 'the ConfigMap policy is enforced');
    } finally {
      await client.end();
    }
    // sslmode require: the token is never accepted in plain text.
    const plain = new pg.Client({ host: '127.0.0.1', port: pooler, database: 'app', user: 'alice', password: token, ssl: false });
    await assert.rejects(plain.connect());
    await plain.end().catch(() => {});

    // SIGTERM (what the kubelet sends after preStop): a clean exit, after which the health check fails.
    proc.kill('SIGTERM');
    assert.equal(await exited, 0, `exit 0 on SIGTERM; output: ${out.join('').slice(-2000)}`);
    proc = null;
    assert.match(out.join(''), /"why":"SIGTERM"/);
    assert.equal((await runProcess(process.execPath, hc.slice(1))).code, 1, 'HEALTHCHECK fails once scopegate is gone');
  } finally {
    if (proc !== null && proc.exitCode === null) proc.kill('SIGKILL');
    await jwks?.stop();
    await pgsrv?.stop();
    rmSync(work, { recursive: true, force: true });
  }
});
