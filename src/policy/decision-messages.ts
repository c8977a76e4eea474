/** The messages between the event loop and its decision workers. */
import type { WireEffects } from './session-effects.js';
import type { MadeDecision } from './store.js';
import type { CatalogData, Claims } from './types.js';

export type ToWorker =
  | { kind: 'policy'; text: string; version: string }
  | { kind: 'catalog'; data: CatalogData | null }
  /** Decide `sql` for these scopes and claims, and/or work out its session effects. */
  | { kind: 'job'; id: number; sql: string; scopes: readonly string[]; claims: Claims | undefined; decide: boolean; effects: boolean };

export type FromWorker =
  | { kind: 'ready' }
  /** `failed`: the statement could not be judged (the parser failed); refuse it. */
  | { kind: 'done'; id: number; made: MadeDecision | null; effects: WireEffects | null; failed: string | null };
