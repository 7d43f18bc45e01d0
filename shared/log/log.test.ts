import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Extent } from '../disk/types.js';
import { generateKeyPair, type KeyPair } from '../crypto/index.js';
import { LifeboatError } from '../errors.js';
import {
  Compressions, LogReader, completeHeader, encodeLog, readLog, readLogFile, writeLog, writeLogFile, type Compression, type LogHeader, type LogHeaderInit,
} from './index.js';
import { collect, drainExtents, memorySource } from './testing.js';
import { scratchDir } from '../../test/helpers.js';

const chunkSize = 64 * 1024;
const init: LogHeaderInit = { tenant: 't1', vm: 'vm-7', disk: 'disk0', generation: 3, sequence: 42, virtualSize: 1 << 20, createdMs: 1_764_000_000_000, chunkSize };
let pair: KeyPair;
beforeAll(async () => { pair = await generateKeyPair(); });

/** A disk whose bytes mix random and compressible runs, so every codec path is taken. */
function sampleDisk(size: number): Buffer {
  const disk = Buffer.alloc(size);
  for (let at = 0; at < size; at += 16384) {
    const n = Math.min(16384, size - at);
    if ((at / 16384) % 3 === 0) randomBytes(n).copy(disk, at);
    else disk.fill(`block ${at} `, at, at + n);
  }
  return disk;
}

function expectedExtents(extents: Extent[], disk: Buffer): Extent[] & { sha256?: string }[] {
  const out: (Extent & { sha256?: string })[] = [];
  for (const e of extents.filter((x) => x.length > 0)) {
    const prev = out.at(-1);
    if (prev && prev.kind === e.kind && prev.offset + prev.length === e.offset) prev.length += e.length;
    else out.push({ ...e });
  }
  for (const e of out) if (e.kind === 'data') e.sha256 = createHash('sha256').update(disk.subarray(e.offset, e.offset + e.length)).digest('hex');
  return out;
}

async function plainLog(header: LogHeader, disk: Buffer, extents: Extent[]): Promise<Buffer> {
  return collect(encodeLog(header, memorySource(disk, extents)));
}

/** Arbitrary sorted, non-overlapping extents within the disk, touching or not. */
const extentsArb = (size: number) => fc.array(fc.record({
  gap: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 70_000 })),
  length: fc.integer({ min: 1, max: 200_000 }),
  zero: fc.boolean(),
}), { maxLength: 12 }).map((parts) => {
  const out: Extent[] = [];
  let at = 0;
  for (const p of parts) {
    const offset = at + p.gap;
    const length = Math.min(p.length, size - offset);
    if (length <= 0) break;
    out.push({ offset, length, kind: p.zero ? 'zero' : 'data' });
    at = offset + length;
  }
  return out;
});

