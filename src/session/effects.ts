/** The one owner of a client's session state: its settings, and statements' effects until the server confirms them. */
import type { Backend } from '../backend/backend.js';
import type { SessionEffects } from '../policy/session-effects.js';
import type { SettingMap } from './settings.js';

/**
 * The gate says what a statement *would* do to the session; this ledger records it only
 * once the server has done it. An effect travels with the message that runs it (a Query,
 * or the Execute of a portal bound to the statement), becomes tentative when that message
 * completes without error, and becomes the client's once its transaction commits. A refused
 * statement never reaches here; a failed or rolled-back one leaves nothing behind.
 *
 * Where the server's state may differ from what is recorded (an effectful message whose
 * outcome is unknown, a rollback that may have undone part of it), the server connection
 * is reset before anyone else gets it, and this client's recorded settings are replayed
 * on its next one: uncertain always means reset, never guess.
 */
export class SessionLedger {
  /**
   * The settings the client has, as the server confirmed them: name -> SET statement.
   * The startup settings themselves (often shared by many clients) until the first change:
   * `own` says whether this ledger has a copy of its own to write.
   */
  private current: ReadonlyMap<string, string>;
  private own = false;
  /** Effects confirmed by the server inside the open transaction, waiting for its end. */
  private tentative: SessionEffects[] = [];
  /** Effectful messages sent whose answer has not arrived. */
  private inFlight = 0;
  /** Effects of statements bound to portals (extended protocol), by portal name; made on first use. */
  private portals: Map<string, SessionEffects> | null = null;

  /** `startup` is read, never written: clients with the same startup settings may share it. */
  constructor(private readonly startup: ReadonlyMap<string, string>) {
    this.current = startup;
  }

  /** What a server connection must have applied to act for this client. */
  get settings(): ReadonlyMap<string, string> {
    return this.current;
  }

  /** Whether the settings are still the startup parameters, as the client connected with them. */
  get asStarted(): boolean {
    return !this.own;
  }

  /** The settings, as a map of this ledger's own to change. */
  private writable(): SettingMap {
    if (!this.own) {
      this.current = new Map(this.current);
      this.own = true;
    }
    return this.current as SettingMap;
  }

  /** A Bind of a statement with effects: they happen when the portal is executed. */
  bound(portal: string, fx: SessionEffects | null): void {
    if (fx !== null) (this.portals ??= new Map()).set(portal, fx);
    else if (this.portals !== null && this.portals.size !== 0) this.portals.delete(portal);
  }

  /** The effects an Execute of `portal` carries (null: none). */
  executing(portal: string): SessionEffects | null {
    return this.portals === null || this.portals.size === 0 ? null : this.portals.get(portal) ?? null;
  }

  get hasPortals(): boolean {
    return this.portals !== null && this.portals.size !== 0;
  }

  /**
   * A message carrying `fx` is going to `b`. Returns the callback that hears whether it
   * completed, or undefined when nothing waits for the answer.
   */
  sent(b: Backend, fx: SessionEffects): ((ok: boolean) => void) | undefined {
    // Temp objects, session locks, set_config ...: only a reset removes them, whatever happens next.
    if (fx.needsReset) b.requireReset();
    if (fx.needsClose) b.requireClose();
    if (fx.sequences) b.sequencesOf = b.owner;
    // A role switched inside the transaction reverts with it: what follows in the same
    // pipeline must set it again rather than trust it.
    if (fx.undo && b.roleUncertain) b.forgetContext();
    if (fx.resetAll) {
      // RESET ALL empties scopegate.claims (DISCARD ALL the role too) as soon as it runs.
      b.forgetContext();
    }
    if (fx.settings.length === 0 && !fx.resetAll) return undefined;
    this.inFlight++;
    return (ok) => {
      this.inFlight--;
      if (ok) this.tentative.push(fx);
      else b.requireReset(); // part of a multi-statement message may have run
    };
  }

  /**
   * The transaction on `b` ended (ReadyForQuery idle). Committed: the tentative effects
   * become the client's and `b`'s. Otherwise they are dropped, and `b` is reset before reuse.
   */
  transactionEnded(b: Backend, committed: boolean): void {
    if (this.portals !== null && this.portals.size !== 0) this.portals.clear();
    if (this.tentative.length === 0) return;
    const done = this.tentative;
    this.tentative = [];
    if (!committed) {
      b.requireReset();
      return;
    }
    for (const fx of done) {
      if (fx.resetAll) {
        this.current = this.startup;
        this.own = false;
        b.applied.clear();
      }
      for (const [name, stmt] of fx.settings) {
        if (stmt === null) {
          const initial = this.startup.get(name);
          if (initial !== undefined) this.writable().set(name, initial);
          else if (this.current.has(name)) this.writable().delete(name);
          b.applied.delete(name);
        } else {
          this.writable().set(name, stmt);
          b.applied.set(name, stmt);
        }
      }
    }
  }

  /** The client left `b` before its effects were settled: the server's state is unknown. */
  abandoned(b: Backend): void {
    if (this.inFlight !== 0 || this.tentative.length !== 0) b.requireReset();
    this.inFlight = 0;
    this.tentative = [];
    this.portals?.clear();
  }
}
