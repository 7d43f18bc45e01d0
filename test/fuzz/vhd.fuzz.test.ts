/**
 * Fuzz target: the VHD reader (footer at both ends, dynamic header, BAT) through openDisk. Seeds are
 * made by qemu-img (vpc: dynamic with data written by qemu-io, fixed, and dynamic with force_size so
 * Current Size rules). Mutations land in the footer copy, the dynamic header, the BAT and the
 * trailing footer, with the checksums sometimes fixed after; each input is opened read-only or
 * writable and exercised (disk-exercise.ts).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { FooterSize, vhdChecksum } from '../../shared/disk/vhd/footer.js';
import { HeaderSize } from '../../shared/disk/vhd/header.js';
import { referee } from '../helpers.js';
import { exerciseBytes, fuzzScratch, WorkFile } from './disk-exercise.js';
import { fuzz, testTimeout, untracked } from './harness.js';
import { applyMutations, mutationsArb, type Mutation, type Region } from './mutate.js';

const M = 2 ** 20;

interface Seed { bytes: Buffer; regions: Region[]; hints: number[]; dynamic: boolean }

let dir: Awaited<ReturnType<typeof fuzzScratch>>;
const seeds: Record<string, Seed> = {};

function describeSeed(bytes: Buffer): Seed {
  const tail = bytes.length - FooterSize;
  const dynamic = bytes.toString('latin1', 0, 8) === 'conectix';
  if (!dynamic) return { bytes, dynamic, hints: [tail], regions: [{ name: 'footer', from: tail, length: 88 }] };
  const headerAt = Number(bytes.readBigUInt64BE(16));
  const batAt = Number(bytes.readBigUInt64BE(headerAt + 16));
  const entries = bytes.readUInt32BE(headerAt + 28);
  return {
    bytes, dynamic, hints: [tail, headerAt, batAt, entries],
    regions: [
      { name: 'footer copy', from: 0, length: 88 },
      { name: 'dynamic header', from: headerAt, length: 40 },
      { name: 'BAT', from: batAt, length: Math.min(entries * 4, 4096) },
      { name: 'trailing footer', from: tail, length: 88 },
    ],
  };
}

beforeAll(async () => {
  dir = await fuzzScratch('lifeboat-fuzz-vhd-');
  const make = async (name: string, options: string, size: string, writes: string[]) => {
    const path = join(dir.path, `${name}.vhd`);
    await referee('qemu-img', ['create', '-q', '-f', 'vpc', '-o', options, path, size]);
    if (writes.length > 0) await referee('qemu-io', ['-f', 'vpc', ...writes.flatMap((w) => ['-c', w]), path]);
    seeds[name] = describeSeed(await readFile(path));
  };
  await make('dynamic', 'subformat=dynamic', '6M', ['write -P 0x55 0 1536k', 'write -P 0x66 4M 64k']);
  await make('fixed', 'subformat=fixed', '3M', ['write -P 0x77 1M 4k']);
  await make('forced', 'subformat=dynamic,force_size=on', '5000k', ['write -P 0x33 2M 8k']);
}, 120_000);
afterAll(async () => { await dir?.remove(); });

/** Recomputes the checksums of both footers and the dynamic header where they are. */
function reseal(img: Buffer, dynamic: boolean): void {
  if (img.length < FooterSize) return;
  const tail = img.length - FooterSize;
  img.writeUInt32BE(vhdChecksum(img.subarray(tail), 64), tail + 64);
  if (!dynamic) return;
  img.writeUInt32BE(vhdChecksum(img.subarray(0, FooterSize), 64), 64);
  const headerAt = Number(img.readBigUInt64BE(16));
  if (headerAt + HeaderSize <= img.length) img.writeUInt32BE(vhdChecksum(img.subarray(headerAt, headerAt + HeaderSize), 36), headerAt + 36);
}

const names = ['dynamic', 'fixed', 'forced'] as const;

describe('VHD reader under mutation', () => {
  for (const name of names) {
    it(`${name}: every mutated image opens and reads, or fails with a LifeboatError`, async () => {
      const seed = seeds[name]!;
      const muts = mutationsArb(seed.regions, seed.bytes.length, false, seed.hints);
      /** The input's bytes: the seed with the mutations, checksums fixed when sealed. */
      const input = (m: Mutation[], sealed: boolean) => {
        const b = applyMutations(seed.bytes, m, seed.regions);
        if (sealed) reseal(b, seed.dynamic);
        return b;
      };
      const work = new WorkFile(join(dir.path, `in-${name}.vhd`));
      await fuzz<[Mutation[], boolean, boolean]>('vhd', name, [muts, fc.boolean(), fc.boolean()], async (m, sealed, writable) => {
        const bytes = untracked(() => input(m, sealed));
        await exerciseBytes(work, bytes, writable);
      }, { share: 1 / names.length, maxAllocation: 16 * M, describe: (m, sealed) => untracked(() => input(m, sealed)) });
    }, testTimeout(1 / names.length));
  }
});
