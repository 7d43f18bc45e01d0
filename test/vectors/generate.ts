/**
 * Regenerates the change-log test vectors: NAME.hrl (sealed to key.jwk's public half) and NAME.json
 * (its decoded header, extents and trailer). `npx tsx test/vectors/generate.ts`. The key is made once
 * and kept; the data is from a fixed seed, so only the sealed bytes change between runs.
 */
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Extent } from '../../shared/disk/types.js';
import { generateKeyPair, loadPrivateKey, publicPart, saveJwk } from '../../shared/crypto/index.js';
import { readLogFile, writeLogFile, type LogHeaderInit } from '../../shared/log/index.js';
import { drainExtents, memorySource } from '../../shared/log/testing.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Extents up to this size carry their bytes as hex in the JSON; larger ones only a SHA-256. */
export const HexLimit = 64;

interface Vector {
  name: string;
  description: string;
  header: Omit<LogHeaderInit, 'tenant' | 'vm' | 'disk' | 'virtualSize'>;
  extents: Extent[];
  frameSize?: number;
}

/** Deterministic bytes: text-like runs (compressible) and xorshift noise (not). */
function sampleDisk(size: number): Buffer {
  const disk = Buffer.alloc(size);
  let x = 0x9e3779b9;
  for (let at = 0; at < size; at += 4096) {
    if ((at / 4096) % 4 === 3) {
      for (let i = at; i < Math.min(at + 4096, size); i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; disk[i] = x & 0xff; }
    } else {
      disk.fill(`sector ${at} of the vector disk; `, at, Math.min(at + 4096, size));
    }
  }
  return disk;
}

const created = Date.UTC(2026, 10, 25, 12, 0, 0);
const mixed: Extent[] = [
  { offset: 0, length: 4096, kind: 'data' },
  { offset: 65_536, length: 200_000, kind: 'data' },
  { offset: 265_536, length: 8192, kind: 'zero' },
  { offset: 1_048_576, length: 12_345, kind: 'data' },
];
const vectors: Vector[] = [
  { name: 'tiny', description: 'one 5-byte data extent (stored as is: too small to compress)', header: { generation: 1, sequence: 1, createdMs: created }, extents: [{ offset: 512, length: 5, kind: 'data' }] },
  { name: 'empty', description: 'no extents: a cycle in which nothing was written', header: { generation: 1, sequence: 2, createdMs: created }, extents: [] },
  { name: 'zero-only', description: 'zeroed ranges only (trim/unmap), a full base', header: { generation: 2, sequence: 0, createdMs: created, kind: 'full' }, extents: [{ offset: 0, length: 1 << 20, kind: 'zero' }, { offset: 3 << 20, length: 4096, kind: 'zero' }] },
  { name: 'zstd', description: 'mixed extents, zstd chunks of 64 KiB, several envelope frames of 4 KiB', header: { generation: 1, sequence: 3, createdMs: created, compression: 'zstd', chunkSize: 65_536 }, extents: mixed, frameSize: 4096 },
  { name: 'lz4', description: 'the same extents, lz4 chunks', header: { generation: 1, sequence: 4, createdMs: created, compression: 'lz4', chunkSize: 65_536 }, extents: mixed },
  { name: 'none', description: 'the same extents, uncompressed', header: { generation: 1, sequence: 5, createdMs: created, compression: 'none', chunkSize: 65_536 }, extents: mixed },
  { name: 'application-consistent', description: 'an application-consistent delta base of generation 7', header: { generation: 7, sequence: 0, createdMs: created, consistency: 'application', kind: 'delta' }, extents: [{ offset: 8192, length: 100_000, kind: 'data' }, { offset: 108_192, length: 4096, kind: 'zero' }] },
];

async function main(): Promise<void> {
  const keyPath = join(here, 'key.jwk');
  if (!existsSync(keyPath)) await saveJwk(keyPath, (await generateKeyPair()).privateKey);
  const key = await loadPrivateKey(keyPath);
  const disk = sampleDisk(4 << 20);
  for (const v of vectors) {
    const path = join(here, `${v.name}.hrl`);
    await rm(path, { force: true });
    const init: LogHeaderInit = { tenant: 'tenant-1', vm: 'vm-1', disk: 'disk-0', virtualSize: 4 << 20, ...v.header };
    await writeLogFile(path, init, memorySource(disk, v.extents), { recipient: publicPart(key), frameSize: v.frameSize });
    const reader = await readLogFile(path, { key });
    const extents = await drainExtents(reader, HexLimit);
    const json = { description: v.description, header: reader.header, extents, trailer: reader.trailer };
    await writeFile(join(here, `${v.name}.json`), `${JSON.stringify(json, null, 2)}\n`);
    process.stdout.write(`${v.name}: ${extents.length} extents\n`);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
