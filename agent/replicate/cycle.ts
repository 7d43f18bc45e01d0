/**
 * One replication cycle of one disk: the tracker's changed extents become a log (shared/log), sealed
 * to the tenant's replica key, spooled, uploaded through a grant and committed. Only after the
 * service acknowledged the commit does the tracker forget the changes; a failure anywhere before
 * leaves them for the next cycle, which therefore carries them.
 *
 * Ordering (each step durable before the next): scan finished and pending map fsynced → log spooled
 * and fsynced → inflight recorded in progress.json → upload → commit acknowledged → map committed →
 * inflight removed and the sequence advanced. A restart finds the inflight record and ships the
 * spooled bytes again (recoverLogs) before any new cycle.
 */
import type { DiskImage } from '../../shared/disk/index.js';
import { writeLog } from '../../shared/log/index.js';
import type { Consistency } from '../../shared/log/index.js';
import type { InflightObject, VmConfig } from '../state/schema.js';
import type { TrackedCycle } from '../tracker/types.js';
import type { EngineContext, ProgressBook } from './context.js';
import { shipInflight } from './ship.js';
import { spool } from './spool.js';
import { scanTrackerFor, spoolPath } from './trackers.js';

/** The VM cycle a disk's log belongs to: its id and capture time, the same for every disk of the VM. */
export interface VmCycle {
  id: number;
  capturedMs: number;
}

export interface DiskCycleResult {
  changedBytes: number;
  sentBytes: number;
}

/** Ships logs sealed before a restart and commits their tracker state. */
export async function recoverLogs(ctx: EngineContext, book: ProgressBook, config: VmConfig, disk: string): Promise<number> {
  const pending = book.progress.disks[disk]?.inflight.filter((o) => o.kind === 'log') ?? [];
  let sent = 0;
  for (const o of pending) {
    await shipInflight(ctx, config.name, disk, o, config.bandwidthBytesPerSec);
    await scanTrackerFor(ctx.state, config.name, disk).commitPending();
    await book.update((p) => {
      const d = p.disks[disk]!;
      d.inflight = d.inflight.filter((x) => x !== o && !(x.kind === 'log' && x.number === o.number && x.generation === o.generation));
      d.nextSequence = Math.max(d.nextSequence, o.number + 1);
      p.pendingBytes = Math.max(0, p.pendingBytes - o.changedBytes);
    });
    sent += o.size;
  }
  return sent;
}

/**
 * Runs one cycle of one disk (with `tracked`, the live source's cycle over the view `disk` reads; else
 * the scan tracker's); its log carries vmCycle (the engine always passes it; without it the
 * log is version 1, as from an older agent). onCaptured runs once the disk's changed data has been read into the
 * sealed log (where an application-consistent cycle thaws the application).
 */
export async function diskCycle(
  ctx: EngineContext, book: ProgressBook, config: VmConfig, diskId: string, disk: DiskImage,
  consistency: Consistency, onCaptured: () => Promise<void> = async () => {}, vmCycle?: VmCycle, tracked?: TrackedCycle,
): Promise<DiskCycleResult> {
  const vm = config.name;
  const progress = book.progress.disks[diskId]!;
  const { generation, nextSequence: sequence } = progress;
  // A live source brings its own cycle (qemu: the frozen dirty bitmap of the view `disk` reads); else the scan.
  const cycle = tracked ?? await scanTrackerFor(ctx.state, vm, diskId).begin(disk);
  const createdAt = ctx.now();
  let spooled;
  try {
    const { sealed, release } = writeLog(
      { tenant: ctx.tenant, vm, disk: diskId, generation, sequence, virtualSize: disk.virtualSize, consistency, compression: config.compression, createdMs: createdAt.getTime(), kind: 'incremental', ...(vmCycle ? { cycle: vmCycle.id, capturedMs: vmCycle.capturedMs } : {}) },
      { extents: cycle.extents(), read: (offset, buf) => disk.read(offset, buf) },
      { recipient: ctx.recipient },
    );
    spooled = await spool(spoolPath(ctx.state, vm, diskId, 'log', generation, sequence), sealed, release);
  } finally {
    await onCaptured();
  }
  const inflight: InflightObject = {
    kind: 'log', generation, number: sequence, spool: spooled.path, size: spooled.size, sha256: spooled.sha256,
    consistency, createdAt: createdAt.toISOString(), changedBytes: cycle.changedBytes,
    cycle: vmCycle?.id ?? null, capturedAt: vmCycle ? new Date(vmCycle.capturedMs).toISOString() : null,
  };
  await book.update((p) => {
    p.disks[diskId]!.inflight.push(inflight);
    p.pendingBytes += cycle.changedBytes;
  });
  await shipInflight(ctx, vm, diskId, inflight, config.bandwidthBytesPerSec);
  await cycle.commit();
  await book.update((p) => {
    const d = p.disks[diskId]!;
    d.inflight = d.inflight.filter((x) => !(x.kind === 'log' && x.number === sequence && x.generation === generation));
    d.nextSequence = sequence + 1;
    d.virtualSize = disk.virtualSize;
    p.pendingBytes = Math.max(0, p.pendingBytes - cycle.changedBytes);
  });
  return { changedBytes: cycle.changedBytes, sentBytes: spooled.size };
}
