import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../crypto/index.js';
import type { PrivateJwk } from '../crypto/keys.js';
import { createDisk } from '../disk/index.js';
import type { Extent } from '../disk/types.js';
import { writeLogFile } from './index.js';
import { memorySource } from './testing.js';
import { applyStaged, discardStaged, stageBudget, stageLog } from './stage.js';

const MiB = 1 << 20;
const identity = { tenant: 't', vm: 'v', disk: 'd', generation: 1, sequence: 1 };
const size = 24 * MiB;
// Data runs that meet (coalesced on apply), a zero range, data across a slab boundary.
const extents: Extent[] = [
  { offset: 0, length: 3 * MiB + 5, kind: 'data' },
  { offset: 4 * MiB, length: 2 * MiB, kind: 'zero' },
  { offset: 6 * MiB, length: 10 * MiB, kind: 'data' },
];

let dir: string;
let key: PrivateJwk;
let logPath: string;
let sha256: string;
let logSize: number;
const source = randomBytes(size);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lifeboat-stage-'));
  const pair = await generateKeyPair();
  key = pair.privateKey;
  logPath = join(dir, 'log.hrl');
  await writeLogFile(logPath, { ...identity, virtualSize: size }, memorySource(source, extents), { recipient: pair.publicKey });
  const bytes = await readFile(logPath);
  sha256 = createHash('sha256').update(bytes).digest('hex');
  logSize = (await stat(logPath)).size;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** What the replica must hold: a disk of 0xee bytes with the log's extents written over it. */
function expected(): Buffer {
  const out = Buffer.alloc(size, 0xee);
  for (const e of extents) {
    if (e.kind === 'zero') out.fill(0, e.offset, e.offset + e.length);
    else source.copy(out, e.offset, e.offset, e.offset + e.length);
  }
  return out;
}

async function stageAndApply(name: string): Promise<{ inMemory: boolean; image: Buffer }> {
  const staged = await stageLog({ object: createReadStream(logPath, { highWaterMark: 256 * 1024 }), key, expect: identity, sha256, size: logSize }, join(dir, `${name}.staged`));
  const inMemory = staged.runs !== null;
  const disk = await createDisk(join(dir, `${name.replace('/', '-')}.raw`), 'raw', { virtualSize: size });
  try {
    await disk.write(0, Buffer.alloc(size, 0xee));
    await applyStaged(staged, disk);
    const image = Buffer.alloc(size);
    await disk.read(0, image);
    return { inMemory, image };
  } finally {
    await disk.close();
    await discardStaged(staged);
  }
}

/** A dynamic VHDX of 0xee bytes with its first 8 MiB allocated, the rest not. */
async function vhdxReplica(name: string) {
  const disk = await createDisk(join(dir, `${name}.vhdx`), 'vhdx', { virtualSize: size, blockSize: MiB });
  await disk.write(0, Buffer.alloc(8 * MiB, 0xee));
  await disk.flush();
  return disk;
}

async function whole(disk: Awaited<ReturnType<typeof createDisk>>): Promise<Buffer> {
  const out = Buffer.alloc(size);
  await disk.read(0, out);
  return out;
}

describe('stageLog', () => {
  it('keeps a log in memory within the budget, applies it exactly and releases the budget', async () => {
    const { inMemory, image } = await stageAndApply('memory');
    expect(inMemory).toBe(true);
    expect(image.equals(expected())).toBe(true);
    expect(stageBudget.used).toBe(0);
  });

  it('stages a log into slabs of the thread\'s buffer pool, which the next log reuses once the first is discarded', async () => {
    const stage = (name: string) => stageLog({ object: createReadStream(logPath, { highWaterMark: 256 * 1024 }), key, expect: identity, sha256, size: logSize }, join(dir, `${name}.staged`));
    const first = await stage('pool-1');
    const firstSlabs = first.slabs.map((b) => b.buffer);
    expect(firstSlabs.length).toBeGreaterThan(0);
    expect(first.runs!.some((r) => r.kind === 'data' && firstSlabs.includes(r.data.buffer))).toBe(true);
    await discardStaged(first);
    expect(first.slabs).toEqual([]);
    const second = await stage('pool-2');
    try {
      expect(second.slabs.map((b) => b.buffer)).toEqual(firstSlabs);
    } finally {
      await discardStaged(second);
    }
    expect(stageBudget.used).toBe(0);
  });

  it('spills a log that outgrows the budget to a staging file and applies the same bytes', async () => {
    const limit = stageBudget.limit;
    stageBudget.limit = 8 * MiB;
    try {
      // The staging directory does not exist yet: a spill creates it.
      const { inMemory, image } = await stageAndApply('later/spill');
      expect(inMemory).toBe(false);
      expect(image.equals(expected())).toBe(true);
      expect(stageBudget.used).toBe(0);
      await expect(stat(join(dir, 'later', 'spill.staged'))).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      stageBudget.limit = limit;
    }
  });

  it('writes blocks the VHDX does not hold directly, stages the rest, and applies the same bytes', async () => {
    const disk = await vhdxReplica('direct');
    try {
      const before = await whole(disk);
      const staged = await stageLog({ object: createReadStream(logPath), key, expect: identity, sha256, size: logSize, direct: async () => disk.freshWrites!() }, join(dir, 'direct.staged'));
      // Written but not visible yet: the replica reads as before until apply.
      expect((await whole(disk)).equals(before)).toBe(true);
      // The partly written block 3, which the replica holds, was staged.
      expect(staged.runs!.filter((r) => r.kind === 'data').map((r) => r.offset)).toEqual([3 * MiB]);
      await applyStaged(staged, disk);
      await discardStaged(staged);
      const want = Buffer.alloc(size);
      want.fill(0xee, 0, 8 * MiB);
      for (const e of extents) {
        if (e.kind === 'zero') want.fill(0, e.offset, e.offset + e.length);
        else source.copy(want, e.offset, e.offset, e.offset + e.length);
      }
      expect((await whole(disk)).equals(want)).toBe(true);
      expect(stageBudget.used).toBe(0);
    } finally {
      await disk.close();
    }
  });

  it('leaves a VHDX as it was when a log written directly into it fails its digest', async () => {
    const disk = await vhdxReplica('direct-bad');
    try {
      const before = await whole(disk);
      const input = { object: createReadStream(logPath), key, expect: identity, sha256: '0'.repeat(64), size: logSize, direct: async () => disk.freshWrites!() };
      await expect(stageLog(input, join(dir, 'direct-bad.staged'))).rejects.toMatchObject({ code: 'tampered' });
      await disk.flush(); // the image takes changes again: the direct writer ended
      expect((await whole(disk)).equals(before)).toBe(true);
      expect(stageBudget.used).toBe(0);
    } finally {
      await disk.close();
    }
  });

  it('refuses a log whose digest differs from the committed one and holds nothing afterwards', async () => {
    const input = { object: createReadStream(logPath), key, expect: identity, sha256: '0'.repeat(64), size: logSize };
    await expect(stageLog(input, join(dir, 'bad.staged'))).rejects.toMatchObject({ code: 'tampered' });
    expect(stageBudget.used).toBe(0);
  });
});
