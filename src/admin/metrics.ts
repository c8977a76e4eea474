/** Prometheus metrics: prom-client's process metrics plus scopegate_*, all read from server state at scrape time. */
import { collectDefaultMetrics, Registry, type Metric } from 'prom-client';
import { DecisionKind } from '../policy/gate.js';
import { TIME_BUCKETS, type Buckets } from '../pool/database-pool.js';
import { preparedTotals } from './show.js';
import { clientState, poolCounts, poolEntries, poolLabels, type AdminServer } from './stats.js';

type Labels = Record<string, string>;
interface Value { labels: Labels; value: number; metricName?: string }
type MetricType = 'counter' | 'gauge' | 'histogram';

/**
 * A metric whose values are computed when scraped. Nothing is counted through prom-client on
 * the hot path: sessions and pools increment plain numbers (no label hashing, no allocation
 * per message or transaction), and this reads them. Label values come from the config
 * (database names, server roles) or the policy (scope names), never from clients.
 */
class Collected {
  /** How workers' values combine (workers: N): counts add up; a state every worker reports once does not. */
  constructor(readonly name: string, readonly help: string, readonly type: MetricType, private readonly read: () => Value[], readonly aggregator: 'sum' | 'max' = 'sum') {}
  get(): { name: string; help: string; type: MetricType; values: Value[]; aggregator: string } {
    return { name: this.name, help: this.help, type: this.type, values: this.read(), aggregator: this.aggregator };
  }
}

function histogram(name: string, labels: Labels, b: Buckets): Value[] {
  const out: Value[] = [];
  let cumulative = 0;
  for (let i = 0; i < TIME_BUCKETS.length; i++) {
    cumulative += b.counts[i]!;
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: String(TIME_BUCKETS[i]) }, value: cumulative });
  }
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: b.count });
  out.push({ metricName: `${name}_sum`, labels, value: b.sum });
  out.push({ metricName: `${name}_count`, labels, value: b.count });
  return out;
}

const DECISIONS: ReadonlyArray<[DecisionKind, string]> = [[DecisionKind.Allow, 'allow'], [DecisionKind.Deny, 'deny'], [DecisionKind.WouldDeny, 'would_deny']];

