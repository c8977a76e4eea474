/** The wire side of OAuth login: cleartext-password or SASL OAUTHBEARER exchange with the client. */
import type { Logger } from 'pino';
import {
  AuthError, checkOAuthBearerErrorAck, checkUser, chooseMechanism, FailureLimiter, isTransportAllowed,
  oauthBearerFailure, OAUTHBEARER, parseOAuthBearerInitial, TokenVerifier, type AuthConfig, type Identity,
} from './index.js';
import { SqlError, SQLSTATE } from '../errors.js';
import * as msg from '../protocol/messages.js';

/** The client asked for the issuer's metadata (empty `auth=`); answered, then refused. */
class DiscoveryRequest extends AuthError {
  constructor() {
    super('token required', { message: 'OAuth bearer authentication failed: no token (discovery request)' });
  }
}

/** The parts of a client session the authentication exchange talks to. */
export interface AuthPeer {
  readonly address: string;
  readonly user: string;
  readonly database: string;
  /** The connection's TLS (null: plain TCP), as the front door negotiated it. */
  readonly tls: { readonly version: string } | null;
  send(data: Buffer): void;
  readAuthMessage(): Promise<{ type: number; body: Buffer }>;
}

/**
 * The wire side of OAuth login: asks for the token as a cleartext password or runs SASL
 * OAUTHBEARER the way PostgreSQL 18 does, verifies it, and slows down repeated failures.
 */
export class ClientAuthenticator {
  readonly verifier: TokenVerifier;
  private readonly limiter: FailureLimiter;
  /** Failed logins by the check that failed (a fixed set of names, or a SQLSTATE): metrics. */
  readonly failures = new Map<string, number>();

  constructor(readonly cfg: AuthConfig, private readonly log: Logger) {
    this.verifier = new TokenVerifier(cfg, { logger: log });
    this.limiter = new FailureLimiter(cfg.failureDelay);
  }

  async authenticate(peer: AuthPeer): Promise<Identity> {
    try {
      if (!isTransportAllowed(this.cfg, { address: peer.address, tls: peer.tls !== null })) {
        throw new AuthError('transport not allowed', { hint: 'A token may not cross plain TCP: enable client_tls in scopegate\'s config and connect with sslmode=verify-full (or from loopback; auth.allow_insecure allows it anyway).' });
      }
      const mechanism = chooseMechanism(this.cfg, { database: peer.database, user: peer.user, address: peer.address });
      const identity = mechanism === 'password' ? await this.password(peer) : await this.oauthBearer(peer);
      this.limiter.recordSuccess(peer.address);
      return identity;
    } catch (err) {
      const e = err instanceof SqlError ? err : new AuthError('malformed token');
      if (err instanceof DiscoveryRequest) {
        // libpq 18 asks for discovery before each OAuth flow: not an attack, not slowed down.
        this.log.info({ addr: peer.address, user: peer.user, db: peer.database }, 'OAUTHBEARER discovery request answered');
        throw e;
      }
      const check = err instanceof AuthError ? err.check : e.code;
      this.failures.set(check, (this.failures.get(check) ?? 0) + 1);
      const delay = this.limiter.recordFailure(peer.address);
      this.log.warn({ addr: peer.address, user: peer.user, db: peer.database, check, delay_ms: delay }, 'authentication failed');
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      throw e;
    }
  }

  private async password(peer: AuthPeer): Promise<Identity> {
    peer.send(msg.authenticationCleartextPassword());
    const { body } = await peer.readAuthMessage();
    const nul = body.indexOf(0);
    const token = body.toString('utf8', 0, nul < 0 ? body.length : nul);
    if (token === '') throw new AuthError('token required', { hint: 'Send the OAuth access token as the password.' });
    const identity = await this.verifier.verify(token, { address: peer.address, user: peer.user });
    checkUser(this.cfg, identity, peer.user);
    return identity;
  }

  private async oauthBearer(peer: AuthPeer): Promise<Identity> {
    peer.send(msg.authenticationSASL([OAUTHBEARER]));
    const { body } = await peer.readAuthMessage();
    // SASLInitialResponse: mechanism name, int32 length (-1: none), data.
    const nul = body.indexOf(0);
    if (nul < 0 || body.length < nul + 5) throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, 'malformed SASLInitialResponse', { severity: 'FATAL' });
    const mech = body.toString('utf8', 0, nul);
    if (mech !== OAUTHBEARER) throw new SqlError(SQLSTATE.PROTOCOL_VIOLATION, `client selected an invalid SASL authentication mechanism "${mech}"`, { severity: 'FATAL' });
    const len = body.readInt32BE(nul + 1);
    const data = len < 0 ? Buffer.alloc(0) : body.subarray(nul + 5, nul + 5 + len);
    const initial = parseOAuthBearerInitial(data);
    let failure: AuthError;
    if (initial.kind === 'token' && initial.authzid !== null) {
      // PostgreSQL refuses an authorization identity too; the startup user is the identity.
      throw new SqlError(SQLSTATE.FEATURE_NOT_SUPPORTED, 'client uses authorization identity, but it is not supported', { severity: 'FATAL' });
    }
    if (initial.kind === 'token') {
      try {
        // As in PostgreSQL, a user mismatch is a validation failure: it gets the challenge too.
        const identity = await this.verifier.verify(initial.token, { address: peer.address, user: peer.user });
        checkUser(this.cfg, identity, peer.user);
        return identity;
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        failure = err;
      }
    } else {
      failure = new DiscoveryRequest();
    }
    // RFC 7628 error exchange: challenge, the client's lone \x01, then the error.
    peer.send(msg.authenticationSASLContinue(oauthBearerFailure(this.cfg.issuer ?? '', this.cfg.oauthbearerScope)));
    const ack = await peer.readAuthMessage();
    checkOAuthBearerErrorAck(ack.body);
    throw failure;
  }
}
