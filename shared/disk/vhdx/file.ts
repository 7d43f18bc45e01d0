/**
 * Positional I/O on the image file with its size tracked in memory. Reads never go past the end
 * of the file (a read that would is a corrupt image). A read-only image whose log needs replay gets
 * an overlay: the logged writes are applied to every read in memory, the file is never touched.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { openThrough, writeThrough } from '../../direct-io.js';
import { ErrCorrupt } from '../../errors.js';

/** A logged write kept in memory: data bytes, or zeros when data is undefined. */
export interface OverlayPiece {
  at: number;
  length: number;
  data: Buffer | undefined;
}

export class VhdxFile {
  private overlay: OverlayPiece[] = [];
  /** The same file opened for write-through (O_DIRECT): undefined until first asked for, null when unavailable. */
  private direct: FileHandle | null | undefined;
  private directOpening: Promise<FileHandle | null> | undefined;

  private constructor(private readonly fh: FileHandle, public size: number, readonly readOnly: boolean) {}

  static async open(path: string, readOnly: boolean): Promise<VhdxFile> {
    const fh = await open(path, readOnly ? 'r' : 'r+');
    try {
      const { size } = await fh.stat();
      return new VhdxFile(fh, size, readOnly);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Creates a new file; refuses to overwrite (EEXIST). */
  static async create(path: string): Promise<VhdxFile> {
    return new VhdxFile(await open(path, 'wx+', 0o600), 0, false);
  }

  /** Makes the logged writes visible to reads without touching the file (read-only replay). */
  setOverlay(pieces: OverlayPiece[], virtualFileSize: number): void {
    this.overlay = pieces;
    this.size = Math.max(this.size, virtualFileSize);
  }

  /** Fills buf from the file at pos; throws corrupt when the range is not inside the file. */
  async read(buf: Buffer, pos: number, what = 'image'): Promise<void> {
    if (pos < 0 || pos + buf.length > this.size) throw ErrCorrupt(`${what} at offset ${pos} lies beyond the end of the file`);
    let done = 0;
    while (done < buf.length) {
      const { bytesRead } = await this.fh.read(buf, done, buf.length - done, pos + done);
      if (bytesRead === 0) {
        // Only an overlay can make the file look longer than it is; the rest reads as zeros.
        buf.fill(0, done);
        break;
      }
      done += bytesRead;
    }
    if (this.overlay.length > 0) this.applyOverlay(buf, pos);
  }

  private applyOverlay(buf: Buffer, pos: number): void {
    const end = pos + buf.length;
    for (const p of this.overlay) {
      const s = Math.max(p.at, pos);
      const e = Math.min(p.at + p.length, end);
      if (s >= e) continue;
      if (p.data) p.data.copy(buf, s - pos, s - p.at, e - p.at);
      else buf.fill(0, s - pos, e - pos);
    }
  }

  async write(data: Buffer, pos: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, pos + done);
      done += bytesWritten;
    }
    if (pos + data.length > this.size) this.size = pos + data.length;
  }

  /**
   * Writes data at pos through to the device, past the page cache (O_DIRECT), when it can: pos and
   * data.length must be multiples of DirectAlign and data's memory page aligned (shared/direct-io.ts).
   * Returns false, having written nothing, when this file cannot take such writes (no O_DIRECT on
   * this platform or filesystem, or the write was refused as unaligned); the caller then writes the
   * ordinary way. Durability is as for write(): only sync() makes either durable.
   */
  async writeThrough(data: Buffer, pos: number): Promise<boolean> {
    const fh = this.direct ?? (this.direct === null ? null : await this.openDirect());
    if (!fh) return false;
    if (!(await writeThrough(fh, data, pos))) {
      this.direct = null; // refused as unaligned: this file writes the ordinary way from now on
      await fh.close().catch(() => undefined);
      return false;
    }
    if (pos + data.length > this.size) this.size = pos + data.length;
    return true;
  }

  private openDirect(): Promise<FileHandle | null> {
    this.directOpening ??= (this.readOnly ? Promise.resolve(null) : openThrough(this.fh, 'write')).then((fh) => (this.direct = fh));
    return this.directOpening;
  }

  /** Writes length zero bytes at pos from a shared zero buffer. */
  async writeZeros(pos: number, length: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const n = Math.min(ZeroChunk.length, length - done);
      await this.write(ZeroChunk.subarray(0, n), pos + done);
      done += n;
    }
  }

  /** Extends (never shrinks) the file to size bytes; the new range reads as zeros. */
  async extend(size: number): Promise<void> {
    if (size <= this.size) return;
    await this.fh.truncate(size);
    this.size = size;
  }

  /** Data barrier: everything written so far is durable when it returns. */
  async sync(): Promise<void> {
    await this.fh.datasync();
  }

  async allocatedBytes(): Promise<number> {
    const st = await this.fh.stat();
    return st.blocks * 512;
  }

  async close(): Promise<void> {
    const direct = this.direct ?? (await this.directOpening);
    this.direct = null;
    await direct?.close();
    await this.fh.close();
  }
}

/** One shared, never written, zero buffer for zero-fill writes. */
export const ZeroChunk = Buffer.alloc(1 << 20);
