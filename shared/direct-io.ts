/**
 * Write-through (O_DIRECT) writes and reads: data written once and not read back soon (a merge's new
 * blocks, an object put into the file store) goes from our buffers to the device without a copy in
 * the page cache, and an object read once (a merge's log) comes back the same way. That copy lands
 * in newly faulted page-cache memory and costs more CPU than the I/O itself; on a virtual machine
 * whose freed memory goes back to the host it is slower still. O_DIRECT wants the file offset, the
 * length and the memory aligned to `DirectAlign`: buffers come from `AlignedPool`, whatever is not
 * aligned (an object's tail) goes the ordinary way, and so does everything where a platform or
 * filesystem has no O_DIRECT. Durability is unchanged: only fsync/fdatasync makes a write durable.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** Alignment of write-through writes: file offset, length and memory (a page; devices need 512). */
export const DirectAlign = 4096;

/**
 * `count` buffers of `bytes` each (a multiple of 64 KiB) whose memory starts on page boundaries:
 * slices of one WebAssembly.Memory, which the engine maps from whole pages (ordinary buffers come
 * from malloc). One memory for many buffers: the engine reserves about 10 GiB of address space per
 * memory. Undefined when the engine cannot make one (an address-space limit).
 */
export function alignedBuffers(count: number, bytes: number): Buffer[] | undefined {
  const pages = Math.ceil((count * bytes) / 65536);
  let memory: ArrayBuffer;
  try {
    memory = new Wasm.Memory({ initial: pages, maximum: pages }).buffer;
  } catch {
    return undefined;
  }
  return Array.from({ length: count }, (_, i) => Buffer.from(memory, i * bytes, bytes));
}

/** The one WebAssembly class used here (this project compiles without the DOM library that declares it). */
const Wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer } } }).WebAssembly;

/**
 * Page-aligned buffers of one size, kept for reuse by every user of the pool in this thread (fresh
 * large buffers are slow to fault in): made `perArena` at a time from one aligned memory, at most
 * `maxArenas` times. Beyond that, or where aligned memory cannot be had, take() gives ordinary
 * buffers; `aligned(b)` says which kind a buffer is, and give() keeps only the aligned ones.
 */
export class AlignedPool {
  private readonly free: Buffer[] = [];
  private readonly made = new WeakSet<ArrayBufferLike>();
  private arenas = 0;

  constructor(readonly bytes: number, private readonly perArena: number, private readonly maxArenas: number) {}

  take(): Buffer {
    const b = this.free.pop();
    if (b) return b;
    if (this.arenas < this.maxArenas) {
      this.arenas++;
      const made = alignedBuffers(this.perArena, this.bytes);
      if (made) {
        this.made.add(made[0]!.buffer);
        this.free.push(...made.slice(1));
        return made[0]!;
      }
      this.arenas = this.maxArenas;
    }
    return Buffer.allocUnsafeSlow(this.bytes);
  }

  give(b: Buffer): void {
    if (this.aligned(b)) this.free.push(b);
  }

  /** Whether b lies on memory of this pool (page aligned at b's start). */
  aligned(b: Uint8Array): boolean {
    return this.made.has(b.buffer) && b.byteOffset % DirectAlign === 0;
  }
}

/**
 * A second handle on fh's open file with O_DIRECT added, for reading or for writeThrough (through
 * /proc: the same file, whatever its name is now). Null where there is no such thing: not Linux, no
 * O_DIRECT, or a filesystem that refuses it (tmpfs).
 */
export async function openThrough(fh: FileHandle, mode: 'read' | 'write'): Promise<FileHandle | null> {
  if (constants.O_DIRECT === undefined || process.platform !== 'linux') return null;
  const access = mode === 'read' ? constants.O_RDONLY : constants.O_WRONLY;
  return open(`/proc/self/fd/${fh.fd}`, access | constants.O_DIRECT).catch(() => null);
}

/**
 * Writes all of data at pos through `direct` (a handle from openThrough(fh, 'write')). pos and data.length
 * must be multiples of DirectAlign and data's memory page aligned. Returns false, having written
 * nothing, when the write was refused as unaligned (EINVAL: some filesystems want more than a
 * page); the caller then writes the ordinary way and should stop writing through.
 */
export async function writeThrough(direct: FileHandle, data: Buffer, pos: number): Promise<boolean> {
  if (pos % DirectAlign !== 0 || data.length % DirectAlign !== 0) return false;
  let done = 0;
  try {
    while (done < data.length) {
      const { bytesWritten } = await direct.write(data, done, data.length - done, pos + done);
      if (bytesWritten === 0) throw new Error('write-through wrote nothing');
      done += bytesWritten;
    }
  } catch (err) {
    if (done > 0 || (err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
    return false;
  }
  return true;
}
