/**
 * What a VHDX reader refuses, with the error a user sees: each case damages one thing in an
 * otherwise good image (fixing checksums where needed so the damage is what is reported).
 */
import { copyFile, open, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDisk } from '../../shared/disk/index.js';
import { vhdxDriver } from '../../shared/disk/vhdx/driver.js';
import { checksumWithHole, writeGuid } from '../../shared/disk/vhdx/format.js';
import { scratchDir } from '../helpers.js';

const K = 1024;
const M = 1024 * K;

let dir: { path: string; remove: () => Promise<void> };
let good: string;
beforeAll(async () => {
  dir = await scratchDir('lifeboat-vhdx-refuse-');
  good = join(dir.path, 'good.vhdx');
  const d = await vhdxDriver.create(good, { virtualSize: 8 * M, blockSize: M });
  await d.write(0, Buffer.alloc(M, 1));
  await d.close();
});
afterAll(async () => { await dir.remove(); });

let n = 0;
/** A copy of the good image with patch applied; checksum: [start, length] regions to re-checksum. */
async function damaged(patch: (b: Buffer) => void, checksums: [number, number][] = []): Promise<string> {
  const path = join(dir.path, `bad-${n++}.vhdx`);
  await copyFile(good, path);
  const fh = await open(path, 'r+');
  const head = Buffer.alloc(4 * M);
  await fh.read(head, 0, head.length, 0);
  patch(head);
  for (const [at, len] of checksums) head.writeUInt32LE(checksumWithHole(head.subarray(at, at + len), 4), at + 4);
  await fh.write(head, 0, head.length, 0);
  await fh.close();
  return path;
}

const region1: [number, number][] = [[192 * K, 64 * K]];
const bothRegions: [number, number][] = [[192 * K, 64 * K], [256 * K, 64 * K]];

describe('refused images', () => {
  const cases: { name: string; make: () => Promise<string>; code: string; message: RegExp }[] = [
    { name: 'truncated file', make: async () => { const p = await damaged(() => undefined); await truncate(p, 100 * K); return p; }, code: 'corrupt', message: /too short for VHDX/ },
    { name: 'both headers damaged', make: () => damaged((b) => { b.writeUInt8(b.readUInt8(64 * K + 50) ^ 1, 64 * K + 50); b.writeUInt8(b.readUInt8(128 * K + 50) ^ 1, 128 * K + 50); }), code: 'corrupt', message: /both headers are invalid/ },
    { name: 'both region tables damaged', make: () => damaged((b) => { b.writeUInt8(b.readUInt8(192 * K + 20) ^ 1, 192 * K + 20); b.writeUInt8(b.readUInt8(256 * K + 20) ^ 1, 256 * K + 20); }), code: 'corrupt', message: /both region tables are invalid/ },
    {
      name: 'unknown required region',
      make: () => damaged((b) => {
        for (const t of [192 * K, 256 * K]) {
          b.writeUInt32LE(3, t + 8);
          writeGuid(b, t + 16 + 64, '11111111-2222-3333-4444-555555555555');
          b.writeUInt32LE(1, t + 16 + 64 + 28);
        }
      }, bothRegions),
      code: 'unsupported', message: /unknown required region 11111111-2222-3333-4444-555555555555/,
    },
    {
      name: 'unknown required metadata item',
      make: () => damaged((b) => {
        const t = 2 * M;
        const count = b.readUInt16LE(t + 10);
        b.writeUInt16LE(count + 1, t + 10);
        const e = t + 32 + count * 32;
        writeGuid(b, e, 'aaaaaaaa-2222-3333-4444-555555555555');
        b.writeUInt32LE(4, e + 24);
      }),
      code: 'unsupported', message: /unknown required metadata item aaaaaaaa-2222-3333-4444-555555555555/,
    },
    { name: 'block size out of range', make: () => damaged((b) => { b.writeUInt32LE(512 * M, 2 * M + 64 * K); }), code: 'corrupt', message: /block size 536870912 is not a power of two/ },
    { name: 'virtual size beyond 64 TiB', make: () => damaged((b) => { b.writeBigUInt64LE(65n << 40n, 2 * M + 64 * K + 4 * K); }), code: 'corrupt', message: /virtual disk size .* up to 64 TiB/ },
    { name: 'BAT entry beyond the file', make: () => damaged((b) => { b.writeUInt32LE((6 | (4000 << 20)) >>> 0, 3 * M); }), code: 'corrupt', message: /BAT entry 0 points outside the file/ },
    { name: 'BAT region outside the file', make: () => damaged((b) => { b.writeUInt32LE(64 * M, 192 * K + 16 + 24); }, region1), code: 'corrupt', message: /BAT region lies outside the file/ },
  ];
  for (const c of cases) {
    it(`${c.name}: ${c.code}`, async () => {
      const path = await c.make();
      const err = await openDisk(path, { readOnly: true }).then(() => undefined, (e: unknown) => e);
      expect(err).toMatchObject({ code: c.code });
      const msg = (err as Error).message;
      expect(msg).toMatch(c.message);
      expect(msg.startsWith(`open ${path}: `)).toBe(true);
      expect(msg).not.toContain('\n');
    });
  }
});
