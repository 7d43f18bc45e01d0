import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Extent } from '../disk/types.js';
import { generateKeyPair, sealStream, type KeyPair } from '../crypto/index.js';
import { LifeboatError } from '../errors.js';
import { Compressions, LogReader, completeHeader, encodeLog, encodeLogHeader, readLog, writeLog, type LogHeaderInit } from './index.js';
import { collect, drainExtents, memorySource } from './testing.js';
import { scratchDir } from '../../test/helpers.js';

const init: LogHeaderInit = { tenant: 'acme', vm: 'web-1', disk: 'd0', generation: 2, sequence: 9, virtualSize: 1 << 20, createdMs: 1_764_000_000_000, chunkSize: 64 * 1024, cycle: 41, capturedMs: 1_763_999_999_000 };
const frameSize = 4096;
const disk = Buffer.concat([randomBytes(100_000), Buffer.alloc(300_000, 'text ')]);
const extents: Extent[] = [{ offset: 0, length: 150_000, kind: 'data' }, { offset: 150_000, length: 50_000, kind: 'zero' }, { offset: 300_000, length: 5, kind: 'data' }];
let pair: KeyPair;
let sealed: Buffer;
let contextLength: number;

/** Opens and drains a sealed log; the error it fails with (a LifeboatError), or undefined. */
async function failure(bytes: Buffer, options: Parameters<typeof readLog>[1] = { key: pair.privateKey }): Promise<LifeboatError | undefined> {
  try {
    await drainExtents(await readLog([bytes], options));
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(LifeboatError);
    return err as LifeboatError;
  }
}

beforeAll(async () => {
  pair = await generateKeyPair();
  sealed = await collect(writeLog(init, memorySource(disk, extents), { recipient: pair.publicKey, frameSize }).sealed);
  contextLength = sealed.readUInt32LE(16);
  expect(await failure(sealed)).toBeUndefined();
});

describe('sealed log tampering', () => {
  const headerFields: [string, number][] = [
    ['magic', 0], ['format version', 8], ['header length', 10], ['generation', 12], ['sequence', 20], ['virtual size', 28],
    ['created', 36], ['consistency', 44], ['compression', 45], ['kind', 46], ['chunk shift', 47], ['reserved', 48],
    ['cycle', 52], ['capture time', 60], ['tenant length', 68], ['tenant id', 70], ['vm id', 70 + 4 + 2], ['disk id', 70 + 4 + 2 + 5 + 2],
  ];
  for (const [field, at] of headerFields) {
    it(`fails when the ${field} of the header in the clear is changed`, async () => {
      const bad = Buffer.from(sealed);
      bad[24 + at]! ^= 0x01;
      const err = await failure(bad);
      expect(err?.code).toBe('tampered');
      expect(err?.message).toMatch(/^frame 0 failed authentication/);
    });
  }

  it('fails when a valid log is replayed as another tenant, vm, disk, generation, sequence or cycle', async () => {
    const cases = [['tenant', 'other'], ['vm', 'web-2'], ['disk', 'd1'], ['generation', 3], ['sequence', 10], ['cycle', 42]] as const;
    for (const [field, value] of cases) {
      const err = await failure(sealed, { key: pair.privateKey, expect: { [field]: value } });
      expect(err?.code).toBe('tampered');
      expect(err?.message).toBe(`log is ${field} ${(init as Record<string, unknown>)[field]}, expected ${field} ${value}: replayed under another name`);
    }
    expect(await failure(sealed, { key: pair.privateKey, expect: { tenant: 'acme', vm: 'web-1', disk: 'd0', generation: 2, sequence: 9, cycle: 41 } })).toBeUndefined();
  });

  it('fails when a log with a cycle is committed as one without, or the reverse', async () => {
    expect((await failure(sealed, { key: pair.privateKey, expect: { cycle: null } }))?.message).toBe('log is cycle 41, expected cycle none: replayed under another name');
    const { cycle: _c, capturedMs: _m, ...v1 } = init;
    const old = await collect(writeLog(v1, memorySource(disk, extents), { recipient: pair.publicKey, frameSize }).sealed);
    expect(old.readUInt16LE(24 + 8)).toBe(1);
    expect(await failure(old, { key: pair.privateKey, expect: { cycle: null } })).toBeUndefined();
    expect((await failure(old, { key: pair.privateKey, expect: { cycle: 41 } }))?.message).toBe('log is cycle none, expected cycle 41: replayed under another name');
  });

  it('fails on a flipped bit in any frame, on truncation at every frame boundary and inside frames', async () => {
    const start = 24 + contextLength + sealed.readUInt32LE(20);
    const frames = Math.ceil((sealed.length - start) / (frameSize + 16));
    expect(frames).toBeGreaterThan(3);
    for (let i = 0; i < frames; i++) {
      const at = start + i * (frameSize + 16);
      const bad = Buffer.from(sealed);
      bad[Math.min(at + 100, sealed.length - 1)]! ^= 0x80;
      expect((await failure(bad))?.message).toMatch(new RegExp(`^frame ${i} failed authentication`));
      if (i > 0) expect((await failure(sealed.subarray(0, at)))?.message).toBe(`truncated after frame ${i - 1}: it was sealed as a frame with more to follow`);
      expect((await failure(sealed.subarray(0, Math.min(at + 2000, sealed.length - 1))))?.code).toBe('tampered');
    }
  });

  it('fails on swapped, dropped and duplicated frames', async () => {
    const start = 24 + contextLength + sealed.readUInt32LE(20);
    const f = (i: number) => sealed.subarray(start + i * (frameSize + 16), start + (i + 1) * (frameSize + 16));
    const head = sealed.subarray(0, start);
    const tail = sealed.subarray(start + 3 * (frameSize + 16));
    for (const order of [[1, 0, 2], [0, 2], [0, 1, 1, 2], [0, 2, 1]]) {
      const err = await failure(Buffer.concat([head, ...order.map(f), tail]));
      expect(err?.code).toBe('tampered');
      expect(err?.message).toMatch(/failed authentication/);
    }
  });

  it('fails with the wrong key, naming it', async () => {
    const other = await generateKeyPair();
    expect((await failure(sealed, { key: other.privateKey }))?.message).toBe('cannot unwrap the data key: not sealed to this key, or the key wrap was altered');
  });

  it('refuses an authenticated object that is not a log, or whose plaintext header differs', async () => {
    const notLog = await collect(sealStream([Buffer.from('hello')], { recipient: pair.publicKey, context: Buffer.from('not a header') }));
    expect((await failure(notLog))?.message).toMatch(/^not a change log: /);
    const header = completeHeader(init);
    const plain = await collect(encodeLog(header, memorySource(disk, [])));
    const other = encodeLogHeader({ ...header, sequence: 10 });
    const mismatched = await collect(sealStream([plain], { recipient: pair.publicKey, context: other }));
    expect((await failure(mismatched))?.message).toBe('the log header differs from the header it was sealed with');
  });
});

