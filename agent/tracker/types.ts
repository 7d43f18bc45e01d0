/**
 * Change tracking: which blocks of a disk changed since the last cycle the service acknowledged.
 *
 * A tracker hands out one TrackedCycle at a time. The cycle's changes are forgotten only by
 * commit(), which the engine calls after the service acknowledged the log that carries them; a crash
 * or a failed upload before that leaves the changes in place, so the next cycle resends them.
 * The shape fits the trackers planned after the scan tracker: qemu dirty bitmaps over NBD (begin =
 * freeze the bitmap and start a new one, commit = drop the frozen one, abandon = merge it back) and
 * Hyper-V resilient change tracking (begin = a new reference point, commit = keep its id).
 */
import type { DiskImage, Extent } from '../../shared/disk/index.js';

export interface TrackedCycle {
  /**
   * The extents changed since the last committed cycle, ascending and coalesced. 'zero' extents are
   * ranges the disk now defines as zeros (no data to read); 'data' extents must be read from the
   * disk. Iterate once.
   */
  extents(): AsyncIterable<Extent>;
  /** Bytes covered by the changed extents so far (final once extents() is exhausted). */
  readonly changedBytes: number;
  /** Forgets this cycle's changes. Only after the service acknowledged their log. */
  commit(): Promise<void>;
  /** Keeps the changes for the next cycle (the log was not acknowledged). Safe to call twice. */
  abandon(): Promise<void>;
}

export interface ChangeTracker {
  readonly kind: 'scan';
  /** True when the tracker has a committed baseline; false means every block counts as changed. */
  hasBaseline(): Promise<boolean>;
  /** Starts a cycle over the open disk (which must stay open until the cycle ends). */
  begin(disk: DiskImage): Promise<TrackedCycle>;
  /**
   * Commits the last cycle that was read to the end but whose acknowledgement came only after a
   * restart (its TrackedCycle object is gone). A no-op when there is none.
   */
  commitPending(): Promise<void>;
}