/** The registry /metrics serves. */
export function createMetrics(srv: AdminServer): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const add = (name: string, help: string, type: MetricType, read: () => Value[], aggregator: 'sum' | 'max' = 'sum'): void => {
    registry.registerMetric(new Collected(name, help, type, read, aggregator) as unknown as Metric);
  };
  const perPool = (f: (e: ReturnType<typeof poolEntries>[number], labels: Labels) => Value[]): (() => Value[]) => () =>
    poolEntries(srv).flatMap((e) => f(e, poolLabels(e)));

  add('scopegate_client_connections', 'Client connections by pool and state (active: linked to a server or idle between transactions as PgBouncer counts cl_active; waiting: for a server).', 'gauge', () => {
    const out: Value[] = [];
    for (const e of poolEntries(srv)) {
      const c = poolCounts(srv, e);
      const labels = poolLabels(e);
      out.push({ labels: { ...labels, state: 'active' }, value: c.clActive }, { labels: { ...labels, state: 'waiting' }, value: c.clWaiting });
    }
    return out;
  });
  add('scopegate_clients_logging_in', 'Client connections still in startup or authentication.', 'gauge', () => {
    let n = 0;
    for (const c of srv.sessions()) if (clientState(c) === 'login') n++;
    return [{ labels: {}, value: n }];
  });
  add('scopegate_console_clients', 'Clients logged in to the admin console.', 'gauge', () => {
    let n = 0;
    for (const c of srv.sessions()) if (c.console !== null) n++;
    return [{ labels: {}, value: n }];
  });
  add('scopegate_clients_waiting', 'Clients waiting for a server connection (cl_waiting).', 'gauge', perPool((e, labels) => [{ labels, value: e.pool.waiting().count }]));
  add('scopegate_server_connections', 'Server connections by pool and state (active, idle, tested: being reset or drained, login).', 'gauge', () => {
    const out: Value[] = [];
    for (const e of poolEntries(srv)) {
      const c = poolCounts(srv, e);
      const labels = poolLabels(e);
      out.push({ labels: { ...labels, state: 'active' }, value: c.svActive }, { labels: { ...labels, state: 'idle' }, value: c.svIdle },
        { labels: { ...labels, state: 'tested' }, value: c.svTested }, { labels: { ...labels, state: 'login' }, value: c.svLogin });
    }
    return out;
  });
  add('scopegate_client_wait_seconds', 'Time clients waited for a server connection, per transaction.', 'histogram', perPool((e, labels) => histogram('scopegate_client_wait_seconds', labels, e.pool.counters.wait)));
  add('scopegate_transaction_duration_seconds', 'Time a server connection was held for one transaction.', 'histogram', perPool((e, labels) => histogram('scopegate_transaction_duration_seconds', labels, e.pool.counters.xactTime)));
  add('scopegate_transactions_total', 'Transactions that ended (ReadyForQuery idle).', 'counter', perPool((e, labels) => [{ labels, value: e.pool.counters.xacts }]));
  add('scopegate_queries_total', 'Query and Execute messages sent to servers.', 'counter', perPool((e, labels) => [{ labels, value: e.pool.counters.queries }]));
  add('scopegate_server_assignments_total', 'Times a server connection was handed to a client.', 'counter', perPool((e, labels) => [{ labels, value: e.pool.counters.assignments }]));
  add('scopegate_client_output_stalls_total', "Times a client's input was set aside because it was not reading what it was sent (its socket full): a slow or stuck reader.", 'counter', perPool((e, labels) => [{ labels, value: e.pool.counters.clientOutputStalls }]));
  add('scopegate_partial_message_bytes', 'Bytes held for client messages not yet whole, all clients together (pool.max_partial_message_bytes bounds it).', 'gauge', () => [{ labels: {}, value: srv.partialBytes.used }]);
  add('scopegate_server_login_failures_total', 'Server logins that failed.', 'counter', perPool((e, labels) => [{ labels, value: e.pool.counters.loginFailures }]));
  add('scopegate_prepared_statements', 'Prepared statements held on server connections.', 'gauge', perPool((e, labels) => {
    let held = 0;
    for (const b of e.pool.servers) held += b.prepared.size;
    return [{ labels, value: held }];
  }));
  add('scopegate_prepared_statements_parsed_total', "Parse messages scopegate sent for clients' prepared statements.", 'counter', () => [{ labels: {}, value: preparedTotals().parses }]);
  add('scopegate_prepared_statements_reprepared_total', 'Prepared statements parsed again on a server connection that did not have them.', 'counter', () => [{ labels: {}, value: preparedTotals().reprepared }]);
  add('scopegate_scope_decisions_total', 'Statement decisions by decision (allow, deny, would_deny) and scope ("" when no scope took it).', 'counter', () => {
    const out: Value[] = [];
    for (const [scope, row] of srv.gate.counts().decisions) for (const [k, decision] of DECISIONS) out.push({ labels: { decision, scope }, value: row[k]! });
    return out;
  });
  add('scopegate_auth_failures_total', 'Failed client logins by the check that failed.', 'counter', () => [...srv.gate.counts().authFailures].map(([check, value]) => ({ labels: { check }, value })));
  add('scopegate_jwks_fetches_total', 'HTTP fetches of signing keys (JWKS and discovery).', 'counter', () => [{ labels: {}, value: srv.gate.counts().keyFetches }]);
  add('scopegate_policy_info', 'The policy in force (1, labelled with its version; no series without a policy).', 'gauge', () => {
    const p = srv.control?.policy ?? null;
    return p === null ? [] : [{ labels: { version: p.version }, value: 1 }];
  }, 'max');
  add('scopegate_policy_source_stale', 'policy_source only: 1 while the source cannot be read (the running policy may be behind), else 0.', 'gauge', () => {
    const f = srv.control?.policySource;
    return f == null ? [] : [{ labels: {}, value: f.stale ? 1 : 0 }];
  }, 'max');
  add('scopegate_policy_source_invalid_versions_total', 'policy_source only: versions read from the source that did not validate (the running policy was kept).', 'counter', () => {
    const f = srv.control?.policySource;
    return f == null ? [] : [{ labels: {}, value: f.invalidVersions }];
  });
  add('scopegate_policy_reload_failures_total', 'Policy reloads that failed (the running policy was kept).', 'counter', () => [{ labels: {}, value: srv.control?.policyReloadFailures ?? 0 }]);
  add('scopegate_decision_thread_jobs_total', 'Texts decided by the parser threads.', 'counter', () => [{ labels: {}, value: srv.gate.counts().threads?.jobs ?? 0 }]);
  add('scopegate_decision_thread_failures_total', 'Parser-thread jobs that failed.', 'counter', () => [{ labels: {}, value: srv.gate.counts().threads?.failed ?? 0 }]);
  add('scopegate_peer_cancel_forwards_total', 'CancelRequests forwarded to the peer that issued the key (peer_id / peers).', 'counter', () => [{ labels: {}, value: srv.peers?.forwarded ?? 0 }]);
  add('scopegate_peer_cancel_forward_failures_total', 'Forwards to a peer that failed (connection refused, timeout).', 'counter', () => [{ labels: {}, value: srv.peers?.failed ?? 0 }]);
  add('scopegate_peer_cancel_drops_total', 'CancelRequests no local client held and that were not forwarded, by reason (unknown_key, unknown_peer, hop_limit, forward_limit).', 'counter', () => [...(srv.peers?.dropped ?? [])].map(([reason, value]) => ({ labels: { reason }, value })));
  add('scopegate_decision_thread_restarts_total', 'Parser threads replaced.', 'counter', () => [{ labels: {}, value: srv.gate.counts().threads?.restarts ?? 0 }]);
  return registry;
}