describe('plaintext log corruption', () => {
  for (const compression of Compressions) {
    it(`fails cleanly on every truncation and every flipped byte (${compression})`, async () => {
      const small: Extent[] = [{ offset: 0, length: 70_000, kind: 'data' }, { offset: 70_000, length: 10, kind: 'zero' }, { offset: 99_000, length: 3, kind: 'data' }];
      const plain = await collect(encodeLog(completeHeader({ ...init, compression }), memorySource(Buffer.alloc(200_000, 'ab'), small)));
      expect(plain.length).toBeLessThan(75_000);
      const outcome = async (bytes: Buffer) => LogReader.open([bytes]).then(drainExtents).then(() => 'ok', (e: unknown) => (e instanceof LifeboatError ? e.code : e));
      for (let cut = 0; cut < plain.length; cut += cut < 200 || cut > plain.length - 200 ? 1 : 997) {
        expect(await outcome(plain.subarray(0, cut))).toMatch(/^(corrupt|unsupported)$/);
      }
      expect(await outcome(Buffer.concat([plain, Buffer.of(0)]))).toBe('corrupt');
      for (let at = 0; at < plain.length; at += at < 200 || at > plain.length - 200 ? 1 : 499) {
        const bad = Buffer.from(plain);
        bad[at]! ^= 0x04;
        expect(await outcome(bad)).toMatch(/^(corrupt|unsupported)$/);
      }
    });
  }
});

describe('sources are released', () => {
  it('closes the file stream when a log fails, is abandoned, or is read to the end', async () => {
    const { createReadStream } = await import('node:fs');
    const { writeFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const dir = await scratchDir();
    const path = join(dir.path, 'bad.hrl');
    const bad = Buffer.from(sealed);
    bad[bad.length - 10]! ^= 1;
    await writeFile(path, bad);
    try {
      const failing = createReadStream(path, { highWaterMark: 4096 });
      await expect(readLog(failing, { key: pair.privateKey }).then(drainExtents)).rejects.toThrow(/failed authentication/);
      expect(failing.destroyed).toBe(true);

      const replayed = createReadStream(path, { highWaterMark: 4096 });
      await expect(readLog(replayed, { key: pair.privateKey, expect: { sequence: 1 } })).rejects.toThrow(/replayed/);
      expect(replayed.destroyed).toBe(true);

      const abandoned = createReadStream(path, { highWaterMark: 4096 });
      const reader = await readLog(abandoned, { key: pair.privateKey });
      for await (const _ of reader.items()) break;
      expect(abandoned.destroyed).toBe(true);
    } finally {
      await dir.remove();
    }
  });
});
