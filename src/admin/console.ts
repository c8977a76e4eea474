/** The admin console: the virtual database `scopegate` (alias `pgbouncer`), its login check, command parser and dispatcher. */
import type { AdminConfig } from '../config.js';
import { SqlError, SQLSTATE } from '../errors.js';
import { FE } from '../protocol/codes.js';
import { readCString } from '../protocol/framer.js';
import * as msg from '../protocol/messages.js';
import type { AdminConsole, AdminHost, ClientSession } from '../session/client-session.js';
import { poolsOf, Averages, totals, poolEntries, type AdminServer, type Totals } from './stats.js';
import * as show from './show.js';
import { gathers, localTable, mergeTables } from './worker-tables.js';

/** The console's database names: scopegate's own, and PgBouncer's so existing scripts and exporters work. */
export const CONSOLE_DATABASES: readonly string[] = ['scopegate', 'pgbouncer'];

type Level = 'admin' | 'stats';

/** Longest console command read; anything longer is no console command. */
const MAX_COMMAND = 1024;

const HELP = [
  'SHOW [HELP|POOLS|CLIENTS|SERVERS|STATS|DATABASES|CONFIG|LISTS|VERSION|POLICY|DECISIONS|THREADS]',
  'RELOAD', 'PAUSE [<db>]', 'RESUME [<db>]', 'KILL [<db>]', 'KILL_CLIENT <id>', 'SHUTDOWN',
].join('\n');

/** The SHOW commands a stats-scope token may run (all of them: they read, nothing changes). */
const SHOWS = new Set(['HELP', 'POOLS', 'CLIENTS', 'SERVERS', 'STATS', 'DATABASES', 'CONFIG', 'LISTS', 'VERSION', 'POLICY', 'DECISIONS', 'THREADS']);
/** PgBouncer's commands scopegate does not have: 0A000 rather than "invalid command". */
const NOT_SUPPORTED = new Set(['SUSPEND', 'SET', 'DISABLE', 'ENABLE', 'RECONNECT', 'WAIT_CLOSE']);
const NOT_SUPPORTED_SHOWS = new Set(['FDS', 'SOCKETS', 'ACTIVE_SOCKETS', 'MEM', 'DNS_HOSTS', 'DNS_ZONES', 'USERS', 'PEERS', 'PEER_POOLS', 'STATE', 'STATS_TOTALS', 'STATS_AVERAGES', 'TOTALS']);

/** The console of the running server: decides who may log in, and opens one console per client. */
export class AdminConsoles implements AdminHost {
  readonly averages: Averages;

  constructor(private readonly srv: AdminServer, readonly cfg: AdminConfig, private readonly trust: boolean) {
    this.averages = new Averages(() => {
      const byDb = new Map<string, Totals>();
      const seen = new Set<string>();
      for (const e of poolEntries(srv)) seen.add(e.database);
      for (const db of seen) byDb.set(db, totals(poolsOf(srv, db)));
      return byDb;
    });
  }

  isConsoleDatabase(name: string): boolean {
    return CONSOLE_DATABASES.includes(name);
  }

  /** The scope level of a client: admin, stats, or null (no console). */
  private levelOf(c: ClientSession): Level | null {
    if (this.trust && c.identity === null) return this.cfg.trust_access === 'none' ? null : this.cfg.trust_access;
    const scopes = c.identity?.scopes ?? [];
    if (scopes.includes(this.cfg.scope)) return 'admin';
    if (this.cfg.stats_scope !== null && scopes.includes(this.cfg.stats_scope)) return 'stats';
    return null;
  }

  openConsole(c: ClientSession): AdminConsole {
    const level = this.levelOf(c);
    if (level === null) {
      this.srv.gate.auditConsole(c, '(login)', false, 'no admin or stats scope');
      const need = this.cfg.stats_scope === null ? `"${this.cfg.scope}"` : `"${this.cfg.scope}" or "${this.cfg.stats_scope}"`;
      if (this.trust) {
        throw new SqlError(SQLSTATE.INSUFFICIENT_PRIVILEGE, 'permission denied: the admin console is off under auth.method trust', { severity: 'FATAL', hint: 'Set admin.trust_access to stats or admin to open it to loopback clients.' });
      }
      throw new SqlError(SQLSTATE.INSUFFICIENT_PRIVILEGE, `permission denied: the admin console needs a token with scope ${need}`, { severity: 'FATAL' });
    }
    this.srv.gate.auditConsole(c, '(login)', true, level);
    return new Console(this.srv, this, c, level);
  }
}

/** One client's console session: simple Query only, one command per Query. */
class Console implements AdminConsole {
  /** A command that waits (PAUSE) holds the next ones, so answers keep their order. */
  private busy = false;
  private readonly backlog: Buffer[] = [];

  constructor(private readonly srv: AdminServer, private readonly host: AdminConsoles, private readonly c: ClientSession, private readonly level: Level) {}