describe('log round trip', () => {
  const disk = sampleDisk(1 << 20);
  for (const compression of Compressions) {
    it(`reads back any extents and their bytes (${compression})`, async () => {
      await fc.assert(fc.asyncProperty(extentsArb(disk.length), async (extents) => {
        const header = completeHeader({ ...init, compression });
        const reader = await LogReader.open([await plainLog(header, disk, extents)]);
        expect(reader.header).toEqual(header);
        expect(await drainExtents(reader)).toEqual(expectedExtents(extents, disk));
        const dataBytes = extents.filter((e) => e.kind === 'data').reduce((n, e) => n + e.length, 0);
        expect(reader.trailer?.dataBytes).toBe(dataBytes);
      }), { numRuns: 20 });
    });
  }

  it('reads back a sealed log with every compression through readLog', async () => {
    const extents: Extent[] = [{ offset: 0, length: 300_000, kind: 'data' }, { offset: 300_000, length: 4096, kind: 'zero' }, { offset: 700_000, length: 1, kind: 'data' }];
    for (const compression of Compressions) {
      const { header, sealed } = writeLog({ ...init, compression }, memorySource(disk, extents), { recipient: pair.publicKey, frameSize: 4096 });
      const reader = await readLog([await collect(sealed)], { key: pair.privateKey, expect: { tenant: 't1', sequence: 42 } });
      expect(reader.header).toEqual(header);
      expect(await drainExtents(reader)).toEqual(expectedExtents(extents, disk));
    }
  });

  it('round-trips any extents through the sealed path (writeLog, readLog), read or viewed', async () => {
    await fc.assert(fc.asyncProperty(extentsArb(disk.length), fc.constantFrom(...Compressions), fc.boolean(), async (extents, compression, views) => {
      const { sealed } = writeLog({ ...init, compression }, memorySource(disk, extents, views), { recipient: pair.publicKey, frameSize: 8192 });
      const reader = await readLog([await collect(sealed)], { key: pair.privateKey });
      expect(await drainExtents(reader)).toEqual(expectedExtents(extents, disk));
    }), { numRuns: 20 });
  });

  it('keeps output intact when the writer recycles its blocks under the sealer (several MiB)', async () => {
    const big = randomBytes(5 << 20);
    const extents: Extent[] = [{ offset: 0, length: 3 << 20, kind: 'data' }, { offset: (3 << 20) + 1, length: (2 << 20) - 1, kind: 'data' }];
    const { sealed } = writeLog({ ...init, virtualSize: big.length, compression: 'none' }, memorySource(big, extents), { recipient: pair.publicKey });
    const reader = await readLog(sealed, { key: pair.privateKey });
    expect(await drainExtents(reader)).toEqual(expectedExtents(extents, big));
  });

  it('reuses a few frame buffers on both sides when the caller releases, and every byte is right when it is handed out', async () => {
    const big = randomBytes(3 << 20);
    const extents: Extent[] = [{ offset: 0, length: big.length, kind: 'data' }];
    const written = writeLog({ ...init, virtualSize: big.length, compression: 'none' }, memorySource(big, extents), { recipient: pair.publicKey, frameSize: 16384 });
    const copies: Buffer[] = [];
    const sealedMemory = new Set<ArrayBufferLike>();
    for await (const b of written.sealed) {
      copies.push(Buffer.from(b));
      sealedMemory.add(b.buffer);
      written.release(b);
    }
    // 192 frames and the header, through the header and the few frames sealed between two drains.
    expect(sealedMemory.size).toBeLessThanOrEqual(8);

    const reader = await readLog(copies, { key: pair.privateKey });
    const plainMemory = new Set<ArrayBufferLike>();
    let checked = 0;
    for await (const item of reader.items()) {
      if (item.kind !== 'data') continue;
      expect(item.data.equals(big.subarray(item.offset, item.offset + item.length))).toBe(true);
      plainMemory.add(item.data.buffer);
      checked += item.length;
    }
    expect(checked).toBe(big.length);
    expect(reader.trailer?.dataBytes).toBe(big.length);
    // 192 frames opened into a handful of buffers (those one chunk spans and the next in flight).
    expect(plainMemory.size).toBeLessThanOrEqual(8);
  });

  it('compresses compressible data and stores incompressible data as is', async () => {
    const zeros = Buffer.alloc(1 << 20);
    const random = randomBytes(1 << 20);
    const whole: Extent[] = [{ offset: 0, length: 1 << 20, kind: 'data' }];
    for (const compression of ['zstd', 'lz4'] as Compression[]) {
      const header = completeHeader({ ...init, compression });
      expect((await plainLog(header, zeros, whole)).length).toBeLessThan(20_000);
      expect((await plainLog(header, random, whole)).length).toBeLessThan((1 << 20) + 16 * 5 + 200);
    }
  });
});

