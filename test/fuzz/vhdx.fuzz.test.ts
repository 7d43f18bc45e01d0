/**
 * Fuzz target: the VHDX reader (file identifier, headers, region tables, metadata, BAT, log) through
 * openDisk, as an outside file is opened. Seeds are made by qemu-img and qemu-io (dynamic with data,
 * fixed, a large sparse geometry), plus what qemu cannot make: a differencing child of a qemu image
 * and a qemu image with a log entry left to replay. Mutations land in each structure's bytes; the
 * CRC-32C of headers, region tables and the log entry are sometimes fixed after, so the mutation
 * reaches the parser behind the checksum. Each input is opened read-only or writable and exercised
 * (disk-exercise.ts): it works, or fails with a LifeboatError, within the time and memory bounds.
 */
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { createChildDisk } from '../../shared/disk/index.js';
import { checksumWithHole, HeaderOffsets, HeaderSize, RegionTableOffsets, RegionTableSize } from '../../shared/disk/vhdx/format.js';
import { writeThroughLog } from '../../shared/disk/vhdx/journal.js';
import { MetadataTableSize } from '../../shared/disk/vhdx/metadata.js';
import { openLayout } from '../../shared/disk/vhdx/open.js';
import { referee } from '../helpers.js';
import { exerciseBytes, fuzzScratch, WorkFile } from './disk-exercise.js';
import { fuzz, testTimeout, untracked } from './harness.js';
import { applyMutations, mutationsArb, type Mutation, type Region } from './mutate.js';

const K = 1024;
const M = 1024 * K;

interface Seed {
  bytes: Buffer;
  regions: Region[];
  /** File offsets worth writing into fields (region starts, the log's offset). */
  hints: number[];
  /** Where the parent of a child seed must sit, relative to the input's directory. */
  parent?: string;
  logOffset: number;
}

let dir: Awaited<ReturnType<typeof fuzzScratch>>;
const seeds: Record<string, Seed> = {};

/** The seed's structures as mutation regions, found by our own parser on the unmutated file. */
async function describeSeed(path: string, parent?: string): Promise<Seed> {
  const layout = await openLayout(path, true);
  await layout.file.close();
  const { regions: r, headers } = layout;
  const bytes = await readFile(path);
  const metaCount = bytes.readUInt16LE(r.metadata.fileOffset + 10);
  const items: Region[] = [];
  for (let i = 0; i < metaCount; i++) {
    const at = r.metadata.fileOffset + 32 + i * 32;
    const off = bytes.readUInt32LE(at + 16);
    const len = bytes.readUInt32LE(at + 20);
    if (len > 0) items.push({ name: `metadata item ${i}`, from: r.metadata.fileOffset + off, length: Math.min(len, 4 * K) });
  }
  const logOffset = headers.current.logOffset;
  const regions: Region[] = [
    { name: 'file identifier', from: 0, length: 16 },
    { name: 'header 1', from: HeaderOffsets[0], length: 80 },
    { name: 'header 2', from: HeaderOffsets[1], length: 80 },
    { name: 'region table 1', from: RegionTableOffsets[0], length: 16 + 32 * 2 },
    { name: 'region table 2', from: RegionTableOffsets[1], length: 16 + 32 * 2 },
    { name: 'metadata table', from: r.metadata.fileOffset, length: 32 + 32 * metaCount },
    ...items,
    { name: 'BAT', from: r.bat.fileOffset, length: Math.min(r.bat.length, 4 * K) },
    { name: 'log', from: logOffset, length: 8 * K },
  ];
  return { bytes, regions, hints: [r.bat.fileOffset, r.metadata.fileOffset, logOffset, MetadataTableSize, M], parent, logOffset };
}

