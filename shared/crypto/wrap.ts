/**
 * Wrapping a data key to a recipient: a compact JWE (`ECDH-ES+A256KW`, `A256GCM`) whose payload is the
 * 32-byte data key, made and opened by jose. Nothing here is hand-written cryptography.
 */
import { CompactEncrypt, compactDecrypt, decodeProtectedHeader, importJWK } from 'jose';
import { ErrTampered } from '../errors.js';
import { KeyWrapAlgorithm, type PrivateJwk, type PublicJwk, type RecipientKeys } from './keys.js';

export const DataKeyBytes = 32;

/** The data key as a compact JWE to the recipient's public key, naming it (`kid`) when the key has an id. */
export async function wrapDataKey(dataKey: Uint8Array, recipient: PublicJwk): Promise<string> {
  const key = await importJWK(recipient, KeyWrapAlgorithm);
  const kid = typeof recipient.kid === 'string' && recipient.kid.length > 0 ? { kid: recipient.kid } : {};
  return new CompactEncrypt(dataKey).setProtectedHeader({ alg: KeyWrapAlgorithm, enc: 'A256GCM', ...kid }).encrypt(key);
}

/** The keys to try for a wrap: the one its kid names first, then the others (a kid is not authenticated trust, only a hint). */
function candidates(jwe: string, keys: RecipientKeys): readonly PrivateJwk[] {
  const ring = Array.isArray(keys) ? keys as readonly PrivateJwk[] : [keys as PrivateJwk];
  let kid: unknown;
  try {
    kid = decodeProtectedHeader(jwe).kid;
  } catch {
    return ring;
  }
  const named = ring.filter((k) => k.kid === kid);
  return named.length === 0 ? ring : [...named, ...ring.filter((k) => k.kid !== kid)];
}

/**
 * The data key inside a JWE. Anything that fails (another recipient's object, an altered JWE, a JWE
 * with other algorithms) is `tampered`, since an honest writer never produces it.
 */
export async function unwrapDataKey(jwe: string, keys: RecipientKeys): Promise<Buffer> {
  let plaintext: Uint8Array | undefined;
  let failure: unknown;
  for (const privateKey of candidates(jwe, keys)) {
    try {
      const key = await importJWK(privateKey, KeyWrapAlgorithm);
      ({ plaintext } = await compactDecrypt(jwe, key, { keyManagementAlgorithms: [KeyWrapAlgorithm], contentEncryptionAlgorithms: ['A256GCM'] }));
      break;
    } catch (err) {
      failure = err;
    }
  }
  if (plaintext === undefined) throw ErrTampered('cannot unwrap the data key: not sealed to this key, or the key wrap was altered', failure);
  if (plaintext.length !== DataKeyBytes) throw ErrTampered(`the wrapped data key is ${plaintext.length} bytes, not ${DataKeyBytes}`);
  return Buffer.from(plaintext);
}
