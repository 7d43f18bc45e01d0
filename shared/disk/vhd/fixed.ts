/** Fixed VHDs: the virtual disk stored flat at the start of the file, the footer after it. */
import type { FileHandle } from 'node:fs/promises';
import { ErrCorrupt } from '../../errors.js';
import { FlatRegion, writeFull } from '../raw.js';
import type { Extent, ExtentQuery } from '../types.js';
import { VhdImage } from './base.js';
import { FooterSize, serializeFooter, type Footer } from './footer.js';

export class FixedVhd extends VhdImage {
  readonly blockSize = undefined;
  protected subformat = 'fixed';
  private readonly region: FlatRegion;

  constructor(path: string, fh: FileHandle, footer: Footer, fileSize: number, readOnly: boolean) {
    super(path, fh, footer, readOnly);
    if (this.virtualSize > fileSize - FooterSize) {
      throw ErrCorrupt(`fixed VHD truncated: its footer says ${this.virtualSize} bytes of data, the file holds ${fileSize - FooterSize}`);
    }
    this.region = new FlatRegion(fh, 0, this.virtualSize);
  }

  read(offset: number, buf: Buffer): Promise<void> { return this.region.read(offset, buf); }
  async write(offset: number, data: Buffer): Promise<void> { this.writable(); await this.region.write(offset, data); }
  async zero(offset: number, length: number): Promise<void> { this.writable(); await this.region.zero(offset, length); }
  extents(query: ExtentQuery = {}): AsyncIterable<Extent> { return this.region.extents(query, query.layer === 'own'); }

  /** Moves the footer to the new end; the old footer's bytes become data and are zeroed first. */
  async resize(newVirtualSize: number): Promise<void> {
    this.writable();
    const footer = this.grownFooter(newVirtualSize);
    const { size } = await this.fh.stat();
    await writeFull(this.fh, Buffer.alloc(size - this.virtualSize), this.virtualSize);
    await writeFull(this.fh, serializeFooter(footer), newVirtualSize);
    await this.fh.truncate(newVirtualSize + FooterSize);
    this.footer = footer;
    this.virtualSize = newVirtualSize;
    this.region.size = newVirtualSize;
  }
}
