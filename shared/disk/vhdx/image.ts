/**
 * A VHDX file as a DiskImage. Changes (write, zero, resize, flush, close) run one at a time;
 * reads run freely beside them. See docs/formats/vhdx.md for what each operation does on disk.
 */
import { realpath } from 'node:fs/promises';
import { ErrInvalidArgument, ErrUnsupported } from '../../errors.js';
import type { DiskImage, DiskInfo, Extent, ExtentQuery } from '../types.js';
import { VhdxCore } from './core.js';
import { FreshWrites } from './fresh.js';
import type { VhdxLayout } from './open.js';
import { makeLocator, type ParentIdentity } from './parent.js';
import { rewriteParentLocator } from './relink.js';
import { listExtents, readVirtual } from './reader.js';
import { resizeVirtual } from './resize.js';
import { writeVirtual, zeroVirtual } from './writer.js';

export class VhdxImage implements DiskImage, ParentIdentity {
  readonly format = 'vhdx' as const;
  readonly core: VhdxCore;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    readonly path: string,
    layout: VhdxLayout,
    parent: DiskImage | undefined,
    readonly readOnly: boolean,
    private readonly openParent?: (path: string) => Promise<DiskImage>,
  ) {
    this.core = new VhdxCore(layout, parent);
  }

  get parent(): DiskImage | undefined { return this.core.parent; }

  get virtualSize(): number { return this.core.virtualSize; }
  get logicalSectorSize(): number { return this.core.sectorSize; }
  get physicalSectorSize(): number { return this.core.meta.physicalSectorSize; }
  get blockSize(): number { return this.core.blockSize; }
  get dataWriteGuid(): string { return this.core.headers.current.dataWriteGuid; }

  /** Runs a change after the ones before it, so allocation and metadata never interleave. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private checkRange(offset: number, length: number, op: string): void {
    if (this.closed) throw ErrInvalidArgument(`${op}: ${this.path} is closed`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.virtualSize) {
      throw ErrInvalidArgument(`${op} of ${length} bytes at ${offset} is outside the ${this.virtualSize}-byte disk`);
    }
  }

  private checkWritable(op: string): void {
    if (this.readOnly) throw ErrUnsupported(`${op}: ${this.path} is open read-only`);
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    this.checkRange(offset, buf.length, 'read');
    await readVirtual(this.core, offset, buf);
  }

  write(offset: number, data: Buffer): Promise<void> {
    this.checkRange(offset, data.length, 'write');
    this.checkWritable('write');
    if (data.length === 0) return Promise.resolve();
    return this.exclusive(async () => {
      await this.core.beginWrites();
      await writeVirtual(this.core, offset, data);
    });
  }

  zero(offset: number, length: number): Promise<void> {
    this.checkRange(offset, length, 'zero');
    this.checkWritable('zero');
    if (length === 0) return Promise.resolve();
    return this.exclusive(async () => {
      await this.core.beginWrites();
      await zeroVirtual(this.core, offset, length);
    });
  }

  /**
   * Starts fresh writes (fresh.ts): data into new blocks that become visible only at publish().
   * Until the writer is published or abandoned, every other change to this image waits.
   */
  freshWrites(): Promise<FreshWrites> {
    this.checkWritable('write');
    if (this.closed) throw ErrInvalidArgument(`write: ${this.path} is closed`);
    return new Promise<FreshWrites>((resolve, reject) => {
      void this.exclusive(async () => {
        await this.core.beginWrites();
        // The queue stays held until the writer ends.
        await new Promise<void>((ended) => resolve(new FreshWrites(this.core, ended)));
      }).catch(reject);
    });
  }

  async *extents(query: ExtentQuery = {}): AsyncIterable<Extent> {
    const from = query.offset ?? 0;
    const length = query.length ?? this.virtualSize - from;
    this.checkRange(from, length, 'extents');
    yield* listExtents(this.core, from, from + length, query.layer ?? 'chain');
  }

  resize(newVirtualSize: number): Promise<void> {
    this.checkWritable('resize');
    return this.exclusive(() => resizeVirtual(this.core, newVirtualSize));
  }

  flush(): Promise<void> {
    if (this.readOnly || this.closed) return Promise.resolve();
    return this.exclusive(() => this.core.barrier(true));
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return this.exclusive(async () => {
      try {
        if (!this.readOnly) await this.core.barrier(true);
      } finally {
        this.closed = true;
        await this.core.file.close();
        await this.parent?.close();
      }
    });
  }

  /**
   * Links this differencing disk to the image at parentPath: its locator records that image's
   * DataWriteGuid and paths (through the log), and reads go to it from now on. The disk's own
   * DataWriteGuid stays, so disks on top of it keep their link.
   */
  setParent(parentPath: string): Promise<void> {
    this.checkWritable('set parent');
    if (!this.core.hasParent) throw ErrUnsupported(`set parent: ${this.path} is not a differencing disk`);
    return this.exclusive(async () => {
      if (!this.openParent) throw ErrUnsupported(`set parent: ${this.path} was opened without a way to open parents`);
      const next = await this.openParent(parentPath);
      try {
        if (!(next instanceof VhdxImage)) throw ErrUnsupported(`parent ${parentPath} is not a VHDX image`);
        if (next.logicalSectorSize !== this.logicalSectorSize) throw ErrInvalidArgument(`parent ${parentPath} has ${next.logicalSectorSize}-byte sectors, this disk ${this.logicalSectorSize}-byte ones`);
        const self = await realpath(this.path);
        for (let p: DiskImage | undefined = next; p; p = p.parent) {
          if ((await realpath(p.path)) === self) throw ErrInvalidArgument(`set parent: ${parentPath} is ${this.path} or one of its children`);
        }
        await rewriteParentLocator(this.core, makeLocator(this.path, parentPath, next.dataWriteGuid));
      } catch (err) {
        await next.close();
        throw err;
      }
      const old = this.core.parent;
      this.core.parent = next;
      await old?.close();
    });
  }

  async info(): Promise<DiskInfo> {
    const chain: string[] = [];
    for (let p = this.parent; p; p = p.parent) chain.push(p.path);
    const m = this.core.meta;
    return {
      path: this.path,
      format: 'vhdx',
      subformat: m.hasParent ? 'differencing' : m.leaveBlockAllocated ? 'fixed' : 'dynamic',
      virtualSize: this.virtualSize,
      logicalSectorSize: this.logicalSectorSize,
      physicalSectorSize: this.physicalSectorSize,
      blockSize: this.blockSize,
      allocatedBytes: await this.core.file.allocatedBytes(),
      parentChain: chain,
    };
  }
}
