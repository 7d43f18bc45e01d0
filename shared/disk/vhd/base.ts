/** What fixed and dynamic VHDs share: the handle, the footer, read-only checks, info and close. */
import type { FileHandle } from 'node:fs/promises';
import { ErrInvalidArgument, LifeboatError } from '../../errors.js';
import type { DiskImage, DiskInfo, Extent, ExtentQuery } from '../types.js';
import { chsGeometry, footerVirtualSize, OurCreatorApp, MaxVirtualSize, SectorSize, type Footer } from './footer.js';

export abstract class VhdImage implements DiskImage {
  readonly format = 'vhd' as const;
  readonly logicalSectorSize = SectorSize;
  readonly physicalSectorSize = SectorSize;
  readonly parent = undefined;
  abstract readonly blockSize: number | undefined;
  virtualSize: number;
  private closed = false;

  constructor(readonly path: string, protected readonly fh: FileHandle, protected footer: Footer, readonly readOnly: boolean) {
    this.virtualSize = footerVirtualSize(footer);
  }

  abstract read(offset: number, buf: Buffer): Promise<void>;
  abstract write(offset: number, data: Buffer): Promise<void>;
  abstract zero(offset: number, length: number): Promise<void>;
  abstract extents(query?: ExtentQuery): AsyncIterable<Extent>;
  abstract resize(newVirtualSize: number): Promise<void>;
  protected abstract subformat: string;

  async flush(): Promise<void> { if (!this.readOnly) await this.fh.datasync(); }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try { await this.flush(); } finally { await this.fh.close(); }
  }

  async info(): Promise<DiskInfo> {
    const st = await this.fh.stat();
    return {
      path: this.path, format: 'vhd', subformat: this.subformat, virtualSize: this.virtualSize,
      logicalSectorSize: SectorSize, physicalSectorSize: SectorSize, blockSize: this.blockSize,
      allocatedBytes: st.blocks * 512, parentChain: [],
    };
  }

  protected writable(): void {
    if (this.readOnly) throw new LifeboatError('forbidden', `${this.path}: opened read-only`);
  }

  /** The footer for a grown disk: sizes and geometry updated, our creator so Current Size rules. */
  protected grownFooter(newVirtualSize: number): Footer {
    if (!Number.isSafeInteger(newVirtualSize) || newVirtualSize < this.virtualSize || newVirtualSize % SectorSize !== 0 || newVirtualSize > MaxVirtualSize) {
      throw ErrInvalidArgument(`cannot resize VHD from ${this.virtualSize} to ${newVirtualSize} bytes (grow only, whole sectors, at most 2040 GiB)`);
    }
    return { ...this.footer, creatorApp: OurCreatorApp, currentSize: newVirtualSize, ...chsGeometry(newVirtualSize) };
  }
}
