/** Public surface of scopegate's OAuth 2.0 authentication module. */
export { AuthError, isAuthError, type AuthCheck } from './errors.js';
export {
  parseAuthConfig, parseDuration, resolveSecret,
  type AuthConfig, type Mechanism, type KeySourceConfig, type IntrospectionConfig, type MechanismRule, type FailureDelayConfig,
} from './config.js';
export { type Identity, isExpired } from './identity.js';
export { TokenVerifier, sha256Hex, MAX_TOKEN_LENGTH, type TokenVerifierOptions, type VerifierStats, type VerifyContext } from './verifier.js';
export { claimAt, extractScopes, checkUser } from './scopes.js';
export {
  OAUTHBEARER, KVSEP, MAX_OAUTHBEARER_MESSAGE, parseOAuthBearerInitial, oauthBearerFailure, checkOAuthBearerErrorAck,
  oauthBearerInitialResponse, discoveryUrlFor, type OAuthBearerInitial,
} from './oauthbearer.js';
export { chooseMechanism, isTransportAllowed, isLoopback, type ConnInfo } from './mechanism.js';
export { FailureLimiter } from './limiter.js';
export { mintDevToken, runToken, hasDevKey, loadAuthConfigFile, DevKeyMissingError, type DevTokenOptions, type TokenIo } from './devtoken.js';
export { parseCidr, cidrContains, parseAddress } from './net.js';
