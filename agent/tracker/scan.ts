/**
 * The scan tracker: reads the whole disk every cycle, digests fixed 64 KiB blocks with a seeded fast
 * hash and compares them with the map of the last committed cycle. It needs nothing from the
 * hypervisor, so it works for any disk the disk library opens; its cost is one sequential read of the
 * allocated part of the disk per cycle. Unallocated ranges (disk.extents() from metadata: unallocated
 * blocks, a raw file's holes) are digested as zeros without reading. The seed is random per map
 * lineage, so nobody can craft two blocks that collide.
 *
 * Memory: one reused read buffer (default 8 MiB) and three arrays of its block count; the maps stream
 * from and to files.
 */
import { rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { DiskImage, Extent } from '../../shared/disk/index.js';
import { syncDir } from '../state/atomic.js';
import {
  BlockMapReader, BlockMapWriter, MapBlockSize, blockCountOf, blockDigest, randomSeed, zeroDigest,
} from './blockmap.js';
import type { ChangeTracker, TrackedCycle } from './types.js';

export const DefaultScanBufferSize = 8 << 20;

export interface ScanTrackerOptions {
  /** The committed map. */
  mapPath: string;
  /** Where a cycle's new map waits for its commit. */
  pendingPath: string;
  /** Read buffer size, a multiple of 64 KiB (default 8 MiB). */
  bufferSize?: number;
  /**
   * Skip ranges the disk's metadata reports unallocated (disk.extents with scan: false: a VHDX's or
   * VHD's unallocated blocks, a raw file's holes). Default: yes.
   */
  consultExtents?: boolean;
}

export class ScanTracker implements ChangeTracker {
  readonly kind = 'scan' as const;
  constructor(private readonly options: ScanTrackerOptions) {}

  async hasBaseline(): Promise<boolean> {
    const reader = await BlockMapReader.open(this.options.mapPath);
    await reader?.close();
    return reader !== undefined;
  }

  async begin(disk: DiskImage): Promise<TrackedCycle> {
    await rm(this.options.pendingPath, { force: true });
    return new ScanCycle(disk, this.options);
  }

  async commitPending(): Promise<void> {
    // A pending map exists only once its scan finished and was fsynced (ScanCycle.extents()).
    try {
      await rename(this.options.pendingPath, this.options.mapPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    await syncDir(dirname(this.options.mapPath));
  }

  /** Installs a map built elsewhere (the initial copy's) as the committed baseline. */
  async adopt(mapPath: string): Promise<void> {
    await rename(mapPath, this.options.mapPath);
    await syncDir(dirname(this.options.mapPath));
  }
}

class ScanCycle implements TrackedCycle {
  changedBytes = 0;
  /** Bytes actually read from the disk (allocated ranges only). */
  readBytes = 0;
  private scanned = false;
  private iterated = false;

  constructor(private readonly disk: DiskImage, private readonly options: ScanTrackerOptions) {}

  async *extents(): AsyncGenerator<Extent> {
    if (this.iterated) throw new Error('ScanCycle.extents() may be iterated once');
    this.iterated = true;
    const { disk } = this;
    const bufferSize = this.options.bufferSize ?? DefaultScanBufferSize;
    const windowBlocks = Math.max(1, Math.floor(bufferSize / MapBlockSize));
    const size = disk.virtualSize;
    const blockCount = blockCountOf(size);

    const old = await BlockMapReader.open(this.options.mapPath);
    const seed = old?.header.seed ?? randomSeed();
    // Written under .tmp and renamed once complete, so a .pending map is always a finished scan.
    const partial = `${this.options.pendingPath}.tmp`;
    const writer = await BlockMapWriter.create(partial, { seed, blockCount });
    try {
      const buf = Buffer.allocUnsafe(windowBlocks * MapBlockSize);
      const oldDigests = new Uint32Array(windowBlocks);
      const newDigests = new Uint32Array(windowBlocks);
      const hasData = new Uint8Array(windowBlocks);
      const zero = zeroDigest(seed);
      const consult = this.options.consultExtents ?? true;
      const data = (consult ? disk.extents({ scan: false }) : wholeDisk(size))[Symbol.asyncIterator]();
      let cur = await data.next();
      let run: Extent | undefined;

      for (let first = 0; first < blockCount; first += windowBlocks) {
        const n = Math.min(windowBlocks, blockCount - first);
        const winStart = first * MapBlockSize;
        const winEnd = Math.min(winStart + n * MapBlockSize, size);

        // Which blocks of this window hold allocated data.
        hasData.fill(0, 0, n);
        while (!cur.done && cur.value.offset < winEnd) {
          const s = Math.max(cur.value.offset, winStart);
          const e = Math.min(cur.value.offset + cur.value.length, winEnd);
          if (e > s) hasData.fill(1, Math.floor((s - winStart) / MapBlockSize), Math.ceil((e - winStart) / MapBlockSize));
          if (cur.value.offset + cur.value.length > winEnd) break;
          cur = await data.next();
        }

        // Digest: read runs of data blocks, zeros elsewhere.
        for (let i = 0; i < n;) {
          if (!hasData[i]) { newDigests[i++] = zero; continue; }
          let j = i;
          while (j < n && hasData[j]) j++;
          const off = winStart + i * MapBlockSize;
          const len = Math.min((j - i) * MapBlockSize, size - off);
          const chunk = buf.subarray(0, (j - i) * MapBlockSize);
          await disk.read(off, chunk.subarray(0, len));
          if (len < chunk.length) chunk.fill(0, len);
          this.readBytes += len;
          for (let k = i; k < j; k++) {
            const block = chunk.subarray((k - i) * MapBlockSize, (k - i + 1) * MapBlockSize);
            // A block of zeros is found by comparison (it stops at the first non-zero byte), is
            // never hashed, and travels as a zero extent without data.
            if (block.equals(zeroBlock)) {
              newDigests[k] = zero;
              hasData[k] = 0;
            } else newDigests[k] = blockDigest(block, seed);
          }
          i = j;
        }

        const oldCount = old ? await old.read(first, oldDigests.subarray(0, n)) : 0;
        await writer.write(first, newDigests.subarray(0, n));

        // Compare and coalesce; blocks past the old map (a grown disk) count as changed.
        for (let i = 0; i < n; i++) {
          if (i < oldCount && oldDigests[i] === newDigests[i]) {
            if (run) { yield run; run = undefined; }
            continue;
          }
          const off = winStart + i * MapBlockSize;
          const len = Math.min(MapBlockSize, size - off);
          const kind = hasData[i] ? 'data' : 'zero';
          this.changedBytes += len;
          if (run && run.kind === kind && run.offset + run.length === off) run.length += len;
          else {
            if (run) yield run;
            run = { offset: off, length: len, kind };
          }
        }
      }
      if (run) yield run;
      await writer.sync();
      await rename(partial, this.options.pendingPath);
      this.scanned = true;
    } finally {
      await writer.close();
      await old?.close();
    }
  }

  async commit(): Promise<void> {
    if (!this.scanned) throw new Error('ScanCycle.commit() before its extents were fully read');
    await rename(this.options.pendingPath, this.options.mapPath);
    await syncDir(dirname(this.options.mapPath));
  }

  async abandon(): Promise<void> {
    await rm(this.options.pendingPath, { force: true });
  }
}

const zeroBlock = Buffer.alloc(MapBlockSize);

async function* wholeDisk(size: number): AsyncGenerator<Extent> {
  if (size > 0) yield { offset: 0, length: size, kind: 'data' };
}
