/**
 * One cycle's read side of a point-in-time view that qemu exports over NBD, whoever set the view up:
 * the qemu source (a fleecing overlay and a frozen bitmap of ours, source.ts) or libvirt's backup job
 * in pull mode (agent/sources/libvirt-view.ts, which exports each disk with `qemu:dirty-bitmap:backup-<disk>`).
 * The changed extents come from BLOCK_STATUS of the dirty-bitmap meta context (every allocated range
 * of the view when there is none: the bitmap was lost, a resync), the bytes from READ.
 *
 * Input: a connected NbdClient and the meta context naming the dirty bitmap (undefined: lost).
 * Output: TrackedCycle's extents() and changedBytes, read()/readInto(). What ends the view, and what
 * commit() and abandon() do with the bitmap, belongs to the subclass.
 */
import type { Extent } from '../disk/index.js';
import type { NbdClient } from '../nbd/client.js';
import { BaseAllocation, NBD_STATE_ZERO } from '../nbd/protocol.js';

/** Bytes read in one READ of a dirty run. */
const ReadSlice = 4 << 20;
/** BLOCK_STATUS flag of a dirty-bitmap context: the range is dirty. */
const NBD_STATE_DIRTY = 1;

export abstract class NbdViewCycle {
  changedBytes = 0;
  /** True when there is no dirty bitmap: extents() is every allocated range (a resync). */
  readonly bitmapLost: boolean;

  constructor(protected readonly nbd: NbdClient, private readonly dirtyContext: string | undefined) {
    this.bitmapLost = dirtyContext === undefined;
  }

  /** Bytes READ from the view through NBD. */
  get readBytes(): number { return this.nbd.bytesRead; }
  get size(): number { return this.nbd.size; }

  /** Changed extents, ascending and coalesced: the bitmap's dirty runs (all data when it was lost). */
  async *extents(): AsyncGenerator<Extent> {
    if (this.dirtyContext) {
      for await (const e of this.nbd.map(this.dirtyContext)) {
        if (e.flags & NBD_STATE_DIRTY) { this.changedBytes += e.length; yield { offset: e.offset, length: e.length, kind: 'data' }; }
      }
      return;
    }
    for await (const e of this.nbd.map(BaseAllocation)) {
      // A hole without NBD_STATE_ZERO may read as data (the spec): zero only where the server says so.
      const zero = (e.flags & NBD_STATE_ZERO) !== 0;
      this.changedBytes += e.length;
      yield { offset: e.offset, length: e.length, kind: zero ? 'zero' : 'data' };
    }
  }

  /** Bytes of the view at the cycle's instant (READs of at most 4 MiB, sent together). */
  async read(offset: number, length: number): Promise<Buffer> {
    if (length <= ReadSlice) return this.nbd.read(offset, length);
    const parts: Promise<Buffer>[] = [];
    for (let at = 0; at < length; at += ReadSlice) parts.push(this.nbd.read(offset + at, Math.min(ReadSlice, length - at)));
    return Buffer.concat(await Promise.all(parts));
  }

  /** The engine's read shape (DiskImage.read): fills buf with the view's bytes at offset. */
  async readInto(offset: number, buf: Buffer): Promise<void> {
    (await this.read(offset, buf.length)).copy(buf);
  }

  /** Ends this cycle's use of the view. Idempotent. */
  abstract end(): Promise<void>;
  /** The service acknowledged the log: the changes may be forgotten. */
  abstract commit(): Promise<void>;
  /** Not acknowledged: the changes stay for the next cycle. Safe to call twice. */
  abstract abandon(): Promise<void>;
}
