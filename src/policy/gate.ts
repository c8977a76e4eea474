/** The checks between a client and Postgres: login, startup parameters, each statement's verdict, audit. */
import type { Logger } from 'pino';
import type { AuditLog } from '../log.js';
import type { Identity } from '../auth/index.js';
import { isExpired } from '../auth/index.js';
import type { AuthPeer, ClientAuthenticator } from '../auth/exchange.js';
import { SqlError, SQLSTATE } from '../errors.js';
import { quoteIdent, quoteLiteral } from '../session/settings.js';
import type { SessionEffects, SessionStateTracker } from './session-effects.js';
import type { BindCheck, Decision, PolicyStore } from './index.js';
import type { DatabaseCatalog } from './catalog.js';
import type { ColumnCatalog } from './types.js';
import { ShapeCache } from './shapes.js';
import { classifySql } from './classify.js';
import type { DecisionThreads } from './decision-threads.js';
import { wasmBroken } from './wasm.js';
import { tooCostlyDecision } from './decide.js';
import type { RevocationList } from './revocations.js';
import { LoopShare } from './loop-share.js';

/** What the gate reads of a client session; it never writes to it. */
export interface GateClient extends AuthPeer {
  readonly identity: Identity | null;
  /** The token's scopes, sorted: part of decision cache keys. */
  readonly scopeKey: string;
  readonly poolMode: 'transaction' | 'session';
  /** Server connections log in as the scope's role: BEGIN takes no role (its first statement's). */
  readonly loginRoles: boolean;
  /** Startup parameters as the client sent them. */
  readonly startupValues: ReadonlyMap<string, string>;
  /** A routed client's own column catalog (src/pool/routes.ts); null/absent: the gate's. */
  readonly catalog?: CatalogSource | null;
}

/** A column catalog read elsewhere (a route's): null until its first read, which ensure() starts. */
export interface CatalogSource {
  readonly current: ColumnCatalog | null;
  ensure(): void;
}

/** A prepared statement as the gate judged it at Parse. */
export interface CheckedStatement {
  readonly sql: string;
}

/** The role a statement runs under: a role name, null for the login role, undefined for no requirement. */
export type RoleChoice = string | null | undefined;

/** An allowed statement that goes to Postgres in rewritten form (row filters, masks, `*`). */
export class Rewrite {
  constructor(
    /** The text to send instead of the client's, or null to send it unchanged. */
    readonly sql: string | null,
    readonly role: RoleChoice,
    /** Parameters a write must keep inside the row filter, checked at Bind. */
    readonly bindChecks: readonly BindCheck[],
    /** DDL: the column catalog is re-read once the transaction that ran it has ended. */
    readonly changesCatalog = false,
  ) {}
}

export type Verdict = SqlError | Rewrite | RoleChoice;

/**
 * The checks a client session passes through: at connect (startup parameters, credentials)
 * and per statement. Authentication, session-state tracking and scope enforcement plug in here.
 */
