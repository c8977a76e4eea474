/**
 * Statement-scope policy engine: which OAuth scopes may run which SQL, and under which role.
 * docs/policy.md describes the policy language.
 */
export { initParser, parseCount } from './parse.js';
export { PolicyStore, type PolicyStoreOptions } from './store.js';
export { classifySql, type StatementInfo, type SessionEffect } from './classify.js';
export { runCheck, type CheckIo } from './check-cli.js';
export { parsePolicy, parsePolicyText, loadPolicyFile } from './schema.js';
export { READ_ONLY_BUILTINS, FORBIDDEN_FUNCTIONS, isForbiddenFunction } from './builtins.js';
export type { Access, Action, BindCheck, Claims, ColumnCatalog, Decision, Mask, Policy, RowFilter, Rule, ScopePolicy, StatementDecision } from './types.js';
export { ACTIONS } from './types.js';
