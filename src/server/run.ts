/** Starting a scopegate from its config file: the gate, the listener, policy reload, signals. */
import { loadConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import { isLoopback, parseAuthConfig } from '../auth/index.js';
import { ClientAuthenticator } from '../auth/exchange.js';
import type { Config, DatabaseConfig } from '../config.js';
import { SessionGate } from '../policy/gate.js';
import { DecisionThreads } from '../policy/decision-threads.js';
import { SessionStateTracker } from '../policy/session-effects.js';
import { initParser, PolicyStore } from '../policy/index.js';
import { checkLoginRole } from '../backend/login-role-checks.js';
import { DatabaseCatalog } from '../policy/catalog.js';
import { openAuditLog, type AuditLog } from '../log.js';
import { readFileSync, watchFile } from 'node:fs';
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { dirname, resolve } from 'node:path';
import { createLogger } from '../log.js';
import { Scopegate } from './listener.js';
import { AdminHttp } from '../admin/http.js';
import { PolicyFeed } from '../policy/source.js';
import type { RevocationList } from '../policy/revocations.js';
import cluster from 'node:cluster';
import { createMetrics } from '../admin/metrics.js';
import { clientIdsForWorker } from '../session/client-session.js';
import { shareConfig } from './worker-share.js';
import { WorkerLink, workerPlace } from './worker-link.js';
import { WorkerPrimary } from './workers.js';


/** Builds authentication and statement checks from the config. */
export function buildGate(config: Config, log: Logger, anchor: string, policy: PolicyStore | null, revocations: RevocationList | null = null, audit: AuditLog | null = null): SessionGate {
  const auth = parseAuthConfig(config.auth, dirname(resolve(anchor)));
  if (auth.method === 'trust' && !isLoopback(config.listen.host)) {
    throw new ConfigError('auth.method', 'trust is only allowed when listen.host is a loopback address');
  }
  if (auth.method === 'trust') log.warn('auth.method is trust: any client on loopback may connect without a token');
  const threads = config.pool.parser_threads === 0 ? null : new DecisionThreads(config.pool.parser_threads, config.pool.parser_thread_min_size, policy, log, config.pool.parser_thread_timeout);
  return new SessionGate({
    log,
    threads,
    auth: auth.method === 'oauth' ? new ClientAuthenticator(auth, log) : null,
    clockToleranceMs: auth.clockToleranceMs,
    sessionState: new SessionStateTracker(),
    policy,
    // Routed entries read a catalog per route (src/pool/routes.ts).
    catalog: policy === null ? null : firstPlain(config) === undefined ? null : new DatabaseCatalog(firstPlain(config)!, log),
    // The console's commands are audited too, with or without a policy.
    audit: (policy === null && config.admin === null) || config.log.audit === 'off' ? null : audit ?? openAuditLog(config.log.audit),
    auditSample: config.log.audit_sample,
    revocations,
  });
}

function firstPlain(config: Config): DatabaseConfig | undefined {
  for (const db of config.databases.values()) if (!db.routing) return db;
  return undefined;
}

/** What a file holds now, to tell a repeated failure from a new one ('' when unreadable). */
function fileDigest(file: string | null): string {
  if (file === null) return '';
  try { return createHash('sha256').update(readFileSync(file)).digest('hex'); } catch { return ''; }
}

export async function runServer(configFile: string, anchor: string = configFile): Promise<void> {
  let config: Config;
  try {
    config = loadConfig(configFile, anchor);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`scopegate: invalid config ${configFile}: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  // workers: N (src/server/workers.ts): the primary only forks and routes; each worker runs all below.
  const place = cluster.isPrimary ? null : workerPlace();
  if (cluster.isPrimary && config.workers > 1) {
    await new WorkerPrimary(config, createLogger(config.log.level).child({ role: 'primary' })).start(configFile, anchor);
    return;
  }
  const share = (c: Config): Config => place === null ? c : shareConfig(c, place.index, place.count);
  config = share(config);
  if (place !== null) clientIdsForWorker(place.index, place.count);
  const log = place === null ? createLogger(config.log.level) : createLogger(config.log.level).child({ worker: place.index });
  await initParser();
  let gate: SessionGate;
  let policy: PolicyStore | null;
  // policy_source: the instance refuses to start without a valid policy from it.
  let feed: PolicyFeed | null = null;
  if (config.policy_source !== null) {
    try {
      feed = await PolicyFeed.start(config.policy_source, log);
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`scopegate: policy source: ${err.message}\n`);
        process.exit(2);
      }
      throw err;
    }
  }
  let audit: AuditLog | null = null;
  try {
    policy = feed !== null ? feed.store : config.policy === null ? null : PolicyStore.load(config.policy);
    // Opened here so a path it cannot write ends startup in one line naming log.audit.
    audit = openAuditLog(config.log.audit, (err) => log.error({ err: err.message, file: config.log.audit }, 'audit log write failed; lines are dropped until it succeeds'));
    gate = buildGate(config, log, anchor, policy, feed?.revocations ?? null, audit);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`scopegate: invalid config ${configFile}: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const server = new Scopegate(config, log, gate);
  // workers: N: set before anything can reach the worker (hooks filled in once reload and stop exist).
  const workerHooks = { reload: (_why: string): void => undefined, shutdown: (_why: string): void => process.exit(0) };
  if (place !== null) {
    const link = new WorkerLink(place.index, place.count, server, { reload: (why) => workerHooks.reload(why), shutdown: (why) => workerHooks.shutdown(why) });
    server.workerLink = link;
    // The primary serves /metrics from every worker's registry.
    if (config.admin?.listen_http) link.registry = createMetrics(server);
    process.on('uncaughtException', (err) => {
      log.fatal({ err: err.stack ?? err.message }, 'worker crashed; its clients are told (57P02) and the primary replaces it');
      try { server.crash(); } finally { setTimeout(() => process.exit(1), 100).unref(); }
    });
  }
  // Statements are judged against the catalog: read it before the first client, if the
  // server is up (otherwise statements are refused until a retry succeeds).
  if (policy !== null && !(await gate.loadCatalog())) log.warn('could not read the database catalog; statements are refused until it can be read');
  // Up before the client port: whoever sees "listening" can scrape too.
  let http: AdminHttp | null = null;
  if (config.admin?.listen_http && place === null) {
    http = new AdminHttp(server, config.admin.listen_http, log);
    try {
      await http.listen();
    } catch (err) {
      process.stderr.write(`scopegate: cannot listen on admin.listen_http ${config.admin.listen_http.host}:${config.admin.listen_http.port}: ${(err as Error).message}\n`);
      process.exit(2);
    }
  }
  try {
    await server.listen();
  } catch (err) {
    // A port in use or not allowed is the operator's to fix: one line, not a stack trace.
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'EADDRINUSE' ? 'address already in use' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EADDRNOTAVAIL' ? 'address not available' : null;
    if (why === null) throw err;
    process.stderr.write(`scopegate: cannot listen on ${config.listen.host}:${config.listen.port}: ${why} (listen in ${configFile})\n`);
    process.exit(1);
  }
  if (policy === null) {
    log.warn('no policy configured: scopegate runs as a plain pooler and checks no statements');
  } else {
    log.info({ policy: config.policy ?? config.policy_source?.url, version: policy.version }, 'policy loaded');
    const roles = [...new Set(policy.policy.scopes.map((s) => s.role))];
    for (const db of config.databases.values()) {
      for (const target of db.routing ? db.routing.routes.values() : [db]) void checkLoginRole(target, roles, log);
    }
  }
  // workers: N: the primary counts this worker as up once its startup lines are out.
  server.workerLink?.listening();
  let policyReloadFailures = 0;
  let lastPolicyFailure = '';
  const reloadPolicy = (why: string): void => {
    if (feed !== null) { void feed.refresh(why); return; }
    if (policy === null) return;
    const before = policy.version;
    // Taken before the read: a file replaced meanwhile fails with its own message, logged.
    const digest = fileDigest(policy.file);
    try {
      policy.reload();
      lastPolicyFailure = '';
      if (policy.version !== before) {
        log.info({ version: policy.version, previous: before, why }, 'policy reloaded');
        gate.refreshCatalog();
        for (const t of server.routes.values()) t.refreshCatalogs();
      }
    } catch (err) {
      policyReloadFailures++;
      // The same error for the same file (a file-change poll and a SIGHUP, an editor's two
      // writes) is logged once; a new error, or the file edited again, is logged anew.
      const seen = `${(err as Error).message}\0${digest}`;
      if (seen === lastPolicyFailure) return;
      lastPolicyFailure = seen;
      log.error({ err: (err as Error).message, version: before, why }, 'policy reload failed; keeping the running policy');
    }
  };
  if (policy !== null && config.policy !== null) {
    // Edits take effect without a signal; the poll is cheap and survives editors that
    // replace the file instead of writing it.
    // An empty file is one being written (truncated, not yet filled): its content comes next.
    watchFile(config.policy, { interval: 500, persistent: false }, (now) => { if (now.size !== 0) reloadPolicy('file changed'); });
  }
  // SIGHUP and the console's RELOAD: one path. Returns the config error, or null.
  const reload = (why: string): string | null => {
    let failed: string | null = null;
    try {
      server.reload(share(loadConfig(configFile, anchor)));
    } catch (err) {
      failed = (err as Error).message;
      log.error({ err: failed, why }, 'reload failed; keeping the running configuration');
    }
    reloadPolicy(why);
    return failed;
  };
  // SIGTERM, SIGINT and the console's SHUTDOWN: one path.
  const stop = (why: string): void => {
    log.info({ why }, 'stopping');
    // /healthz keeps answering (and /readyz says 503) until the drain is over: a probe that
    // found the port closed would have the orchestrator kill the pod mid-drain.
    void Promise.all([server.shutdown().then(() => http?.close()), feed?.stop()]).then(() => {
      log.info('stopped');
      audit?.close();
      process.exit(0);
    });
  };
  server.control = {
    reload,
    shutdown: stop,
    get policy() { return policy; },
    get policyReloadFailures() { return policyReloadFailures; },
    policySource: feed,
  };
  if (feed !== null) feed.onApplied = () => gate.refreshCatalog();
  // A revocation ends the sessions it names at once, not at their next statement.
  if (feed !== null) feed.onRevocations = () => server.endRevoked();
  // logrotate renames the audit file, then sends SIGHUP: later lines go to a new file.
  process.on('SIGHUP', () => { audit?.reopen(); reload('SIGHUP'); });
  // workers: N: the primary passes SIGHUP and RELOAD on; each worker reopens its own audit file.
  workerHooks.reload = (why) => { audit?.reopen(); reload(why); };
  workerHooks.shutdown = stop;
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

