import { randomBytes } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LifeboatError } from '../errors.js';
import { scratchDir } from '../../test/helpers.js';
import {
  FrameSealer, generateKeyPair, loadPrivateKey, loadPublicKey, openStream, saveKeyPair, sealStream, type KeyPair,
} from './index.js';

const frameSize = 4096;
const frameBytes = frameSize + 16;
let pair: KeyPair;
let other: KeyPair;

beforeAll(async () => {
  pair = await generateKeyPair();
  other = await generateKeyPair();
});

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

function* chunked(data: Buffer, sizes: number[]): Generator<Buffer> {
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const n = Math.max(1, sizes[i % sizes.length] ?? 1);
    yield data.subarray(at, at + n);
    at += n;
  }
}

async function seal(plain: Buffer, context = Buffer.from('ctx'), sizes = [1000], key = pair): Promise<Buffer> {
  return collect(sealStream(chunked(plain, sizes), { recipient: key.publicKey, context, frameSize }));
}

async function open(sealed: Buffer, key = pair, sizes = [777]): Promise<{ context: Buffer; plain: Buffer }> {
  const opened = await openStream(chunked(sealed, sizes), { key: key.privateKey });
  return { context: opened.context, plain: await collect(opened.plaintext) };
}

async function openError(sealed: Buffer, key = pair): Promise<LifeboatError> {
  const err = await open(sealed, key).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(LifeboatError);
  return err as LifeboatError;
}

/** Header length: everything before frame 0. */
function headerLength(sealed: Buffer): number {
  return 24 + sealed.readUInt32LE(16) + sealed.readUInt32LE(20);
}

describe('envelope round trip', () => {
  it('returns the plaintext and context for sizes around frame boundaries', async () => {
    for (const n of [0, 1, frameSize - 1, frameSize, frameSize + 1, 3 * frameSize, 3 * frameSize + 5]) {
      const plain = randomBytes(n);
      const sealed = await seal(plain, Buffer.from(`context ${n}`), [333, 4096, 9000]);
      const frames = Math.max(1, Math.ceil(n / frameSize));
      expect(sealed.length).toBe(headerLength(sealed) + n + 16 * frames);
      const opened = await open(sealed);
      expect(opened.context.toString()).toBe(`context ${n}`);
      expect(opened.plain.equals(plain)).toBe(true);
    }
  });

  it('round-trips any plaintext cut into any chunks', async () => {
    await fc.assert(fc.asyncProperty(
      fc.uint8Array({ maxLength: 3 * frameSize + 100 }), fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 5 }),
      async (bytes, sizes) => {
        const plain = Buffer.from(bytes);
        const sealed = await seal(plain, Buffer.alloc(0), sizes);
        expect((await open(sealed, pair, sizes)).plain.equals(plain)).toBe(true);
      }), { numRuns: 25 });
  });

  it('round-trips producers that reuse chunks as soon as allowed, sealing whole frames in place', async () => {
    /** Yields copies of the chunks and overwrites each one as soon as the contract allows. */
    function* lending(data: Buffer, sizes: number[], keep: number): Generator<Buffer> {
      const lent: Buffer[] = [];
      for (let at = 0, i = 0; at < data.length; i++) {
        const n = sizes[i % sizes.length]!;
        const b = Buffer.from(data.subarray(at, at + n));
        at += n;
        yield b;
        lent.push(b);
        if (lent.length > keep) lent.shift()!.fill(0xee);
      }
    }
    const size = fc.constantFrom(0, 1, frameSize - 1, frameSize, frameSize + 1, 2 * frameSize, 2 * frameSize + 3);
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 0, max: 5 * frameSize }), fc.array(size, { minLength: 1, maxLength: 6 }), fc.boolean(),
      async (n, sizes, outlive) => {
        const plain = randomBytes(n);
        const chunks = lending(plain, [...sizes, frameSize], outlive ? 1 : 0);
        const sealed = await collect(sealStream(chunks, { recipient: pair.publicKey, frameSize, chunksOutliveNext: outlive }));
        expect(sealed.length).toBe(headerLength(sealed) + n + 16 * Math.max(1, Math.ceil(n / frameSize)));
        expect((await open(sealed)).plain.equals(plain)).toBe(true);
      }), { numRuns: 60 });
  });

  it('round-trips plaintext written into a FrameSealer in any pieces, reserved or pushed', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 0, max: 4 * frameSize + 10 }), fc.array(fc.integer({ min: 1, max: 2 * frameSize + 1 }), { minLength: 1, maxLength: 6 }), fc.boolean(),
      async (n, sizes, reserve) => {
        const plain = randomBytes(n);
        const sealer = await FrameSealer.create({ recipient: pair.publicKey, context: Buffer.from('ctx'), frameSize });
        const parts: Buffer[] = [];
        for (let at = 0, i = 0; at < n; i++) {
          const want = Math.min(sizes[i % sizes.length]!, n - at);
          if (reserve) {
            const slice = sealer.reserve(want);
            expect(slice.length).toBeGreaterThan(0);
            expect(slice.length).toBeLessThanOrEqual(want);
            plain.copy(slice, 0, at, at + slice.length);
            sealer.commit(slice.length);
            at += slice.length;
          } else {
            sealer.push(plain.subarray(at, at + want));
            at += want;
          }
          parts.push(...sealer.drain());
        }
        sealer.finish();
        parts.push(...sealer.drain());
        const sealed = Buffer.concat(parts);
        // Canonical framing: full frames, then a last frame of the remainder (full when n is a multiple).
        expect(sealed.length).toBe(headerLength(sealed) + n + 16 * Math.max(1, Math.ceil(n / frameSize)));
        const opened = await open(sealed);
        expect(opened.context.toString()).toBe('ctx');
        expect(opened.plain.equals(plain)).toBe(true);
      }), { numRuns: 60 });
  });
  it('round-trips through a source that reuses each chunk as soon as it is recycled', async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 0, max: 4 * frameSize + 10 }), fc.array(fc.integer({ min: 1, max: 2 * frameSize + 40 }), { minLength: 1, maxLength: 5 }),
      async (n, sizes) => {
        const plain = randomBytes(n);
        const sealed = await seal(plain);
        const free: Buffer[] = [];
        let recycled = 0;
        function* recycling(): Generator<Buffer> {
          for (let at = 0, i = 0; at < sealed.length; i++) {
            const k = Math.min(sizes[i % sizes.length]!, sealed.length - at);
            const big = free.pop() ?? Buffer.alloc(2 * frameSize + 40);
            sealed.copy(big, 0, at, at + k);
            at += k;
            yield big.subarray(0, k);
          }
        }
        // A recycled chunk is overwritten at once: anything still reading it would see garbage.
        const recycle = (c: Uint8Array) => { recycled++; const b = Buffer.from(c.buffer, c.byteOffset, 2 * frameSize + 40); b.fill(0xee); free.push(b); };
        const opened = await openStream(recycling(), { key: pair.privateKey, recycle });
        expect(opened.context.toString()).toBe('ctx');
        expect((await collect(opened.plaintext)).equals(plain)).toBe(true);
        if (sealed.length > 2 * (2 * frameSize + 40)) expect(recycled).toBeGreaterThan(0);
      }), { numRuns: 40 });
  });
  it('works with a P-256 recipient key', async () => {
    const p256 = await generateKeyPair('P-256');
    const plain = randomBytes(5000);
    expect((await open(await seal(plain, undefined, [5000], p256), p256)).plain.equals(plain)).toBe(true);
  });

  it('seals every object under a fresh data key', async () => {
    const plain = Buffer.alloc(100);
    const a = await seal(plain);
    const b = await seal(plain);
    expect(a.subarray(headerLength(a)).equals(b.subarray(headerLength(b)))).toBe(false);
  });
});