describe('log writer input', () => {
  const disk = Buffer.alloc(1 << 20);
  const header = completeHeader(init);
  const attempt = (extents: Extent[]) => plainLog(header, disk, extents).then(() => undefined, (e: unknown) => e as LifeboatError);

  it('coalesces adjacent extents of one kind', async () => {
    const reader = await LogReader.open([await plainLog(header, disk, [
      { offset: 0, length: 10, kind: 'data' }, { offset: 10, length: 5, kind: 'data' }, { offset: 15, length: 5, kind: 'zero' },
      { offset: 20, length: 5, kind: 'zero' }, { offset: 30, length: 1, kind: 'data' }])]);
    expect((await drainExtents(reader)).map(({ offset, length, kind }) => ({ offset, length, kind }))).toEqual([
      { offset: 0, length: 15, kind: 'data' }, { offset: 15, length: 10, kind: 'zero' }, { offset: 30, length: 1, kind: 'data' }]);
  });

  it('refuses unsorted, overlapping and out-of-disk extents', async () => {
    expect((await attempt([{ offset: 100, length: 10, kind: 'data' }, { offset: 0, length: 10, kind: 'data' }]))?.message)
      .toBe('extent at 0 overlaps or precedes the previous one, which ends at 110; extents must be sorted and not overlap');
    expect((await attempt([{ offset: 0, length: 10, kind: 'data' }, { offset: 5, length: 10, kind: 'zero' }]))?.code).toBe('invalid_argument');
    expect((await attempt([{ offset: (1 << 20) - 1, length: 2, kind: 'data' }]))?.message).toMatch(/ends beyond the disk's 1048576 bytes/);
    expect((await attempt([{ offset: -1, length: 2, kind: 'data' }]))?.code).toBe('invalid_argument');
  });

  it('refuses header fields out of range', async () => {
    for (const bad of [{ tenant: '' }, { vm: 'a/b' }, { disk: 'x'.repeat(129) }, { sequence: -1 }, { generation: 2 ** 53 }, { virtualSize: 0 }, { chunkSize: 1000 },
      { cycle: 0, capturedMs: 1 }, { cycle: 2 ** 53, capturedMs: 1 }, { cycle: 3 }, { capturedMs: 5 }, { cycle: 3, capturedMs: -1 }]) {
      const err = await plainLog(completeHeader({ ...init, ...bad }), disk, []).then(() => undefined, (e: unknown) => e as LifeboatError);
      expect(err?.code).toBe('invalid_argument');
    }
  });
});

describe('header versions', () => {
  const disk = randomBytes(4096);
  it('writes version 2 with the cycle and capture time, version 1 without, and reads both', async () => {
    const v2 = completeHeader({ ...init, cycle: 2 ** 40 + 7, capturedMs: 1_763_999_999_123 });
    const bytes2 = await plainLog(v2, disk, [{ offset: 0, length: 100, kind: 'data' }]);
    expect(bytes2.readUInt16LE(8)).toBe(2);
    expect(bytes2.readUInt16LE(10)).toBe(74 + 't1'.length + 'vm-7'.length + 'disk0'.length);
    expect(bytes2.readBigUInt64LE(52)).toBe(BigInt(2 ** 40 + 7));
    expect(bytes2.readBigUInt64LE(60)).toBe(1_763_999_999_123n);
    const r2 = await LogReader.open([bytes2]);
    expect(r2.header).toEqual(v2);
    expect(await drainExtents(r2)).toHaveLength(1);

    const v1 = completeHeader(init);
    const bytes1 = await plainLog(v1, disk, [{ offset: 0, length: 100, kind: 'data' }]);
    expect(bytes1.readUInt16LE(8)).toBe(1);
    expect(bytes1.readUInt16LE(10)).toBe(58 + 't1'.length + 'vm-7'.length + 'disk0'.length);
    const r1 = await LogReader.open([bytes1]);
    expect(r1.header.cycle).toBeUndefined();
    expect(r1.header.capturedMs).toBeUndefined();
    expect(await drainExtents(r1)).toHaveLength(1);
  });

  it('refuses a version-2 header of version-1 length, a cycle of 0, and an unknown version', async () => {
    const bytes2 = await plainLog(completeHeader({ ...init, cycle: 5, capturedMs: 1 }), disk, []);
    const outcome = (b: Buffer) => LogReader.open([b]).then(drainExtents).then(() => 'ok', (e: unknown) => (e instanceof LifeboatError ? e.message : e));
    const short = Buffer.from(bytes2);
    short.writeUInt16LE(58 + 11, 10);
    expect(await outcome(short)).toBe('log header length 69 is not 74 to 1024');
    const zero = Buffer.from(bytes2);
    zero.writeBigUInt64LE(0n, 52);
    expect(await outcome(zero)).toBe('log cycle is 0');
    const three = Buffer.from(bytes2);
    three.writeUInt16LE(3, 8);
    expect(await outcome(three)).toBe('change log version 3 is not supported (this reader knows 1 and 2)');
  });
});

describe('writeLogFile', () => {
  it('reads back a log of many file chunks through readLogFile (recycled read buffers), every frame size', async () => {
    const dir = await scratchDir();
    try {
      const big = randomBytes(6 << 20);
      const extents: Extent[] = [{ offset: 0, length: (3 << 20) + 5, kind: 'data' }, { offset: (4 << 20) + 1, length: (2 << 20) - 1, kind: 'data' }];
      for (const [i, frameSize] of [4096, 1 << 20, 4 << 20].entries()) {
        const path = join(dir.path, `big-${i}.hrl`);
        await writeLogFile(path, { ...init, virtualSize: big.length, compression: 'none' }, memorySource(big, extents), { recipient: pair.publicKey, frameSize });
        const reader = await readLogFile(path, { key: pair.privateKey });
        expect(await drainExtents(reader)).toEqual(expectedExtents(extents, big));
        expect(reader.trailer?.dataBytes).toBe((5 << 20) + 4);
      }
    } finally {
      await dir.remove();
    }
  });

  it('leaves nothing behind when the writer fails, and never overwrites a file', async () => {
    const dir = await scratchDir();
    try {
      const path = join(dir.path, 'x.hrl');
      const unsorted: Extent[] = [{ offset: 4096, length: 10, kind: 'data' }, { offset: 0, length: 10, kind: 'data' }];
      await expect(writeLogFile(path, init, memorySource(Buffer.alloc(1 << 20), unsorted), { recipient: pair.publicKey })).rejects.toThrow(/must be sorted/);
      expect(existsSync(path)).toBe(false);
      await writeFile(path, 'keep me');
      await expect(writeLogFile(path, init, memorySource(Buffer.alloc(1 << 20), []), { recipient: pair.publicKey })).rejects.toMatchObject({ code: 'EEXIST' });
      expect(await readFile(path, 'utf8')).toBe('keep me');
    } finally {
      await dir.remove();
    }
  });
});