  parameterStatus(): Buffer[] {
    let version = '18.0';
    for (const p of this.srv.pools.values()) {
      const v = p.serverParams?.get('server_version');
      if (v !== undefined) { version = v; break; }
    }
    const params: Array<[string, string]> = [
      ['server_version', version], ['server_encoding', 'UTF8'], ['client_encoding', 'UTF8'], ['DateStyle', 'ISO, MDY'],
      ['integer_datetimes', 'on'], ['standard_conforming_strings', 'on'], ['application_name', this.c.startupValues.get('application_name') ?? ''],
    ];
    return params.map(([k, v]) => msg.parameterStatus(k, v));
  }

  onMessage(type: number, buf: Buffer, start: number, end: number): void {
    // A session ended meanwhile (revoked, killed) runs nothing of its backlog.
    if (this.c.ended) return;
    if (type !== FE.Query) {
      // PgBouncer's console speaks the simple protocol only; anything else ends the session.
      this.srv.gate.auditConsole(this.c, `(message '${String.fromCharCode(type)}')`, false, 'extended protocol');
      throw new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, 'the admin console supports only the simple query protocol', {
        severity: 'FATAL', hint: 'Send console commands as simple queries (psql -c, or your driver\'s simple/unprepared mode).',
      });
    }
    if (this.busy) {
      this.backlog.push(Buffer.from(buf.subarray(start, end)));
      return;
    }
    const [text] = readCString(buf, start + 5, end);
    void this.run(text);
  }

  private async run(text: string): Promise<void> {
    this.busy = true;
    try {
      const out = await this.execute(text);
      this.c.send(Buffer.concat([...out, msg.readyForQuery('I')]));
    } catch (err) {
      const e = err instanceof SqlError ? err : new SqlError(SQLSTATE.INTERNAL_ERROR, String((err as Error)?.message ?? err));
      if (e.severity === 'FATAL') { this.c.closeWith(e); return; }
      this.c.send(Buffer.concat([msg.errorResponse(e), msg.readyForQuery('I')]));
    } finally {
      this.busy = false;
    }
    const next = this.backlog.shift();
    if (next !== undefined) this.onMessage(next[0]!, next, 0, next.length);
  }

  /** Parses and runs one command; every outcome is audited. */
  private async execute(raw: string): Promise<Buffer[]> {
    const expired = this.srv.gate.checkTransactionStart(this.c) ?? (this.c.identity === null ? null : this.srv.gate.checkRevoked(this.c));
    if (expired !== null) throw expired;
    const text = raw.trim().replace(/[\s;]+$/, '');
    if (text === '') return [msg.EMPTY_QUERY_RESPONSE];
    const deny = (code: string, message: string, reason: string, hint?: string): never => {
      this.srv.gate.auditConsole(this.c, text, false, reason);
      throw new SqlError(code, message, hint === undefined ? {} : { hint });
    };
    if (text.length > MAX_COMMAND) deny(SQLSTATE.SYNTAX_ERROR, 'invalid command: too long for a console command', 'syntax');
    // One command per Query: `SHOW POOLS; SELECT ...` is no console command, and never runs anywhere.
    if (text.includes(';')) deny(SQLSTATE.SYNTAX_ERROR, 'the admin console runs one command per query', 'syntax', 'Send each command on its own.');
    const words = text.split(/\s+/);
    const verb = asciiUpper(words[0]!);
    const arg = words[1];
    const invalid = (): never => deny(SQLSTATE.SYNTAX_ERROR, `invalid command '${text}', use SHOW HELP;`, 'syntax');
    if (words.length > 2) invalid();
    if (verb === 'SHOW') {
      if (arg === undefined) invalid();
      const what = asciiUpper(arg!);
      if (NOT_SUPPORTED_SHOWS.has(what)) deny(SQLSTATE.FEATURE_NOT_SUPPORTED, `SHOW ${what} is not supported by scopegate`, 'not supported', 'SHOW HELP lists the commands.');
      if (!SHOWS.has(what)) invalid();
      this.srv.gate.auditConsole(this.c, text, true, 'ok');
      return this.show(what);
    }
    if (NOT_SUPPORTED.has(verb)) deny(SQLSTATE.FEATURE_NOT_SUPPORTED, `${verb} is not supported by scopegate`, 'not supported', 'SHOW HELP lists the commands.');
    if (!['RELOAD', 'PAUSE', 'RESUME', 'KILL', 'KILL_CLIENT', 'SHUTDOWN'].includes(verb)) invalid();
    if (this.level !== 'admin') {
      deny(SQLSTATE.INSUFFICIENT_PRIVILEGE, `permission denied: ${verb} needs the admin scope "${this.host.cfg.scope}"`, 'permission');
    }
    if ((verb === 'RELOAD' || verb === 'SHUTDOWN') && arg !== undefined) invalid();
    if (verb === 'KILL_CLIENT' && (arg === undefined || !/^\d{1,15}$/.test(arg))) deny(SQLSTATE.SYNTAX_ERROR, 'KILL_CLIENT needs a client id (the id column of SHOW CLIENTS)', 'syntax');
    const pools = verb === 'PAUSE' || verb === 'RESUME' || verb === 'KILL' ? poolsOf(this.srv, arg ?? null) : [];
    if (arg !== undefined && verb !== 'KILL_CLIENT' && pools.length === 0) deny(SQLSTATE.INVALID_CATALOG_NAME, `no such database: ${arg}`, 'no such database');
    const control = this.srv.control;
    if ((verb === 'RELOAD' || verb === 'SHUTDOWN') && control === null) deny(SQLSTATE.FEATURE_NOT_SUPPORTED, `${verb} is not available in this process`, 'no control');
    switch (verb) {
      case 'RELOAD': {
        const failed = control!.reload('RELOAD command');
        if (failed !== null) deny(SQLSTATE.CONFIG_FILE_ERROR, `reload failed; keeping the running configuration: ${failed}`, 'reload failed');
        // workers: N: the other workers read the same file.
        this.srv.workerLink?.reloadOthers('RELOAD command');
        break;
      }
      case 'PAUSE':
        this.srv.gate.auditConsole(this.c, text, true, 'ok');
        // Returns once no server connection of these pools is in use, as PgBouncer's PAUSE.
        await Promise.all(pools.map((p) => p.pause()));
        return [msg.commandComplete(verb)];
      case 'RESUME':
        for (const p of pools) p.resume();
        break;
      case 'KILL': {
        const names = new Set(arg === undefined ? [...poolEntries(this.srv).map((e) => e.database), ...this.srv.config.databases.keys()] : [arg]);
        const bye = new SqlError(SQLSTATE.ADMIN_SHUTDOWN, 'terminating connection: database killed by the admin console (KILL)', { severity: 'FATAL' });
        for (const p of pools) void p.pause();
        // A routed client's database is the entry (`app`); `KILL app/acme` reaches it by its pool.
        for (const c of [...this.srv.sessions()]) if (c.console === null && (names.has(c.database) || (c.poolNow !== null && pools.includes(c.poolNow)))) c.closeWith(bye);
        break;
      }
      case 'KILL_CLIENT': {
        const id = Number(arg);
        const target = [...this.srv.sessions()].find((c) => c.id === id);
        // workers: N: a client of another worker is closed there (ids are unique over workers).
        if (target === undefined && this.srv.workerLink && (await this.srv.workerLink.ask({ what: 'kill_client', id })).some((a) => a.data === true)) {
          this.srv.gate.auditConsole(this.c, text, true, 'ok');
          return [msg.commandComplete(verb)];
        }
        if (target === undefined) deny(SQLSTATE.INVALID_PARAMETER_VALUE, `no client with id ${id}`, 'no such client', 'SHOW CLIENTS lists the ids.');
        this.srv.gate.auditConsole(this.c, text, true, 'ok');
        target!.closeWith(new SqlError(SQLSTATE.ADMIN_SHUTDOWN, `terminating connection: closed by the admin console (KILL_CLIENT ${id})`, { severity: 'FATAL' }));
        return target === this.c ? [] : [msg.commandComplete(verb)];
      }
      case 'SHUTDOWN':
        this.srv.gate.auditConsole(this.c, text, true, 'ok');
        // The answer first: the shutdown closes this session with the others.
        this.c.send(Buffer.concat([msg.commandComplete(verb), msg.readyForQuery('I')]));
        // workers: N: the primary drains every worker, then exits.
        if (this.srv.workerLink) this.srv.workerLink.shutdownAll('SHUTDOWN command');
        else control!.shutdown('SHUTDOWN command');
        return [];
    }
    this.srv.gate.auditConsole(this.c, text, true, 'ok');
    return [msg.commandComplete(verb)];
  }

  private async show(what: string): Promise<Buffer[]> {
    if (what === 'HELP') return [msg.notice('Console usage', HELP), msg.commandComplete('SHOW')];
    const full = this.level === 'admin';
    let table = localTable(this.srv, what, this.c, full, this.host.averages);
    const link = this.srv.workerLink;
    if (link && gathers(what)) {
      // workers: N: the other workers' rows, through the primary (a worker that does not answer in 2 s is left out).
      const others = await link.ask({ what: 'show', table: what, full, viewerSub: this.c.identity?.sub ?? null });
      const parts = [{ worker: link.index, table }, ...others.filter((o) => o.data !== null).map((o) => ({ worker: o.worker, table: o.data as show.Table }))];
      table = mergeTables(what, parts);
    }
    return [msg.rowDescription(table.columns), ...table.rows.map((r) => msg.dataRow(r)), msg.commandComplete('SHOW')];
  }
}

/**
 * Upper-cases ASCII letters only. String#toUpperCase maps look-alikes ('ſ' to 'S', 'ı' to 'I'),
 * so 'PAUſE' would run PAUSE while every log and audit line shows another word.
 */
function asciiUpper(word: string): string {
  return word.replace(/[a-z]/g, (ch) => String.fromCharCode(ch.charCodeAt(0) - 32));
}
