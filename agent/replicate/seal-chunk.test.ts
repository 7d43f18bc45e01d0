/**
 * sealChunk reads a chunk into its output buffer and seals it over the bytes already read: the
 * opened log must hold exactly the disk's non-zero blocks, whatever room the output leaves (a small
 * room moves the body to a buffer of its own), into a shared slot or a buffer of the sealer's own.
 */
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/keys.js';
import { createDisk } from '../../shared/disk/index.js';
import { readLog } from '../../shared/log/sealed.js';
import { drainExtents } from '../../shared/log/testing.js';
import { scratchDir } from '../../test/helpers.js';
import { SealSlack, SealerState, sealChunk, sealingAdds, type SealJob } from './seal-chunk.js';

const MiB = 1 << 20;
let dir: string;
let remove: () => Promise<void>;
let keys: KeyPair;
let diskPath: string;
let source: Buffer;

beforeAll(async () => {
  ({ path: dir, remove } = await scratchDir('lifeboat-seal-chunk-'));
  keys = await generateKeyPair();
  // Incompressible bytes, compressible text and zeros, with blocks of each kind next to each other.
  source = Buffer.alloc(6 * MiB);
  randomBytes(2 * MiB).copy(source, 0);
  source.write('lorem ipsum dolor sit amet '.repeat(60_000).slice(0, MiB + 64 * 1024), 3 * MiB);
  randomBytes(64 * 1024).copy(source, 5 * MiB + 128 * 1024);
  diskPath = join(dir, 'disk.raw');
  const disk = await createDisk(diskPath, 'raw', { virtualSize: source.length });
  await disk.write(0, source);
  await disk.close();
});
afterAll(() => remove());

function job(start: number, length: number, into?: SharedArrayBuffer): SealJob {
  return {
    diskPath, start, length, seed: '12345', recipient: keys.publicKey, into,
    header: { tenant: 't', vm: 'vm', disk: 'disk0', generation: 1, sequence: start / length, virtualSize: source.length, compression: 'zstd', kind: 'full' },
  };
}

async function opened(body: Buffer) {
  const reader = await readLog((async function* () { yield Buffer.from(body); })(), { key: keys.privateKey });
  return drainExtents(reader);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('sealChunk', () => {
  for (const [name, slack] of [['the default room', SealSlack], ['a little room', 4096], ['no room', 0]] as const) {
    it(`with ${name}, the log holds exactly the chunk's non-zero blocks`, async () => {
      const state = new SealerState();
      try {
        for (const into of [undefined, new SharedArrayBuffer(6 * MiB + slack)]) {
          const sealed = await sealChunk(job(0, 6 * MiB, into), state, slack);
          expect(sealed.size).toBe(sealed.body.length);
          expect(sealed.sha256).toBe(sha(sealed.body));
          const extents = await opened(sealed.body);
          expect(extents.map((e) => [e.offset, e.length, e.sha256])).toEqual([
            [0, 2 * MiB, sha(source.subarray(0, 2 * MiB))],
            [3 * MiB, MiB + 64 * 1024, sha(source.subarray(3 * MiB, 4 * MiB + 64 * 1024))],
            [5 * MiB + 128 * 1024, 64 * 1024, sha(source.subarray(5 * MiB + 128 * 1024, 5 * MiB + 192 * 1024))],
          ]);
          // With enough room the body stays in the shared slot it was given.
          if (into && slack === SealSlack) expect(sealed.body.buffer).toBe(into);
          if (slack === 0) expect(sealed.body.buffer).not.toBe(into);
        }
      } finally {
        await state.close();
      }
    });
  }

  it('seals a chunk in the middle of the disk', async () => {
    const state = new SealerState();
    try {
      const sealed = await sealChunk(job(2 * MiB, 2 * MiB), state);
      expect((await opened(sealed.body)).map((e) => [e.offset, e.length, e.sha256])).toEqual([
        [3 * MiB, MiB, sha(source.subarray(3 * MiB, 4 * MiB))],
      ]);
    } finally {
      await state.close();
    }
  });

  it('seals in place only when what sealing adds is sure to fit in the room before the unread bytes', () => {
    const data = (offset: number, length: number) => ({ offset, length, kind: 'data' as const });
    // A 16 MiB chunk of a few extents adds a few KiB: sealed where it lies.
    expect(sealingAdds([data(0, 16 * MiB)], 16 * MiB)).toBeLessThan(16 * 1024);
    // Every other 64 KiB block of a 16 MiB chunk: 128 extents, still far below the room.
    const alternate = Array.from({ length: 128 }, (_, i) => data(i * 128 * 1024, 64 * 1024));
    expect(sealingAdds(alternate, 16 * MiB)).toBeLessThan(SealSlack);
    // Tens of thousands of tiny extents would not fit: such a chunk is sealed the other way.
    const tiny = Array.from({ length: 20_000 }, (_, i) => data(i * 1024, 512));
    expect(sealingAdds(tiny, 20 * MiB)).toBeGreaterThan(SealSlack);
  });
});
