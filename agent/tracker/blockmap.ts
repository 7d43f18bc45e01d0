/**
 * The scan tracker's block map file (docs/formats/agent-state.md, "Block map"): a 32-byte header and
 * one u32 per 64 KiB block, the low 32 bits of a seeded XXH3-64. 4 bytes per 64 KiB is 64 MiB per TiB.
 * Readers and writers work on ranges of blocks so a map is never held whole in memory.
 */
import { randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { xxh3 } from '@node-rs/xxhash';
import { ErrCorrupt, wrap } from '../../shared/errors.js';

export const MapBlockSize = 64 * 1024;
export const MapHeaderSize = 32;
const Magic = Buffer.from('LBMAP\0\0\x01', 'latin1');

/** Bytes a map of a disk of virtualSize bytes occupies. */
export function mapFileSize(virtualSize: number): number {
  return MapHeaderSize + 4 * blockCountOf(virtualSize);
}

export function blockCountOf(virtualSize: number): number {
  return Math.ceil(virtualSize / MapBlockSize);
}

export function randomSeed(): bigint {
  return randomBytes(8).readBigUInt64LE(0);
}

/**
 * One streaming XXH3 state per seed, reset for each block: @node-rs/xxhash's streaming hasher runs at
 * several GB/s where its one-shot xxh3.xxh64 is about 3x slower; the digest is the same.
 */
let hasher: { seed: bigint; state: InstanceType<typeof xxh3.Xxh3> } | undefined;

/** Digest of one block as the map stores it. A short block is hashed as if zero-padded (callers pad). */
export function blockDigest(block: Uint8Array, seed: bigint): number {
  if (hasher?.seed !== seed) hasher = { seed, state: xxh3.Xxh3.withSeed(seed) };
  const h = hasher.state;
  h.reset();
  h.update(block);
  return Number(BigInt.asUintN(32, h.digest()));
}

const zeroBlock = Buffer.alloc(MapBlockSize);
const zeroDigests = new Map<bigint, number>();
/** The digest of an all-zero block under seed (cached: unallocated ranges are never read). */
export function zeroDigest(seed: bigint): number {
  let d = zeroDigests.get(seed);
  if (d === undefined) {
    d = blockDigest(zeroBlock, seed);
    zeroDigests.set(seed, d);
  }
  return d;
}

export interface MapHeader {
  seed: bigint;
  blockCount: number;
}

/** An open map for reading ranges of digests. */
export class BlockMapReader {
  private constructor(private readonly fh: FileHandle, readonly header: MapHeader, readonly path: string) {}

  /** Opens and checks a map; undefined when the file does not exist; a 'corrupt' error when it is damaged. */
  static async open(path: string): Promise<BlockMapReader | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw wrap(`open block map ${path}`, err);
    }
    try {
      const head = Buffer.alloc(MapHeaderSize);
      const { bytesRead } = await fh.read(head, 0, MapHeaderSize, 0);
      const { size } = await fh.stat();
      const blockCount = bytesRead === MapHeaderSize ? head.readBigUInt64LE(24) : -1n;
      if (bytesRead !== MapHeaderSize || !head.subarray(0, 8).equals(Magic) || head.readUInt32LE(8) !== MapBlockSize
        || blockCount > BigInt(Number.MAX_SAFE_INTEGER) || BigInt(size) !== BigInt(MapHeaderSize) + 4n * blockCount) {
        throw ErrCorrupt(`${path}: block map is damaged (bad header or length); remove it to resynchronize this disk`);
      }
      return new BlockMapReader(fh, { seed: head.readBigUInt64LE(16), blockCount: Number(blockCount) }, path);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Digests of blocks [first, first+count) clipped to the map; into[i] for block first+i. Returns how many were read. */
  async read(first: number, into: Uint32Array): Promise<number> {
    const count = Math.max(0, Math.min(into.length, this.header.blockCount - first));
    if (count === 0) return 0;
    const buf = Buffer.from(into.buffer, into.byteOffset, count * 4);
    await this.fh.read(buf, 0, count * 4, MapHeaderSize + first * 4);
    if (!littleEndian) for (let i = 0; i < count; i++) into[i] = buf.readUInt32LE(i * 4);
    return count;
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Writes a map file (not atomically: the caller writes a .pending file and renames it). */
export class BlockMapWriter {
  private constructor(private readonly fh: FileHandle, readonly header: MapHeader) {}

  /** Creates (or truncates) path with the header; digests are zero until written. */
  static async create(path: string, header: MapHeader): Promise<BlockMapWriter> {
    const fh = await open(path, 'w', 0o600);
    try {
      const head = Buffer.alloc(MapHeaderSize);
      Magic.copy(head, 0);
      head.writeUInt32LE(MapBlockSize, 8);
      head.writeBigUInt64LE(header.seed, 16);
      head.writeBigUInt64LE(BigInt(header.blockCount), 24);
      await fh.write(head, 0, MapHeaderSize, 0);
      await fh.truncate(MapHeaderSize + 4 * header.blockCount);
      return new BlockMapWriter(fh, header);
    } catch (err) {
      await fh.close();
      throw wrap(`create block map ${path}`, err);
    }
  }

  /** Opens an existing map for random-access writes (resumed initial replication). */
  static async reopen(path: string): Promise<BlockMapWriter | undefined> {
    const reader = await BlockMapReader.open(path);
    if (!reader) return undefined;
    const header = reader.header;
    await reader.close();
    return new BlockMapWriter(await open(path, 'r+'), header);
  }

  /** Writes digests of blocks starting at first. */
  async write(first: number, digests: Uint32Array): Promise<void> {
    const buf = Buffer.alloc(digests.length * 4);
    for (let i = 0; i < digests.length; i++) buf.writeUInt32LE(digests[i]!, i * 4);
    await this.fh.write(buf, 0, buf.length, MapHeaderSize + first * 4);
  }

  /** Makes the written digests durable. */
  sync(): Promise<void> {
    return this.fh.sync();
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}