export interface StatementGate {
  /** Refuses startup parameters the policy does not allow (throws a FATAL SqlError). */
  checkStartup(c: GateClient): Promise<void>;
  /** Runs the authentication exchange; throws a FATAL SqlError on failure. */
  authenticate(c: GateClient): Promise<Identity | null>;
  /** Refuses a client whose token or subject was revoked (28000 FATAL): at login and at every statement.
   * `ending`: asked when the list changed, for a session that is ended at once (audited so). */
  checkRevoked(c: GateClient, ending?: boolean): SqlError | null;
  /** Called before a client borrows a backend for a new transaction. */
  checkTransactionStart(c: GateClient): SqlError | null;
  /**
   * What the text would do to the session if it ran (null: nothing the pooler tracks).
   * Pure: the session applies it, and only once the server has confirmed the statement.
   */
  effectsOf(c: GateClient, sql: string): SessionEffects | null;
  /**
   * Checks one simple Query or Parse (`fx` from effectsOf): returns the error to send, or
   * the role the statement runs under (undefined when no policy decides roles).
   */
  checkQuery(c: GateClient, sql: string, fx: SessionEffects | null): Verdict;
  /** The version statements are checked under now ('' without a policy). */
  policyVersion(): string;
  /** Role for statements that touch nothing: the first scope (in policy order) the client holds. */
  defaultRole(c: GateClient): string | null;
  /** Judges a prepared statement again (at Bind, when the policy changed since Parse). */
  recheck(c: GateClient, stmt: CheckedStatement): Verdict;
  /** The decision the last checkQuery or recheck made (null before any, or without a policy). */
  readonly lastDecision: Decision | null;
  /** A Bind that runs a statement again under the decision made at its Parse: one more audit line. */
  auditExecution(c: GateClient, d: Decision): void;
  /** Re-reads table columns (after DDL through scopegate, or a policy reload). */
  refreshCatalog(): void;
  /** Reads the catalog now; until one read succeeds, statements are refused (57P03). */
  loadCatalog(): Promise<boolean>;
  /** The text is one BEGIN/START TRANSACTION, COMMIT/END or ROLLBACK/ABORT (else null). */
  transactionControl(sql: string): 'begin' | 'commit' | 'rollback' | null;
  /** Whether the text parses (Postgres would refuse it otherwise). */
  parses(sql: string): boolean;
  /**
   * Whether effectsOf/checkQuery would have to parse this big text on the event loop: then
   * the session holds its input and awaits decideOffThread first.
   */
  needsOffThread(c: GateClient, sql: string): boolean;
  /**
   * Works out the text's decision and effects in a decision worker and caches them, so the
   * checks that follow answer from the cache. Resolves with the error to send instead when
   * the text could not be judged. Never rejects.
   */
  decideOffThread(c: GateClient, sql: string): Promise<SqlError | null>;
  /** An admin console command, audited like a decision (the console's every command). */
  auditConsole(c: GateClient, command: string, allowed: boolean, reason: string): void;
  /** Totals for SHOW STATS and metrics, read at scrape time. */
  counts(): GateCounts;
}

/** Index in GateCounts.decisions' arrays. */
export const enum DecisionKind { Allow, Deny, WouldDeny }

/** What the gate counted since start; plain numbers, read by the admin console and metrics. */
export interface GateCounts {
  /** By scope ('' when no scope took the statement): [allow, deny, would_deny]. */
  readonly decisions: ReadonlyMap<string, readonly number[]>;
  /** Failed logins by the check that failed. */
  readonly authFailures: ReadonlyMap<string, number>;
  /** HTTP fetches of signing keys (JWKS, discovery). */
  readonly keyFetches: number;
  /** The parser threads' jobs, failures and restarts; null without threads. */
  readonly threads: { readonly jobs: number; readonly failed: number; readonly restarts: number } | null;
}

/** Scope labels kept apart; past this (a policy of thousands of scopes) the rest count as one. */
const MAX_SCOPE_KEYS = 1000;

export interface GateParts {
  log: Logger;
  auth: ClientAuthenticator | null;
  clockToleranceMs: number;
  /** What statements do to the session (SET, temp tables, LISTEN, pinned settings); null: nothing tracked. */
  sessionState: SessionStateTracker | null;
  /** Scope policy; null runs scopegate as a plain pooler. */
  policy: PolicyStore | null;
  /** Columns of the first database, for star expansion and masks (null without a policy). */
  catalog: DatabaseCatalog | null;
  /** Where audit lines go (null: off). */
  audit: AuditLog | null;
  /** Fraction of allowed statements audited; denials always are. */
  auditSample: number;
  /** Where big texts are parsed and decided (null: on the event loop). */
  threads?: DecisionThreads | null;
  /** Revoked tokens and subjects (policy_source); null: none. */
  revocations?: RevocationList | null;
}

const NO_SCOPES: readonly string[] = Object.freeze([]);