describe('envelope tampering', () => {
  const plain = randomBytes(3 * frameSize + 100); // frames 0..2 full, frame 3 short and last
  let sealed: Buffer;
  let h: number;
  beforeAll(async () => {
    sealed = await seal(plain, Buffer.from('tenant t1 vm v1 disk d1 generation 3 sequence 7'));
    h = headerLength(sealed);
  });
  const frameStart = (i: number) => h + i * frameBytes;

  it('fails on a flipped bit anywhere in the header, naming why', async () => {
    for (let at = 0; at < h; at++) {
      const bad = Buffer.from(sealed);
      bad[at]! ^= 0x10;
      const err = await openError(bad);
      if (at < 8) expect(err.code).toBe('corrupt');
      else if (at < 12) expect(err.code).toBe('unsupported');
      else expect(err.code).toBe('tampered');
      expect(err.message).toMatch(/magic|version|flags|frame size|length|truncated|unwrap|frame 0 failed authentication/);
    }
  });

  it('fails on a flipped bit in every frame body and tag, releasing nothing of that frame', async () => {
    for (let i = 0; i < 4; i++) {
      const end = i < 3 ? frameStart(i + 1) : sealed.length;
      for (const at of [frameStart(i), Math.min(frameStart(i) + 1000, end - 20), end - 17, end - 16, end - 1]) {
        const bad = Buffer.from(sealed);
        bad[at]! ^= 0x01;
        const released: Buffer[] = [];
        const err = await openStream([bad], { key: pair.privateKey })
          .then(async (o) => { for await (const p of o.plaintext) released.push(p); }).then(() => undefined, (e: unknown) => e);
        expect(err).toBeInstanceOf(LifeboatError);
        expect((err as LifeboatError).message).toBe(`frame ${i} failed authentication: the object was altered, its frames reordered or dropped, its header changed, or it was sealed with another key`);
        expect(Buffer.concat(released).equals(plain.subarray(0, i * frameSize))).toBe(true);
      }
    }
  });

  it('detects truncation at every frame boundary and inside frames', async () => {
    for (let i = 1; i < 4; i++) {
      expect((await openError(sealed.subarray(0, frameStart(i)))).message).toBe(`truncated after frame ${i - 1}: it was sealed as a frame with more to follow`);
    }
    expect((await openError(sealed.subarray(0, h))).message).toBe('truncated: the object has no frames');
    for (const cut of [h + 5, frameStart(1) + 15, frameStart(1) + 16, frameStart(2) + 2000, sealed.length - 1]) {
      const err = await openError(sealed.subarray(0, cut));
      expect(err.code).toBe('tampered');
      expect(err.message).toMatch(/truncated inside frame|failed authentication/);
    }
    for (const cut of [3, 10, 23, 30, h - 1]) expect((await openError(sealed.subarray(0, cut))).message).toMatch(/magic|truncated/);
  });

  it('detects appended bytes and appended frames', async () => {
    // A short last frame grows by what was appended, so its tag no longer matches.
    expect((await openError(Buffer.concat([sealed, Buffer.from([0])]))).message).toMatch(/^frame 3 failed authentication/);
    // A full last frame is followed by more: the reader says so.
    const exact = await seal(plain.subarray(0, 2 * frameSize));
    const lastFrame = exact.subarray(headerLength(exact) + frameBytes);
    expect((await openError(Buffer.concat([exact, Buffer.from([0])]))).message).toBe('data after the last frame: frame 1 was sealed as the last');
    expect((await openError(Buffer.concat([exact, lastFrame]))).message).toBe('data after the last frame: frame 1 was sealed as the last');
  });

  it('detects swapped, dropped and duplicated frames', async () => {
    const f = (i: number) => sealed.subarray(frameStart(i), i < 3 ? frameStart(i + 1) : sealed.length);
    const head = sealed.subarray(0, h);
    const cases: [Buffer, number][] = [
      [Buffer.concat([head, f(1), f(0), f(2), f(3)]), 0],
      [Buffer.concat([head, f(0), f(2), f(3)]), 1],
      [Buffer.concat([head, f(0), f(0), f(1), f(2), f(3)]), 1],
      [Buffer.concat([head, f(0), f(1), f(1), f(2), f(3)]), 2],
    ];
    for (const [bad, failing] of cases) expect((await openError(bad)).message).toMatch(new RegExp(`^frame ${failing} failed authentication`));
  });

  it('refuses a context replaced by another (a replay under another sequence)', async () => {
    const ctx = Buffer.from('tenant t1 vm v1 disk d1 generation 3 sequence 8'); // same length, other sequence
    const bad = Buffer.from(sealed);
    ctx.copy(bad, 24);
    expect((await openError(bad)).message).toMatch(/^frame 0 failed authentication/);
  });

  it('refuses frames spliced from another object with the same context', async () => {
    const again = await seal(plain, Buffer.from('tenant t1 vm v1 disk d1 generation 3 sequence 7'));
    const spliced = Buffer.concat([sealed.subarray(0, frameStart(1)), again.subarray(headerLength(again) + frameBytes)]);
    expect((await openError(spliced)).message).toMatch(/^frame 1 failed authentication/);
  });

  it('refuses the wrong key', async () => {
    const err = await openError(sealed, other);
    expect(err.code).toBe('tampered');
    expect(err.message).toBe('cannot unwrap the data key: not sealed to this key, or the key wrap was altered');
  });

  it('says when the input is not an envelope', async () => {
    expect((await openError(Buffer.from('hello, this is not an envelope at all'))).message).toBe('not a sealed lifeboat object (no envelope magic)');
    expect((await openError(Buffer.alloc(0))).code).toBe('corrupt');
  });
});

