/**
 * The final cycle of a planned failover: one cycle of every disk of the VM after it was shut down,
 * application-consistent (the VM is off, so its disks are at rest), shipped and acknowledged by the
 * service before this returns. What the engine's own cycle would still owe first (a log in flight
 * from before a restart, a base under way or asked for by the service) is done by catch-up cycles of
 * the engine, so the final cycle is a log of every disk at one VM cycle id.
 *
 * Output: the final cycle's id and capture time, as its logs' headers and commits carry them.
 * Failure: the engine's errors (the service unreachable, a disk unreadable); nothing is recorded as
 * failed over, and running it again is harmless (another cycle, empty since the VM is off).
 */
import type { DiskImage } from '../../shared/disk/index.js';
import { openDisk } from '../../shared/disk/index.js';
import { LifeboatError } from '../../shared/errors.js';
import { ProgressBook } from '../replicate/context.js';
import { diskCycle, recoverLogs } from '../replicate/cycle.js';
import type { Replicator } from '../replicate/engine.js';
import { isLive, openLiveView } from '../replicate/live.js';
import { withRetry } from '../replicate/retry.js';

/** Catch-up cycles of the engine at most before the final one (a base may take one each). */
export const MaxCatchUpCycles = 5;

export interface FinalCycle {
  cycle: number;
  capturedAt: string;
  consistency: 'application';
}

export async function runFinalCycle(replicator: Replicator, vm: string): Promise<FinalCycle> {
  const { ctx } = replicator;
  for (let i = 0; ; i++) {
    const why = await owed(replicator, vm);
    if (why === undefined) break;
    if (i >= MaxCatchUpCycles) throw new LifeboatError('conflict', `${vm}: the final cycle cannot run yet: ${why} after ${MaxCatchUpCycles} catch-up cycles`);
    ctx.logger.info({ vm, why }, 'catch-up cycle before the final cycle');
    const r = await replicator.cycle(vm);
    if (r.outcome === 'skipped') throw new LifeboatError('conflict', `${vm}: the final cycle cannot run: ${why}, and the engine skips the VM (paused or not started yet)`);
  }

  const config = await ctx.state.readConfig(vm);
  const book = await ProgressBook.load(ctx.state, vm);
  const disks = new Map<string, DiskImage>();
  // A live source's VM is off: its qemu still up (-no-shutdown), a libvirt domain started paused; its disks are read through views.
  const live = isLive(config) ? await openLiveView(ctx.state, config, false, ctx.hypervRunner, true) : undefined;
  try {
    for (const d of config.disks) disks.set(d.id, live ? live.disks.get(d.id)!.image : await openDisk(d.path, { readOnly: true }));
    for (const d of config.disks) await recoverLogs(ctx, book, config, d.id);
    const started = ctx.now();
    // The engine's rule for cycle ids: max(nextCycle, now), recorded before anything is sealed.
    const id = Math.max(book.progress.nextCycle, started.getTime());
    await book.update((p) => { p.nextCycle = id + 1; });
    const vmCycle = { id, capturedMs: ctx.now().getTime() };
    let changedBytes = 0;
    let sentBytes = 0;
    for (const d of config.disks) {
      const r = await diskCycle(ctx, book, config, d.id, disks.get(d.id)!, 'application', async () => {}, vmCycle, live?.disks.get(d.id)!.cycle);
      changedBytes += r.changedBytes;
      sentBytes += r.sentBytes;
    }
    const finished = ctx.now();
    await book.update((p) => {
      p.lastCycle = {
        startedAt: started.toISOString(), finishedAt: finished.toISOString(), consistency: 'application', changedBytes, sentBytes,
        logs: config.disks.length, outcome: 'ok', error: null, warnings: ['final cycle of a planned failover'],
      };
      p.lastCapturedAt = started.toISOString();
      p.lastAppConsistentAt = started.toISOString();
      p.counts.ok++;
    });
    ctx.logger.info({ vm, cycle: id, changedBytes, sentBytes }, 'final cycle shipped');
    return { cycle: id, capturedAt: new Date(vmCycle.capturedMs).toISOString(), consistency: 'application' };
  } finally {
    for (const disk of disks.values()) await disk.close();
    await live?.close();
  }
}

/** What the engine still owes before a plain log of every disk can go out; undefined when nothing. */
async function owed(replicator: Replicator, vm: string): Promise<string | undefined> {
  const { ctx } = replicator;
  const config = await ctx.state.readConfig(vm);
  const progress = await ctx.state.readProgress(vm);
  if (!progress.registered) return 'the VM is not registered with the service yet';
  for (const d of config.disks) {
    const p = progress.disks[d.id];
    if (!p || p.initial.state !== 'done') return `${d.id} has no complete base yet`;
    if (p.resyncReason !== null) return `${d.id} needs a resynchronization`;
  }
  const status = await withRetry(() => ctx.transport.vmStatus(vm), ctx.retry);
  for (const d of config.disks) {
    const sd = status.disks.find((x) => x.id === d.id);
    if (!sd || sd.expect.action !== 'logs' || sd.state !== 'replicating') return `the service expects ${sd ? `${sd.expect.action} of ${d.id} (${sd.state})` : `no disk ${d.id}`}`;
    if (sd.generation !== progress.disks[d.id]!.generation) return `${d.id} is at generation ${progress.disks[d.id]!.generation}, the service at ${sd.generation}`;
  }
  return undefined;
}