const CATALOG_NOT_READ = new SqlError(SQLSTATE.CANNOT_CONNECT_NOW, 'scopegate has not read the database catalog yet, so it cannot check statements', {
  hint: 'It retries every second: try again shortly. The log says why the read failed.',
});

/** Texts up to this size are parsed on the event loop while every parser thread is taken. */
const BUSY_THREADS_LOOP_LIMIT = 16 * 1024;

/** Composes the configured parts; with none of them scopegate is a plain pooler. */
export class SessionGate implements StatementGate {
  /** Event-loop time spent on statement checks, per sender: a sender past its share parses on the threads. */
  private readonly loop = new LoopShare();
  private readonly shapes: ShapeCache | null;
  /** One verdict object per cached decision: no allocation per statement. */
  private readonly rewrites = new WeakMap<Decision, Rewrite>();

  /** A policy judges column references against the catalog (`o.fn` is a function call when
   * fn is no column): without one it cannot, so it judges nothing until the first read. */
  private catalogReady: boolean;
  private catalogRetry: NodeJS.Timeout | null = null;

  /** Decisions by scope ('' for none): [allow, deny, would_deny]. */
  private readonly decisions = new Map<string, number[]>();

  constructor(private readonly parts: GateParts) {
    this.shapes = parts.policy === null ? null : new ShapeCache(parts.policy);
    this.catalogReady = parts.policy === null || parts.catalog === null;
  }

  /** Startup settings are statements too: `options=-c search_path=...` needs the same grant as SET. */
  async checkStartup(c: GateClient): Promise<void> {
    const policy = this.parts.policy;
    if (policy === null) return;
    for (const [name, value] of c.startupValues) {
      const sql = `SET ${quoteIdent(name)} TO ${quoteLiteral(value)}`;
      // Judged like any statement: a long value, or an event loop whose parser failed, goes to the threads.
      if (this.needsOffThread(c, sql)) {
        const refusal = await this.decideOffThread(c, sql);
        if (refusal !== null) throw new SqlError(refusal.code, refusal.message, { severity: 'FATAL', hint: refusal.hint });
      }
      const d = policy.check(sql, c.identity?.scopes ?? NO_SCOPES);
      this.audit(c, d, 'startup');
      if (!d.allowed && d.enforced) {
        throw new SqlError(SQLSTATE.INSUFFICIENT_PRIVILEGE, `permission denied: startup parameter "${name}"`, { severity: 'FATAL', hint: d.error?.hint });
      }
    }
  }

  async authenticate(c: GateClient): Promise<Identity | null> {
    const auth = this.parts.auth;
    if (auth === null) return null;
    const id = await auth.authenticate(c);
    const refusal = id === null ? null : this.checkRevokedIdentity(id);
    if (refusal !== null) {
      auth.failures.set('revoked', (auth.failures.get('revoked') ?? 0) + 1);
      this.parts.log.info({ addr: c.address, sub: id!.sub }, 'login refused: revoked');
      this.parts.audit?.line(`${clientFields(c, id)}"audit":"login","decision":"deny","reason":${JSON.stringify(refusal.message)}`);
      throw refusal;
    }
    return id;
  }

  checkRevoked(c: GateClient, ending = false): SqlError | null {
    const refusal = c.identity === null ? null : this.checkRevokedIdentity(c.identity);
    if (refusal !== null) this.auditRefusal(c, 'revoked', refusal.message, ending ? ',"ended":"at revocation"' : '');
    return refusal;
  }

  /** A session refused outright (its token revoked): always written, like every denial. */
  private auditRefusal(c: GateClient, what: string, reason: string, extra = ''): void {
    this.parts.audit?.line(`${this.auditClientFields(c)}"audit":${JSON.stringify(what)},"decision":"deny","reason":${JSON.stringify(reason)}${extra}`);
  }

  private checkRevokedIdentity(id: Identity): SqlError | null {
    const list = this.parts.revocations ?? null;
    if (list === null) return null;
    const why = list.revoked(id);
    return why === null ? null : new SqlError(SQLSTATE.INVALID_AUTHORIZATION, `${why}: access revoked`, { severity: 'FATAL', hint: 'The token or its subject was revoked centrally; get a new token.' });
  }