describe('key files', () => {
  let dir: Awaited<ReturnType<typeof scratchDir>>;
  beforeAll(async () => { dir = await scratchDir(); });
  afterAll(async () => { await dir.remove(); });

  it('writes both halves with mode 0600 and reads them back', async () => {
    const { privatePath, publicPath } = await saveKeyPair(join(dir.path, 'replica'), pair);
    expect((await stat(privatePath)).mode & 0o777).toBe(0o600);
    expect((await stat(publicPath)).mode & 0o777).toBe(0o600);
    expect(await loadPrivateKey(privatePath)).toEqual(pair.privateKey);
    expect(await loadPublicKey(publicPath)).toEqual(pair.publicKey);
    expect(await loadPublicKey(privatePath)).toEqual(pair.publicKey);
    await expect(saveKeyPair(join(dir.path, 'replica'), other)).rejects.toThrow(/already exists; refusing to overwrite/);
    await expect(loadPrivateKey(publicPath)).rejects.toThrow(/a public key; opening needs the private key/);
  });

  it('refuses files that are not keys', async () => {
    const { writeFile } = await import('node:fs/promises');
    const notJson = join(dir.path, 'x.jwk');
    await writeFile(notJson, 'hello');
    await expect(loadPrivateKey(notJson)).rejects.toThrow(/not a key file \(not JSON\)/);
    const rsa = join(dir.path, 'rsa.jwk');
    await writeFile(rsa, JSON.stringify({ kty: 'RSA', n: 'x', e: 'AQAB' }));
    await expect(loadPublicKey(rsa)).rejects.toThrow(/not an X25519 or P-256 JWK/);
  });
});
