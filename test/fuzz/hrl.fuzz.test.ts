/**
 * Fuzz target: the `.hrl` reader (header, extent records, chunk headers and chunks, trailer), on
 * logs made by our writer (zstd with a version-2 header, lz4 with a version-1 header, stored). Two
 * ways in: the plaintext layer (LogReader over the mutated bytes, arriving in pieces of random sizes),
 * and as the merge worker meets a log: sealed to the tenant's key, which any agent can do with
 * whatever bytes it likes, then opened by readLog with the identity the object key gives. Reading
 * every item either works or fails with a LifeboatError, within the time and memory bounds.
 */
import fc from 'fast-check';
import { beforeAll, describe, it } from 'vitest';
import { generateKeyPair, sealStream, type KeyPair } from '../../shared/crypto/index.js';
import type { Extent } from '../../shared/disk/types.js';
import { completeHeader, encodeLog, LogReader, readLog, type LogHeaderInit } from '../../shared/log/index.js';
import { ChunkHeaderBytes, ExtentRecordBytes, RecordData, RecordZero } from '../../shared/log/records.js';
import { collect, memorySource } from '../../shared/log/testing.js';
import { expectClean, fuzz, testTimeout, untracked } from './harness.js';
import { applyMutations, mutationsArb, type Mutation, type Region } from './mutate.js';

const K = 1024;
const M = 1024 * K;
const DiskSize = M;

interface Seed { bytes: Buffer; regions: Region[]; hints: number[] }
const seeds: Record<string, Seed> = {};
let pair: KeyPair;

/** A disk with compressible, random and empty stretches, so every codec path is taken. */
function sampleDisk(): Buffer {
  const disk = Buffer.alloc(DiskSize);
  for (let at = 0; at < 160 * K; at += 4 * K) disk.fill(`block ${at} `, at, at + 4 * K);
  let x = 12345;
  for (let at = 300 * K; at < 330 * K; at++) {
    x = (x * 1103515245 + 12345) >>> 0;
    disk[at] = x >>> 24;
  }
  return disk;
}

const extents: Extent[] = [
  { offset: 0, length: 150 * K, kind: 'data' },
  { offset: 200 * K, length: 100 * K, kind: 'zero' },
  { offset: 300 * K, length: 30 * K, kind: 'data' },
  { offset: 330 * K, length: 10 * K, kind: 'zero' },
  { offset: 512 * K, length: 4 * K, kind: 'data' },
];

/** The log's parts as mutation regions: header, each record and chunk header, chunk starts, trailer. */
function describeLog(bytes: Buffer): Seed {
  const headerLength = bytes.readUInt16LE(10);
  const chunkSize = 2 ** bytes[47]!;
  const regions: Region[] = [{ name: 'header', from: 0, length: headerLength }];
  let at = headerLength;
  while (bytes[at] === RecordData || bytes[at] === RecordZero) {
    regions.push({ name: `record at ${at}`, from: at, length: ExtentRecordBytes });
    const type = bytes[at]!;
    const length = Number(bytes.readBigUInt64LE(at + 9));
    at += ExtentRecordBytes;
    if (type === RecordZero) continue;
    for (let done = 0; done < length; done += chunkSize) {
      const stored = bytes.readUInt32LE(at + 1);
      regions.push({ name: `chunk at ${at}`, from: at, length: ChunkHeaderBytes + Math.min(stored, 64) });
      at += ChunkHeaderBytes + stored;
    }
  }
  regions.push({ name: 'trailer', from: at, length: bytes.length - at });
  return { bytes, regions, hints: [headerLength, chunkSize, DiskSize, at] };
}

beforeAll(async () => {
  pair = await generateKeyPair();
  const disk = sampleDisk();
  const base: LogHeaderInit = { tenant: 'acme', vm: 'web01', disk: 'disk0', generation: 2, sequence: 7, virtualSize: DiskSize, chunkSize: 64 * K };
  const make = async (init: LogHeaderInit) => describeLog(await collect(encodeLog(completeHeader(init), memorySource(disk, extents))));
  seeds.zstd = await make({ ...base, compression: 'zstd', cycle: 9, capturedMs: 1_764_000_000_000 });
  seeds.lz4 = await make({ ...base, compression: 'lz4' });
  seeds.none = await make({ ...base, compression: 'none', kind: 'full' });
}, 60_000);

/** Splits bytes into pieces of the given sizes (cycled), as a stream or a file read would bring them. */
function pieces(bytes: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = sizes.length === 0 ? bytes.length : sizes[i % sizes.length]!;
    out.push(bytes.subarray(at, at + n));
    at += n;
  }
  return out;
}

async function drain(reader: LogReader): Promise<void> {
  let end = 0;
  for await (const item of reader.items()) {
    if (item.offset < end || item.offset + item.length > reader.header.virtualSize) throw new Error(`item ${item.offset}+${item.length} out of order or past the disk`);
    end = item.offset + item.length;
  }
  if (!reader.trailer) throw new Error('items ended without a trailer');
}

const names = ['zstd', 'lz4', 'none'] as const;
const pieceSizes = fc.array(fc.integer({ min: 1, max: 200 * K }), { maxLength: 4 });

describe('.hrl reader under mutation', () => {
  for (const name of names) {
    it(`${name}, plaintext: every mutated log reads whole or fails with a LifeboatError`, async () => {
      const seed = seeds[name]!;
      await fuzz<[Mutation[], number[]]>('hrl', `${name}-plain`, [mutationsArb(seed.regions, seed.bytes.length, true, seed.hints), pieceSizes], async (m, sizes) => {
        const bytes = untracked(() => applyMutations(seed.bytes, m, seed.regions));
        try {
          await drain(await LogReader.open(pieces(bytes, sizes)));
        } catch (err) {
          expectClean(err);
        }
      }, { share: 0.5 / names.length, maxAllocation: 17 * M, describe: (m) => untracked(() => applyMutations(seed.bytes, m, seed.regions)) });
    }, testTimeout(0.5 / names.length));

    it(`${name}, sealed by a hostile agent: readLog reads it whole or fails with a LifeboatError`, async () => {
      const seed = seeds[name]!;
      const headerLength = seed.bytes.readUInt16LE(10);
      const expect = { tenant: 'acme', vm: 'web01', disk: 'disk0', generation: 2, sequence: 7 };
      await fuzz<[Mutation[], boolean]>('hrl', `${name}-sealed`, [mutationsArb(seed.regions, seed.bytes.length, true, seed.hints), fc.boolean()], async (m, sameContext) => {
        const plain = untracked(() => applyMutations(seed.bytes, m, seed.regions));
        // The honest context is the (mutated) header; a liar seals another header than it sends.
        const context = sameContext ? plain.subarray(0, Math.min(plain.length, plain.length >= 12 ? plain.readUInt16LE(10) : 0)) : seed.bytes.subarray(0, headerLength);
        const sealed = await collect(sealStream([plain], { recipient: pair.publicKey, context, frameSize: 64 * K }));
        try {
          await drain(await readLog([sealed], { key: pair.privateKey, expect }));
        } catch (err) {
          expectClean(err);
        }
      }, { share: 0.5 / names.length, maxAllocation: 17 * M, describe: (m) => untracked(() => applyMutations(seed.bytes, m, seed.regions)) });
    }, testTimeout(0.5 / names.length));
  }
});