  checkTransactionStart(c: GateClient): SqlError | null {
    const id = c.identity;
    if (id !== null && isExpired(id, Date.now(), this.parts.clockToleranceMs)) {
      return new SqlError(SQLSTATE.INVALID_AUTHORIZATION, 'access token expired', { severity: 'FATAL', hint: 'Reconnect with a fresh token.' });
    }
    return null;
  }

  effectsOf(c: GateClient, sql: string): SessionEffects | null {
    const tracker = this.parts.sessionState;
    if (tracker === null) return null;
    const started = this.parts.threads != null ? performance.now() : 0;
    const fx = tracker.effects(sql);
    if (started !== 0) this.loop.charge(senderOf(c), started);
    if (!fx.tracked) return null;
    // A session of its own keeps its state; only the pinned settings matter there, and the
    // end of a transaction that may undo a role scopegate switched inside it.
    return c.poolMode === 'transaction' || fx.pinned !== null || fx.undo ? fx : null;
  }

  checkQuery(c: GateClient, sql: string, fx: SessionEffects | null): Verdict {
    this.lastDecision = null;
    if (fx !== null && fx.pinned !== null) return fx.pinned;
    if (fx !== null && c.poolMode === 'transaction') {
      if (fx.listen) {
        return new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, 'LISTEN is not supported in transaction pooling mode', { hint: 'Notifications need a session of their own: connect listeners to a database entry with pool_mode: session.' });
      }
      if (fx.sqlPrepared) {
        return new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, 'SQL-level PREPARE, EXECUTE and DEALLOCATE are not supported in transaction pooling mode', { hint: "Use your driver's prepared statements (protocol-level Parse/Bind), which scopegate carries across server connections." });
      }
    }
    const policy = this.parts.policy;
    if (policy === null) return undefined;
    const cat = this.catalogOf(c);
    if (cat === null || (cat === undefined && !this.catalogReady)) return CATALOG_NOT_READ;
    const started = this.parts.threads != null ? performance.now() : 0;
    const shapes = this.shapes;
    const d = shapes !== null && shapes.enabled
      ? shapes.check(sql, c.identity?.scopes ?? NO_SCOPES, c.scopeKey, cat)
      : policy.check(sql, c.identity?.scopes ?? NO_SCOPES, c.identity?.claims, cat);
    if (started !== 0) this.loop.charge(senderOf(c), started);
    return this.decide(c, d);
  }

  /** A routed client's catalog (null: not read yet, so refused); undefined: the gate's own. */
  private catalogOf(c: GateClient): ColumnCatalog | null | undefined {
    const src = c.catalog;
    if (src === undefined || src === null) return undefined;
    const cur = src.current;
    if (cur === null) src.ensure();
    return cur;
  }

  /** Re-reads table columns (after DDL through scopegate, or a policy reload). */
  refreshCatalog(): void {
    void this.loadCatalog();
  }

  async loadCatalog(): Promise<boolean> {
    const { catalog, policy } = this.parts;
    if (catalog === null || policy === null) return true;
    const snapshot = await catalog.reload();
    if (snapshot !== null) {
      policy.setCatalog(snapshot);
      this.catalogReady = true;
      return true;
    }
    if (!this.catalogReady && this.catalogRetry === null) {
      this.catalogRetry = setTimeout(() => { this.catalogRetry = null; void this.loadCatalog(); }, 1_000);
      this.catalogRetry.unref();
    }
    return false;
  }

  policyVersion(): string {
    return this.parts.policy?.version ?? '';
  }

  transactionControl(sql: string): 'begin' | 'commit' | 'rollback' | null {
    const tracker = this.parts.sessionState;
    if (tracker !== null) return tracker.effects(sql).control;
    const infos = classifySql(sql);
    const t = infos.length === 1 ? infos[0]!.transaction : null;
    return t === 'begin' || t === 'start' ? 'begin' : t === 'commit' || t === 'rollback' ? t : null;
  }

  parses(sql: string): boolean {
    const tracker = this.parts.sessionState;
    if (tracker !== null) return !tracker.effects(sql).unparsed;
    return classifySql(sql).every((s) => s.kind !== 'unparseable');
  }

  needsOffThread(c: GateClient, sql: string): boolean {
    const threads = this.parts.threads ?? null;
    if (threads === null) return false;
    const broken = wasmBroken() !== null;
    const overShare = this.loop.over(senderOf(c));
    // Small texts are parsed here, unless their sender has used its share of the event loop.
    if (!broken && sql.length < threads.minSize && !overShare) return false;
    const tracker = this.parts.sessionState;
    if (!((tracker !== null && !tracker.has(sql)) || this.decisionNeeded(c, sql))) return false;
    // Once the event loop's own parser has failed, every text goes to the threads.
    if (broken) return true;
    // Threads held by other clients' long parses: a text of moderate size costs the event loop
    // less than the wait for one of them to end.
    return !(sql.length < BUSY_THREADS_LOOP_LIMIT && !overShare && threads.allBusy);
  }

  /** Whether checkQuery would decide this text afresh (so parse it). */
  private decisionNeeded(c: GateClient, sql: string): boolean {
    const policy = this.parts.policy;
    const cat = this.catalogOf(c);
    if (policy === null || cat === null || (cat === undefined && !this.catalogReady)) return false;
    const scopes = c.identity?.scopes ?? NO_SCOPES;
    const shapes = this.shapes;
    if (shapes !== null && shapes.enabled) return !shapes.has(sql, scopes, c.scopeKey, cat);
    return !policy.has(sql, scopes, c.identity?.claims, cat);
  }

  async decideOffThread(c: GateClient, sql: string): Promise<SqlError | null> {
    const threads = this.parts.threads ?? null;
    if (threads === null) return null;
    const tracker = this.parts.sessionState;
    const policy = this.parts.policy;
    const scopes = c.identity?.scopes ?? NO_SCOPES;
    // Row rules off: decisions do not read claims, and checkQuery asks without them.
    const claims = this.shapes !== null && this.shapes.enabled ? undefined : c.identity?.claims;
    const decide = this.decisionNeeded(c, sql);
    const effects = tracker !== null && !tracker.has(sql);
    const started = performance.now();
    const cat = this.catalogOf(c) ?? undefined;
    const r = await threads.run({ client: senderOf(c), sql, scopes: [...scopes], claims, decide, effects, catalog: cat });
    if (r.refused !== undefined) {
      this.audit(c, tooCostlyDecision(policy?.version ?? '', r.refused, sql), 'statement');
      return r.refused;
    }
    if (this.parts.log.isLevelEnabled('debug')) this.parts.log.debug({ addr: c.address, chars: sql.length, ms: Math.round(performance.now() - started), failed: r.failed !== null }, 'statement decided off the event loop');
    const failed = r.failed ?? (r.made?.decision.reason === 'parser_failed' ? r.made.decision.error?.message ?? 'the SQL parser failed' : null);
    if (failed !== null) {
      const hint = 'scopegate replaced its parser; simplify the statement or send it in parts';
      this.parts.log.warn({ addr: c.address, bytes: sql.length, why: failed }, 'statement refused: it could not be parsed');
      // Refused in audit mode too: a statement nobody could judge never runs.
      this.audit(c, {
        allowed: false, enforced: true, role: null, scope: null, statements: [], reason: 'parser_failed', fingerprint: '', normalized: sql.slice(0, 200),
        policyVersion: policy?.version ?? '', summary: '', rewritten: null, bindChecks: [], error: { code: SQLSTATE.STATEMENT_TOO_COMPLEX, message: failed, hint },
      }, 'statement');
      return new SqlError(SQLSTATE.STATEMENT_TOO_COMPLEX, `statement refused: ${failed}`, { hint });
    }
    if (r.effects !== null) tracker?.adopt(sql, r.effects);
    // Made against another policy or catalog than the current one: checkQuery decides afresh.
    if (r.made !== null) policy?.adopt(sql, scopes, claims, r.made, cat);
    return null;
  }

  defaultRole(c: GateClient): string | null {
    const policy = this.parts.policy;
    const held = c.identity?.scopes ?? NO_SCOPES;
    if (policy === null) return null;
    for (const s of policy.policy.scopes) if (held.includes(s.name)) return s.role;
    return null;
  }

  recheck(c: GateClient, stmt: CheckedStatement): Verdict {
    this.lastDecision = null;
    const policy = this.parts.policy;
    if (policy === null) return undefined;
    const cat = this.catalogOf(c);
    if (cat === null || (cat === undefined && !this.catalogReady)) return CATALOG_NOT_READ;
    return this.decide(c, policy.check(stmt.sql, c.identity?.scopes ?? NO_SCOPES, c.identity?.claims, cat));
  }

  private parserLossLogged = false;

  lastDecision: Decision | null = null;

  auditExecution(c: GateClient, d: Decision): void {
    this.audit(c, d, 'execute');
  }

  /** Turns a decision into the error to send or the role to run under, and audits it. */
  private decide(c: GateClient, d: Decision): Verdict {
    this.lastDecision = d;
    this.audit(c, d, 'statement');
    if (d.reason === 'parser_failed' && !this.parserLossLogged && wasmBroken() !== null) {
      this.parserLossLogged = true;
      const then = this.parts.threads != null ? 'statements are decided by the parser threads' : 'with parser_threads 0, statements not yet decided are refused';
      this.parts.log.error({ why: wasmBroken() }, `the event loop's SQL parser failed and is not used again: ${then} (restart scopegate to get it back)`);
    }
    if (!d.allowed) {
      if (d.enforced) {
        const e = d.error ?? { code: SQLSTATE.INSUFFICIENT_PRIVILEGE, message: 'permission denied', hint: 'no scope grants it' };
        return new SqlError(e.code, e.message, { hint: e.hint });
      }
    }
    // Statements that touch nothing (BEGIN, SELECT 1, SET LOCAL ...) run under whatever
    // role the backend has, so a transaction does not switch roles around them.
    if (d.allowed && (d.rewritten !== null || d.bindChecks.length !== 0 || d.statements.some(isDdl))) {
      let r = this.rewrites.get(d);
      if (r === undefined) this.rewrites.set(d, (r = new Rewrite(d.rewritten, d.role, d.bindChecks, d.statements.some(isDdl))));
      return r;
    }
    // BEGIN does take the role, so the switch happens before the transaction, not inside it.
    if (d.summary === '' && d.reason !== 'empty' && (!startsTransaction(d) || c.loginRoles)) return undefined;
    return d.role;
  }

  counts(): GateCounts {
    const threads = this.parts.threads ?? null;
    return {
      decisions: this.decisions,
      authFailures: this.parts.auth?.failures ?? new Map(),
      keyFetches: this.parts.auth?.verifier.keyFetches ?? 0,
      threads: threads === null ? null : threads.stats,
    };
  }

  auditConsole(c: GateClient, command: string, allowed: boolean, reason: string): void {
    const log = this.parts.audit;
    if (log === null) return;
    // The command as sent, bounded: console commands are short, a long text is not one.
    const statement = command.length > 200 ? `${command.slice(0, 200)}...` : command;
    log.line(`${this.auditClientFields(c)}"audit":"admin","statement":${JSON.stringify(statement)},"decision":"${allowed ? 'allow' : 'deny'}","reason":${JSON.stringify(reason)}`);
  }

  /** Per client: its identity's audit fields, serialised once (the identity is set once, at login). */
  private readonly clientFields = new WeakMap<GateClient, { identity: Identity | null; fields: string }>();
  /** Per cached decision: its audit fields, serialised once however often it is looked up. */
  private readonly decisionFields = new WeakMap<Decision, string>();

  /**
   * The client's part of every audit line (`"addr":...,"sub":...,` with a trailing comma),
   * built once per client; every audit writer starts its line with it. JSON.stringify escapes
   * each value, so a subject with quotes or newlines stays one string in one line.
   */
  auditClientFields(c: GateClient): string {
    const id = c.identity;
    const seen = this.clientFields.get(c);
    if (seen !== undefined && seen.identity === id) return seen.fields;
    const fields = clientFields(c, id);
    this.clientFields.set(c, { identity: id, fields });
    return fields;
  }

  /** Counts a decision: a Map lookup and an increment, no allocation once the scope is seen. */
  private count(d: Decision): void {
    let key = d.scope ?? '';
    let row = this.decisions.get(key);
    if (row === undefined) {
      if (this.decisions.size >= MAX_SCOPE_KEYS) key = '(other)';
      row = this.decisions.get(key);
      if (row === undefined) this.decisions.set(key, (row = [0, 0, 0]));
    }
    row[d.allowed ? DecisionKind.Allow : d.enforced ? DecisionKind.Deny : DecisionKind.WouldDeny]!++;
  }

  private audit(c: GateClient, d: Decision, what: string): void {
    this.count(d);
    const log = this.parts.audit;
    if (log === null) return;
    if (d.allowed && this.parts.auditSample < 1 && Math.random() >= this.parts.auditSample) return;
    let fields = this.decisionFields.get(d);
    if (fields === undefined) {
      fields = `"role":${JSON.stringify(d.role ?? null)},"fingerprint":${JSON.stringify(d.fingerprint)},${auditStatement(d.normalized)},"decision":"${d.allowed ? 'allow' : d.enforced ? 'deny' : 'would_deny'}","reason":${JSON.stringify(d.error ? `${d.reason}: ${d.error.message}` : d.reason)},"policy_version":${JSON.stringify(d.policyVersion)}${d.rewritten !== null ? `,"rewritten":${JSON.stringify(d.rewritten)}` : ''}`;
      this.decisionFields.set(d, fields);
    }
    log.line3(this.auditClientFields(c), auditKind(what), fields);
  }
}

