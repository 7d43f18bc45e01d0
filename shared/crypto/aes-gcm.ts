/**
 * AES-256-GCM over one whole frame, written into memory the caller provides. The engine is OpenSSL's
 * EVP interface called through @ronomon/crypto-async's synchronous binding, which encrypts a source
 * range into a target range (in place when they are the same) in one call. Node's own `cipher.update`
 * returns a fresh buffer per call, and those allocations cost more than the cipher itself: on this
 * project's bench machine Node's API gave 1.1-1.7 GB/s per CPU second where the binding gives
 * 3.5-4.4 GB/s, as fast as `openssl speed`. Where the binding cannot load, node:crypto does the same
 * computation (same bytes, same tags); `AesGcmEngine` says which one runs.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { createRequire } from 'node:module';

/**
 * The binding's cipher call: with 19 arguments it runs on this thread and returns; with a 20th, a
 * callback, it runs on libuv's thread pool and calls back (an error, or the target size).
 */
interface CryptoAsync {
  cipher(
    algorithm: string, encrypt: 0 | 1,
    key: Buffer, keyOffset: number, keySize: number,
    iv: Buffer, ivOffset: number, ivSize: number,
    source: Buffer, sourceOffset: number, sourceSize: number,
    target: Buffer, targetOffset: number,
    aad: Buffer, aadOffset: number, aadSize: number,
    tag: Buffer, tagOffset: number, tagSize: number,
    end?: (error: Error | undefined, targetSize: number) => void,
  ): number;
  E_CORRUPT: string;
}

function loadBinding(): CryptoAsync | undefined {
  if (process.env.LIFEBOAT_AES_ENGINE === 'node') return undefined;
  try {
    return createRequire(import.meta.url)('@ronomon/crypto-async') as CryptoAsync;
  } catch {
    return undefined;
  }
}

const binding = loadBinding();
/**
 * The binding aborts the process on a buffer with no memory behind it (an empty one): empty sources
 * and targets are passed as zero bytes of this one instead.
 */
const Guard = Buffer.alloc(16);
const Algorithm = 'aes-256-gcm';
export const GcmTagBytes = 16;

/** Which implementation seals and opens frames: 'openssl' (the binding) or 'node' (node:crypto). */
export const AesGcmEngine: 'openssl' | 'node' = binding ? 'openssl' : 'node';

/**
 * Encrypts plaintext into target at targetOffset (the same bytes may be passed as both, to seal in
 * place) and writes the 16-byte tag into tag at tagOffset.
 */
export function gcmSeal(key: Buffer, nonce: Buffer, aad: Buffer, plaintext: Buffer, target: Buffer, targetOffset: number, tag: Buffer, tagOffset: number): void {
  if (target.length - targetOffset < plaintext.length) throw new RangeError('the target is shorter than the plaintext');
  if (binding) {
    const empty = plaintext.length === 0;
    binding.cipher(Algorithm, 1, key, 0, key.length, nonce, 0, nonce.length, empty ? Guard : plaintext, 0, plaintext.length, empty ? Guard : target, empty ? 0 : targetOffset, aad, 0, aad.length, tag, tagOffset, GcmTagBytes);
    return;
  }
  const cipher = createCipheriv(Algorithm, key, nonce, { authTagLength: GcmTagBytes });
  cipher.setAAD(aad);
  updateInto(cipher, plaintext, target, targetOffset);
  cipher.final();
  cipher.getAuthTag().copy(tag, tagOffset);
}

/**
 * Decrypts ciphertext into target at targetOffset (in place when they are the same bytes) and checks
 * the tag. False when the tag does not verify; the target then holds bytes that must not be used.
 */
export function gcmOpen(key: Buffer, nonce: Buffer, aad: Buffer, ciphertext: Buffer, target: Buffer, targetOffset: number, tag: Buffer): boolean {
  if (target.length - targetOffset < ciphertext.length) throw new RangeError('the target is shorter than the ciphertext');
  if (tag.length !== GcmTagBytes) return false;
  if (binding) {
    try {
      const empty = ciphertext.length === 0;
      binding.cipher(Algorithm, 0, key, 0, key.length, nonce, 0, nonce.length, empty ? Guard : ciphertext, 0, ciphertext.length, empty ? Guard : target, empty ? 0 : targetOffset, aad, 0, aad.length, tag, 0, GcmTagBytes);
      return true;
    } catch (err) {
      if (err instanceof Error && err.message === binding.E_CORRUPT) return false;
      throw err;
    }
  }
  const decipher = createDecipheriv(Algorithm, key, nonce, { authTagLength: GcmTagBytes });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  updateInto(decipher, ciphertext, target, targetOffset);
  try {
    decipher.final();
    return true;
  } catch {
    return false;
  }
}

/**
 * gcmOpen off this thread: the binding runs it on libuv's thread pool, so a reader can open the next
 * frame while it works on this one. The caller must leave every buffer passed untouched until the
 * promise settles. Without the binding it is gcmOpen on this thread.
 */
export function gcmOpenAsync(key: Buffer, nonce: Buffer, aad: Buffer, ciphertext: Buffer, target: Buffer, targetOffset: number, tag: Buffer): Promise<boolean> {
  if (!binding || ciphertext.length === 0 || tag.length !== GcmTagBytes) return Promise.resolve(gcmOpen(key, nonce, aad, ciphertext, target, targetOffset, tag));
  if (target.length - targetOffset < ciphertext.length) throw new RangeError('the target is shorter than the ciphertext');
  return new Promise((resolve, reject) => {
    binding.cipher(Algorithm, 0, key, 0, key.length, nonce, 0, nonce.length, ciphertext, 0, ciphertext.length, target, targetOffset, aad, 0, aad.length, tag, 0, GcmTagBytes, (error) => {
      if (error === undefined || error === null) resolve(true);
      else if (error.message === binding.E_CORRUPT) resolve(false);
      else reject(error);
    });
  });
}

/**
 * node:crypto's bytes per update: each call allocates its output, and at 64 KiB those come from the
 * allocator's free lists instead of fresh pages.
 */
const NodeUpdateBytes = 64 * 1024;

/** node:crypto's update over input in NodeUpdateBytes steps, each output copied into target from at. */
function updateInto(c: { update(data: Buffer): Buffer }, input: Buffer, target: Buffer, at: number): void {
  for (let i = 0; i < input.length; i += NodeUpdateBytes) at += c.update(input.subarray(i, i + NodeUpdateBytes)).copy(target, at);
}
