/**
 * Fuzzing the VHDX parser: mutated file identifier, headers, region tables, metadata, BAT and log
 * bytes (checksums sometimes fixed up so the mutation reaches the deeper parsers). Opening, reading
 * and listing extents either works or throws a LifeboatError: never another exception, never a
 * buffer larger than the bound below.
 */
import { copyFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { LifeboatError } from '../../shared/errors.js';
import { vhdxDriver } from '../../shared/disk/vhdx/driver.js';
import { checksumWithHole } from '../../shared/disk/vhdx/format.js';
import { writeThroughLog } from '../../shared/disk/vhdx/journal.js';
import { openLayout } from '../../shared/disk/vhdx/open.js';
import { scratchDir } from '../helpers.js';
import { openVhdx, pattern } from './vhdx-helpers.js';

const K = 1024;
const M = 1024 * K;
/** No buffer may be larger than this while opening a ~6 MiB file (the largest legitimate one is 1 MiB). */
const MaxAllocation = 32 * M;

let dir: { path: string; remove: () => Promise<void> };
const bases: Record<string, string> = {};

beforeAll(async () => {
  dir = await scratchDir('lifeboat-vhdx-fuzz-');
  const plain = join(dir.path, 'plain.vhdx');
  const d = await vhdxDriver.create(plain, { virtualSize: 4 * M - 512, blockSize: M });
  await d.write(M - 512, pattern(Buffer.alloc(M + 1024), 1));
  await d.close();
  bases.plain = plain;
  const child = join(dir.path, 'child.vhdx');
  const c = await vhdxDriver.createChild!(child, { parentPath: plain, openParent: (p) => openVhdx(p, true) });
  await c.write(5 * 512, Buffer.alloc(3 * 512, 9));
  await c.close();
  bases.child = child;
  const logged = join(dir.path, 'logged.vhdx');
  await copyFile(plain, logged);
  const l = await openLayout(logged, false);
  await writeThroughLog(l.file, l.headers, [{ at: l.bat.offset(0), data: Buffer.alloc(8 * K, 3) }], { stopBeforeApply: true });
  await l.file.close();
  bases.logged = logged;
});
afterAll(async () => { await dir.remove(); });
afterEach(() => { vi.restoreAllMocks(); });

/** Byte ranges worth mutating, and the checksum (range, field) to fix up after, if any. */
const targets: { from: number; len: number; crc?: { at: number; len: number } }[] = [
  { from: 0, len: 16 },
  { from: 64 * K, len: 96, crc: { at: 64 * K, len: 4 * K } },
  { from: 128 * K, len: 96, crc: { at: 128 * K, len: 4 * K } },
  { from: 192 * K, len: 96, crc: { at: 192 * K, len: 64 * K } },
  { from: 256 * K, len: 96, crc: { at: 256 * K, len: 64 * K } },
  { from: 2 * M, len: 32 * 8 },
  { from: 2 * M + 64 * K, len: 4 * K + 256 },
  { from: 3 * M, len: 128 },
  { from: M, len: 8 * K + 64, crc: { at: M, len: 8 * K } },
];

const interesting = [0, 1, 2, 3, 4, 5, 6, 7, 0x7f, 0xff, 512, 4096, 0x7fff, 0xffff, M, 2 * M, 3 * M, 256 * M, 0x7fffffff, 0xffffffff];

const mutation = fc.record({
  target: fc.integer({ min: 0, max: targets.length - 1 }),
  at: fc.nat(),
  kind: fc.constantFrom('bit', 'byte', 'u32', 'u64'),
  value: fc.oneof(fc.constantFrom(...interesting), fc.nat()),
  bit: fc.integer({ min: 0, max: 7 }),
  fix: fc.boolean(),
});

type Mutation = { target: number; at: number; kind: string; value: number; bit: number; fix: boolean };

async function mutate(path: string, muts: Mutation[]): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    for (const m of muts) {
      const t = targets[m.target]!;
      const at = t.from + (m.at % t.len);
      const b = Buffer.alloc(8);
      await fh.read(b, 0, 8, at);
      if (m.kind === 'bit') b[0] = b[0]! ^ (1 << m.bit);
      else if (m.kind === 'byte') b[0] = m.value & 0xff;
      else if (m.kind === 'u32') b.writeUInt32LE(m.value >>> 0, 0);
      else b.writeBigUInt64LE(BigInt(m.value) * (m.bit % 2 === 0 ? 1n : 1n << 20n), 0);
      await fh.write(b, 0, m.kind === 'u64' ? 8 : m.kind === 'u32' ? 4 : 1, at);
      if (m.fix && t.crc) {
        const region = Buffer.alloc(t.crc.len);
        await fh.read(region, 0, region.length, t.crc.at);
        const sum = Buffer.alloc(4);
        sum.writeUInt32LE(checksumWithHole(region, 4));
        await fh.write(sum, 0, 4, t.crc.at + 4);
      }
    }
  } finally {
    await fh.close();
  }
}

/** Opens, reads and lists; anything but a LifeboatError fails the test. */
async function exercise(path: string, readOnly: boolean): Promise<void> {
  let d;
  try {
    d = await openVhdx(path, readOnly);
  } catch (err) {
    if (err instanceof LifeboatError) return;
    throw err;
  }
  try {
    const buf = Buffer.alloc(Math.min(d.virtualSize, 4 * M));
    await d.read(0, buf);
    await d.read(d.virtualSize - 512, Buffer.alloc(512));
    for await (const e of d.extents({ offset: 0, length: Math.min(d.virtualSize, 64 * M) })) expect(e.length).toBeGreaterThan(0);
    if (!readOnly) await d.write(0, Buffer.alloc(4096, 1));
  } catch (err) {
    if (!(err instanceof LifeboatError)) throw err;
  } finally {
    await d.close().catch((err: unknown) => { if (!(err instanceof LifeboatError)) throw err; });
  }
}

describe('mutated images', () => {
  let n = 0;
  for (const base of ['plain', 'child', 'logged']) {
    it(`${base}: open, read and extents either work or fail with a LifeboatError`, async () => {
      let largest = 0;
      for (const fn of ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const) {
        const orig = Buffer[fn].bind(Buffer);
        vi.spyOn(Buffer, fn).mockImplementation(((size: number, ...rest: unknown[]) => {
          largest = Math.max(largest, size);
          if (size > MaxAllocation) throw new Error(`allocation of ${size} bytes`);
          return (orig as (s: number, ...r: unknown[]) => Buffer)(size, ...rest);
        }) as typeof Buffer.alloc);
      }
      await fc.assert(fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.boolean(), async (muts, readOnly) => {
        const path = join(dir.path, `m-${n++}.vhdx`);
        await copyFile(bases[base]!, path);
        await mutate(path, muts);
        await exercise(path, readOnly);
      }), { numRuns: 100 });
      expect(largest).toBeLessThanOrEqual(MaxAllocation);
    });
  }
});
