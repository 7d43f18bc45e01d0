/**
 * Wrapping a data key to a recipient: a compact JWE (`ECDH-ES+A256KW`, `A256GCM`) whose payload is the
 * 32-byte data key, made and opened by jose. Nothing here is hand-written cryptography.
 */
import { CompactEncrypt, compactDecrypt, importJWK } from 'jose';
import { ErrTampered } from '../errors.js';
import { KeyWrapAlgorithm, type PrivateJwk, type PublicJwk } from './keys.js';

export const DataKeyBytes = 32;

/** The data key as a compact JWE to the recipient's public key. */
export async function wrapDataKey(dataKey: Uint8Array, recipient: PublicJwk): Promise<string> {
  const key = await importJWK(recipient, KeyWrapAlgorithm);
  return new CompactEncrypt(dataKey).setProtectedHeader({ alg: KeyWrapAlgorithm, enc: 'A256GCM' }).encrypt(key);
}

/**
 * The data key inside a JWE. Anything that fails (another recipient's object, an altered JWE, a JWE
 * with other algorithms) is `tampered`, since an honest writer never produces it.
 */
export async function unwrapDataKey(jwe: string, privateKey: PrivateJwk): Promise<Buffer> {
  let plaintext: Uint8Array;
  try {
    const key = await importJWK(privateKey, KeyWrapAlgorithm);
    ({ plaintext } = await compactDecrypt(jwe, key, { keyManagementAlgorithms: [KeyWrapAlgorithm], contentEncryptionAlgorithms: ['A256GCM'] }));
  } catch (err) {
    throw ErrTampered('cannot unwrap the data key: not sealed to this key, or the key wrap was altered', err);
  }
  if (plaintext.length !== DataKeyBytes) throw ErrTampered(`the wrapped data key is ${plaintext.length} bytes, not ${DataKeyBytes}`);
  return Buffer.from(plaintext);
}
