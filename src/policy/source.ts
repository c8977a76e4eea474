/** The central policy source: versioned policy documents and revocations in PostgreSQL, LISTEN + poll. */
import pg from 'pg';
import type { Logger } from 'pino';
import { ConfigError } from '../errors.js';
import { PolicyStore, type PolicyStoreOptions } from './store.js';
import { RevocationList, type RevocationRow } from './revocations.js';
import type { PolicySourceConfig } from './source-config.js';

/** Every push and revoke notifies here; the payload is a hint only, never trusted. */
export const SOURCE_CHANNEL = 'scopegate_policy';

/** The tables, created if missing (by `policy push`, `revoke` or an instance). `S` is the schema. */
export function sourceDdl(schema: string): string {
  const s = `"${schema}"`;
  return `CREATE SCHEMA IF NOT EXISTS ${s};
CREATE TABLE IF NOT EXISTS ${s}.policy_versions (
  version    bigint PRIMARY KEY,
  document   text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT current_user
);
CREATE TABLE IF NOT EXISTS ${s}.revocations (
  id         bigserial PRIMARY KEY,
  jti        text,
  sub        text,
  until      timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT current_user,
  CHECK ((jti IS NULL) <> (sub IS NULL))
);`;
}

/** Opens a connection to the source (the URL's sslmode applies). */
export async function connectSource(cfg: Pick<PolicySourceConfig, 'url' | 'password'>, application = 'scopegate policy'): Promise<pg.Client> {
  // pg lets the connection string's (absent) password override a separate one: put it in the URL.
  const u = new URL(cfg.url);
  if (cfg.password !== null) u.password = encodeURIComponent(cfg.password);
  const c = new pg.Client({
    connectionString: u.toString(),
    application_name: application,
    connectionTimeoutMillis: 5_000,
    // A source that stops answering counts as down, not as a hung refresh.
    query_timeout: 10_000,
    keepAlive: true,
  });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/** Creates the schema and tables unless they exist (two creators at once are serialised). */
export async function ensureSourceSchema(c: pg.Client, schema: string): Promise<void> {
  const r = await c.query<{ v: string | null; r: string | null }>('SELECT to_regclass($1) AS v, to_regclass($2) AS r', [`"${schema}".policy_versions`, `"${schema}".revocations`]);
  if (r.rows[0]!.v !== null && r.rows[0]!.r !== null) return;
  await c.query('BEGIN');
  try {
    await c.query("SELECT pg_advisory_xact_lock(hashtext('scopegate_policy_source_ddl'))");
    await c.query(sourceDdl(schema));
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

export interface SourceVersion {
  version: string;
  document: string;
  created_at: Date;
  created_by: string;
}

export async function latestVersion(c: pg.Client, schema: string): Promise<SourceVersion | null> {
  const r = await c.query<SourceVersion>(`SELECT version::text AS version, document, created_at, created_by FROM "${schema}".policy_versions ORDER BY version DESC LIMIT 1`);
  return r.rows[0] ?? null;
}

export async function readRevocations(c: pg.Client, schema: string): Promise<RevocationRow[]> {
  const r = await c.query<{ jti: string | null; sub: string | null; until: string | null }>(
    `SELECT jti, sub, (extract(epoch FROM until) * 1000)::bigint::text AS until FROM "${schema}".revocations WHERE until IS NULL OR until > now()`,
  );
  return r.rows.map((x) => ({ jti: x.jti, sub: x.sub, until: x.until === null ? null : Number(x.until) }));
}

/** Stores a document as the next version (the caller validated it) and notifies; returns its number. */
export async function pushVersion(c: pg.Client, schema: string, document: string): Promise<string> {
  await c.query('BEGIN');
  try {
    // Pushes are serialised, so max(version) + 1 is never taken twice.
    await c.query(`LOCK TABLE "${schema}".policy_versions IN EXCLUSIVE MODE`);
    const r = await c.query<{ version: string }>(
      `INSERT INTO "${schema}".policy_versions (version, document) SELECT coalesce(max(version), 0) + 1, $1 FROM "${schema}".policy_versions RETURNING version::text AS version`,
      [document],
    );
    const version = r.rows[0]!.version;
    await c.query('SELECT pg_notify($1, $2)', [SOURCE_CHANNEL, `policy ${version}`]);
    await c.query('COMMIT');
    return version;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

export async function insertRevocation(c: pg.Client, schema: string, r: { jti: string | null; sub: string | null; until: Date | null }): Promise<void> {
  await c.query('BEGIN');
  try {
    await c.query(`INSERT INTO "${schema}".revocations (jti, sub, until) VALUES ($1, $2, $3)`, [r.jti, r.sub, r.until]);
    await c.query('SELECT pg_notify($1, $2)', [SOURCE_CHANNEL, 'revocation']);
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5_000;

/**
 * One instance's view of the source: a dedicated connection that LISTENs, a poll every
 * `poll` as a safety net, and reconnection with backoff. A notification only triggers a
 * re-read of the tables. Only a version newer than the running one is applied; one that
 * does not validate is logged once, counted, and the running policy kept. While the
 * connection is down the last good policy and revocation list stay in force (stale).
 */
export class PolicyFeed {
  readonly revocations = new RevocationList();
  /** Versions read that did not validate (metrics). */
  invalidVersions = 0;
  private readonly badVersions = new Set<string>();
  private client: pg.Client | null = null;
  private connected = false;
  private stopped = false;
  private backoff = BACKOFF_MIN_MS;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;
  private again = false;
  /** Called after every read of a non-empty revocation list: open sessions it names are ended at once. */
  onRevocations: (() => void) | null = null;
  /** Called after a new version replaced the running policy (catalog refresh, log). */
  onApplied: ((version: string, previous: string) => void) | null = null;

  private constructor(
    readonly cfg: PolicySourceConfig,
    readonly store: PolicyStore,
    private readonly log: Logger,
  ) {}

  /** True while the source cannot be read: the running policy may be behind. */
  get stale(): boolean {
    return !this.connected;
  }

  /**
   * Connects, creates the schema if missing, reads the latest version and the revocations,
   * then listens. Throws ConfigError (a one-line reason) when the source is unreachable,
   * empty, or its latest version is invalid: an instance never starts without a policy.
   */
  static async start(cfg: PolicySourceConfig, log: Logger, opts: PolicyStoreOptions = {}): Promise<PolicyFeed> {
    let c: pg.Client;
    try {
      c = await connectSource(cfg, 'scopegate policy feed');
    } catch (err) {
      throw new ConfigError('policy_source.url', `cannot connect to ${cfg.url}: ${(err as Error).message}`);
    }
    let feed: PolicyFeed;
    try {
      await ensureSourceSchema(c, cfg.schema);
      const latest = await latestVersion(c, cfg.schema);
      if (latest === null) throw new ConfigError('policy_source', `no policy in ${cfg.schema}.policy_versions: push one with \`scopegate policy push --source URL FILE\``);
      let store: PolicyStore;
      try {
        store = PolicyStore.fromSource(latest.document, latest.version, opts);
      } catch (err) {
        throw new ConfigError('policy_source', `version ${latest.version} is invalid: ${(err as Error).message}`);
      }
      feed = new PolicyFeed(cfg, store, log);
      feed.revocations.replace(await readRevocations(c, cfg.schema));
      await feed.attach(c);
    } catch (err) {
      await c.end().catch(() => undefined);
      if (err instanceof ConfigError) throw err;
      throw new ConfigError('policy_source', `cannot read ${cfg.url}: ${(err as Error).message}`);
    }
    feed.pollTimer = setInterval(() => { void feed.refresh('poll'); }, cfg.poll);
    feed.pollTimer.unref();
    return feed;
  }

  /** Takes a fresh connection into use: LISTEN, then re-read (anything may have changed meanwhile). */
  private async attach(c: pg.Client): Promise<void> {
    c.on('error', (err) => this.lost(c, err.message));
    c.on('end', () => this.lost(c, 'connection closed'));
    c.on('notification', (n) => { if (n.channel === SOURCE_CHANNEL) void this.refresh('notification'); });
    this.client = c;
    await c.query(`LISTEN ${SOURCE_CHANNEL}`);
    this.connected = true;
    this.backoff = BACKOFF_MIN_MS;
  }

  private lost(c: pg.Client, why: string): void {
    if (this.client !== c) return;
    this.client = null;
    if (this.connected) this.log.warn({ source: this.cfg.url, why, version: this.store.version }, 'policy source lost; keeping the running policy until it is back');
    this.connected = false;
    void c.end().catch(() => undefined);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer !== null) return;
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    this.reconnectTimer = setTimeout(() => { this.reconnectTimer = null; void this.reconnect(); }, wait);
    this.reconnectTimer.unref();
  }

  private async reconnect(): Promise<void> {
    if (this.stopped) return;
    let c: pg.Client;
    try {
      c = await connectSource(this.cfg, 'scopegate policy feed');
    } catch {
      this.scheduleReconnect();
      return;
    }
    try {
      await this.attach(c);
      // Stale until the tables were read again: a version pushed while down applies now.
      this.connected = false;
      await this.read(c);
      if (this.client === c) {
        this.connected = true;
        this.log.info({ source: this.cfg.url, version: this.store.version }, 'policy source back');
      }
    } catch (err) {
      this.lost(c, (err as Error).message);
    }
  }

  /** Re-reads the tables; concurrent triggers collapse into one more read. */
  refresh(why: string): Promise<void> {
    if (this.refreshing !== null) {
      this.again = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.again = false;
        const c = this.client;
        if (c === null) return;
        try {
          await this.read(c);
        } catch (err) {
          this.log.debug({ why, err: (err as Error).message }, 'policy source read failed');
          this.lost(c, (err as Error).message);
          return;
        }
      } while (this.again);
    })().finally(() => { this.refreshing = null; });
    return this.refreshing;
  }

  private async read(c: pg.Client): Promise<void> {
    const latest = await latestVersion(c, this.cfg.schema);
    const rows = await readRevocations(c, this.cfg.schema);
    const before = this.revocations.size;
    this.revocations.replace(rows);
    if (rows.length !== before) this.log.info({ revocations: rows.length, previous: before }, 'revocation list changed');
    // Before the policy part, which may throw or return early: a revocation never waits.
    if (rows.length !== 0) this.onRevocations?.();
    if (latest === null) return;
    const running = this.store.version;
    // Only forward: a version at or below the running one (or one known bad) changes nothing.
    if (BigInt(latest.version) <= BigInt(running) || this.badVersions.has(latest.version)) return;
    try {
      // Validates in full before it swaps: an invalid document leaves the running policy.
      this.store.reloadText(latest.document, latest.version);
    } catch (err) {
      this.badVersions.add(latest.version);
      this.invalidVersions++;
      this.log.error({ version: latest.version, running, err: (err as Error).message }, 'policy source: version is invalid; keeping the running policy');
      return;
    }
    this.log.info({ version: latest.version, previous: running, by: latest.created_by }, 'policy reloaded from source');
    this.onApplied?.(latest.version, running);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pollTimer !== null) clearInterval(this.pollTimer);
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    const c = this.client;
    this.client = null;
    this.connected = false;
    await c?.end().catch(() => undefined);
  }
}
