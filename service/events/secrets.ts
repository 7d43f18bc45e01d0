/**
 * Subscription secrets at rest: a `whsec_…` secret is sealed with AES-256-GCM (node:crypto) under a
 * key derived from the service's master key (HKDF-SHA256, info "lifeboat webhook secrets v1"), with
 * the subscription id as associated data, so a sealed secret copied to another row does not open.
 * Stored as `v1.<base64 nonce|ciphertext|tag>`. The secret is shown once, when it is made.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { LifeboatError } from '../../shared/errors.js';

const Info = 'lifeboat webhook secrets v1';
const NonceBytes = 12;
const TagBytes = 16;

function keyOf(masterKey: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), Info, 32));
}

export function sealSecret(masterKey: Buffer, subscriptionId: string, secret: string): string {
  const nonce = randomBytes(NonceBytes);
  const cipher = createCipheriv('aes-256-gcm', keyOf(masterKey), nonce, { authTagLength: TagBytes });
  cipher.setAAD(Buffer.from(subscriptionId));
  const ct = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()]);
  return `v1.${Buffer.concat([nonce, ct, cipher.getAuthTag()]).toString('base64')}`;
}

/**
 * Opens a sealed secret with the master key, or with each key of a ring (the current first): during a
 * master key rotation a secret may still be sealed under the previous key (GCM refuses a wrong one).
 */
export function openSecret(masterKey: Buffer | Buffer[], subscriptionId: string, sealed: string): string {
  const raw = Buffer.from(sealed.replace(/^v1\./, ''), 'base64');
  let failure: unknown = new Error('malformed');
  if (sealed.startsWith('v1.') && raw.length >= NonceBytes + TagBytes) {
    for (const key of Array.isArray(masterKey) ? masterKey : [masterKey]) {
      try {
        const decipher = createDecipheriv('aes-256-gcm', keyOf(key), raw.subarray(0, NonceBytes), { authTagLength: TagBytes });
        decipher.setAAD(Buffer.from(subscriptionId));
        decipher.setAuthTag(raw.subarray(raw.length - TagBytes));
        return Buffer.concat([decipher.update(raw.subarray(NonceBytes, raw.length - TagBytes)), decipher.final()]).toString('utf8');
      } catch (err) {
        failure = err;
      }
    }
  }
  throw new LifeboatError('corrupt', `webhook subscription ${subscriptionId}: its secret does not open with this service's master key`, { cause: failure });
}
