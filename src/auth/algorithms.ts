/** Which JWS algorithms a key type can verify: the allow-list check behind `alg`. */
import type { KeyObject } from 'node:crypto';

const RSA_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];

/** Which JWS algorithms a given asymmetric key can verify. */
export function algorithmsForKey(key: KeyObject): string[] {
  switch (key.asymmetricKeyType) {
    case 'rsa': return RSA_ALGS;
    case 'rsa-pss': return ['PS256', 'PS384', 'PS512'];
    case 'ed25519': return ['EdDSA', 'Ed25519'];
    case 'ec': {
      const crv = key.asymmetricKeyDetails?.namedCurve;
      if (crv === 'prime256v1' || crv === 'P-256') return ['ES256'];
      if (crv === 'secp384r1' || crv === 'P-384') return ['ES384'];
      if (crv === 'secp521r1' || crv === 'P-521') return ['ES512'];
      return [];
    }
    default: return [];
  }
}