beforeAll(async () => {
  dir = await fuzzScratch('lifeboat-fuzz-vhdx-');
  const dyn = join(dir.path, 'qemu-dynamic.vhdx');
  await referee('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M,log_size=1M', dyn, '8M']);
  await referee('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x55 0 1536k', '-c', 'write -P 0x66 5M 512k', '-c', 'write -z 6M 1M', dyn]);
  const fixed = join(dir.path, 'qemu-fixed.vhdx');
  await referee('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'subformat=fixed,block_size=1M,log_size=1M', fixed, '3M']);
  await referee('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x77 1M 4k', fixed]);
  const large = join(dir.path, 'qemu-large.vhdx');
  await referee('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M,log_size=1M', large, '64G']);
  await referee('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x11 63G 64k', large]);
  // A differencing child (qemu cannot create one) of a copy of the qemu-made disk, beside it.
  const parent = join(dir.path, 'parent.vhdx');
  await copyFile(dyn, parent);
  const childPath = join(dir.path, 'child.vhdx');
  const child = await createChildDisk(childPath, parent);
  await child.write(512 * 5, Buffer.alloc(3 * 512, 9));
  await child.write(7 * M, Buffer.alloc(64 * K, 8));
  await child.close();
  // A qemu-made disk with a log entry written and not applied, as after a crash.
  const logged = join(dir.path, 'logged.vhdx');
  await copyFile(dyn, logged);
  const l = await openLayout(logged, false);
  // The BAT's first two pages as they are, with block 1 marked zero: replay has real data to apply.
  const page = Buffer.alloc(8 * K);
  await l.file.read(page, l.regions.bat.fileOffset, 'BAT');
  page.writeBigUInt64LE(2n, 8);
  await writeThroughLog(l.file, l.headers, [{ at: l.regions.bat.fileOffset, data: page }], { stopBeforeApply: true });
  await l.file.close();

  seeds.dynamic = await describeSeed(dyn);
  seeds.fixed = await describeSeed(fixed);
  seeds.large = await describeSeed(large);
  seeds.child = await describeSeed(childPath, 'parent.vhdx');
  seeds.logged = await describeSeed(logged);
}, 120_000);
afterAll(async () => { await dir?.remove(); });

/** Recomputes the CRC-32C of both headers, both region tables and the first log entry (if sane). */
function reseal(img: Buffer, logOffset: number): void {
  const fix = (at: number, len: number) => {
    if (at + len <= img.length) img.writeUInt32LE(checksumWithHole(img.subarray(at, at + len), 4), at + 4);
  };
  for (const at of HeaderOffsets) fix(at, HeaderSize);
  for (const at of RegionTableOffsets) fix(at, RegionTableSize);
  if (logOffset + 16 <= img.length && img.toString('latin1', logOffset, logOffset + 4) === 'loge') {
    const len = img.readUInt32LE(logOffset + 8);
    if (len > 0 && len % 4096 === 0 && len <= M) fix(logOffset, len);
  }
}

const names = ['dynamic', 'fixed', 'large', 'child', 'logged'] as const;

describe('VHDX reader under mutation', () => {
  for (const name of names) {
    it(`${name}: every mutated image opens and reads, or fails with a LifeboatError`, async () => {
      const seed = seeds[name]!;
      const muts = mutationsArb(seed.regions, seed.bytes.length, true, seed.hints);
      // A child's input sits beside a copy of its parent, so the locator finds it.
      const sub = join(dir.path, name);
      if (seed.parent) {
        await mkdir(sub, { recursive: true });
        await copyFile(join(dir.path, seed.parent), join(sub, seed.parent));
      }
      /** The input's bytes: the seed with the mutations, checksums fixed when sealed. */
      const input = (m: Mutation[], sealed: boolean) => {
        const b = applyMutations(seed.bytes, m, seed.regions);
        if (sealed) reseal(b, seed.logOffset);
        return b;
      };
      const work = new WorkFile(seed.parent ? join(sub, 'in.vhdx') : join(dir.path, `in-${name}.vhdx`));
      await fuzz<[Mutation[], boolean, boolean]>('vhdx', name, [muts, fc.boolean(), fc.boolean()], async (m, sealed, writable) => {
        const bytes = untracked(() => input(m, sealed));
        await exerciseBytes(work, bytes, writable);
      }, { share: 1 / names.length, maxAllocation: 16 * M, describe: (m, sealed) => untracked(() => input(m, sealed)), examples: [[[{ kind: 'bit', region: 0, at: 15, bit: 0 }], false, false]] });
    }, testTimeout(1 / names.length));
  }
});
