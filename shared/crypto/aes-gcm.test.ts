import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type * as AesGcm from './aes-gcm.js';

type Engine = typeof AesGcm;

/** The module as loaded with LIFEBOAT_AES_ENGINE set (or not): the binding, or node:crypto. */
async function engine(forceNode: boolean): Promise<Engine> {
  vi.resetModules();
  if (forceNode) vi.stubEnv('LIFEBOAT_AES_ENGINE', 'node');
  return import('./aes-gcm.js');
}

/** node:crypto's AES-256-GCM in one go: the reference both engines must match byte for byte. */
function reference(key: Buffer, nonce: Buffer, aad: Buffer, plaintext: Buffer): { ciphertext: Buffer; tag: Buffer } {
  const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
  c.setAAD(aad);
  const ciphertext = Buffer.concat([c.update(plaintext), c.final()]);
  return { ciphertext, tag: c.getAuthTag() };
}

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('AES-256-GCM engine', () => {
  it('runs on the OpenSSL binding on this machine (a silent fallback would cost 2-3x in every seal and open)', async () => {
    expect((await engine(false)).AesGcmEngine).toBe('openssl');
    expect((await engine(true)).AesGcmEngine).toBe('node');
  });

  for (const forceNode of [false, true]) {
    describe(forceNode ? 'node:crypto fallback' : 'OpenSSL binding', () => {
      it('seals and opens exactly as node:crypto does, at any length and offset, in place or not', async () => {
        const { gcmOpen, gcmSeal } = await engine(forceNode);
        await fc.assert(
          fc.asyncProperty(fc.integer({ min: 0, max: 200_000 }), fc.integer({ min: 0, max: 64 }), fc.boolean(), async (length, offset, inPlace) => {
            const key = randomBytes(32);
            const nonce = randomBytes(12);
            const aad = randomBytes(41);
            const plaintext = randomBytes(length);
            const want = reference(key, nonce, aad, plaintext);

            const target = Buffer.alloc(offset + length + 16 + 8);
            const source = inPlace ? target.subarray(offset, offset + length) : plaintext;
            if (inPlace) plaintext.copy(target, offset);
            gcmSeal(key, nonce, aad, source, target, offset, target, offset + length);
            expect(target.subarray(offset, offset + length).equals(want.ciphertext)).toBe(true);
            expect(target.subarray(offset + length, offset + length + 16).equals(want.tag)).toBe(true);

            const opened = Buffer.alloc(length + offset);
            expect(gcmOpen(key, nonce, aad, want.ciphertext, opened, offset, want.tag)).toBe(true);
            expect(opened.subarray(offset).equals(plaintext)).toBe(true);
          }),
          { numRuns: 40 },
        );
      });

      it('refuses a flipped bit in the ciphertext, the tag, the nonce or the associated data', async () => {
        const { gcmOpen } = await engine(forceNode);
        const key = randomBytes(32);
        const nonce = randomBytes(12);
        const aad = randomBytes(41);
        const { ciphertext, tag } = reference(key, nonce, aad, randomBytes(4096));
        const flip = (b: Buffer, at: number): Buffer => {
          const c = Buffer.from(b);
          c[at]! ^= 1;
          return c;
        };
        const out = Buffer.alloc(4096);
        expect(gcmOpen(key, nonce, aad, ciphertext, out, 0, tag)).toBe(true);
        expect(gcmOpen(key, nonce, aad, flip(ciphertext, 1000), out, 0, tag)).toBe(false);
        expect(gcmOpen(key, nonce, aad, ciphertext, out, 0, flip(tag, 15))).toBe(false);
        expect(gcmOpen(key, flip(nonce, 3), aad, ciphertext, out, 0, tag)).toBe(false);
        expect(gcmOpen(key, nonce, flip(aad, 40), ciphertext, out, 0, tag)).toBe(false);
        expect(gcmOpen(key, nonce, aad, ciphertext, out, 0, tag.subarray(0, 12))).toBe(false);
      });

      it('opens what the other engine sealed', async () => {
        const { gcmSeal } = await engine(forceNode);
        const key = randomBytes(32);
        const nonce = randomBytes(12);
        const aad = randomBytes(41);
        const plaintext = randomBytes(1 << 20);
        const sealed = Buffer.alloc(plaintext.length + 16);
        gcmSeal(key, nonce, aad, plaintext, sealed, 0, sealed, plaintext.length);
        const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
        d.setAAD(aad);
        d.setAuthTag(sealed.subarray(plaintext.length));
        expect(Buffer.concat([d.update(sealed.subarray(0, plaintext.length)), d.final()]).equals(plaintext)).toBe(true);
      });
    });
  }
});