/** `"audit":"statement",` and the like, made once per kind rather than per line. */
const AUDIT_KINDS = new Map<string, string>();
function auditKind(what: string): string {
  let s = AUDIT_KINDS.get(what);
  if (s === undefined) AUDIT_KINDS.set(what, (s = `"audit":${JSON.stringify(what)},`));
  return s;
}

/** The client's audit fields for an identity (at login it is not the client's yet). */
function clientFields(c: GateClient, id: Identity | null): string {
  return `"addr":${JSON.stringify(c.address)},"tls":${JSON.stringify(c.tls?.version ?? null)},"sub":${JSON.stringify(id?.sub ?? null)},"user":${JSON.stringify(c.user)},"scopes":${JSON.stringify(id?.scopes ?? [])},"db":${JSON.stringify(c.database)},`;
}

/** Statement text kept in an audit line: denials are never sampled, so a client padding its
 * statements with megabytes of comment must not grow the log by megabytes per statement. The
 * fingerprint still tells statements apart; the length says how much was cut. */
export const AUDIT_STATEMENT_MAX = 4096;

function auditStatement(text: string): string {
  if (text.length <= AUDIT_STATEMENT_MAX) return `"statement":${JSON.stringify(text)}`;
  return `"statement":${JSON.stringify(`${text.slice(0, AUDIT_STATEMENT_MAX)}...`)},"statement_length":${text.length}`;
}

function isDdl(s: { kind: string }): boolean {
  return s.kind === 'ddl';
}

function startsTransaction(d: Decision): boolean {
  const first = d.statements[0];
  return first !== undefined && first.kind === 'transaction' && /^\s*(begin|start)\b/i.test(first.text);
}

/** Who sends a statement, for fair shares of the event loop and the parser threads: the token's subject, else the address. */
function senderOf(c: GateClient): string {
  return c.identity?.sub ?? c.address;
}
