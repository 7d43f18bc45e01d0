/**
 * Continuity between the agent's state and the service's view of a disk. The agent's progress can
 * fall out of step with the service: a restored host backup or a copied state directory (the service
 * applied or holds logs the agent does not remember sending), an identity replaced by hand (the
 * service holds no base at all). Shipping on from such a state fails for ever ("committed before with
 * another size or digest") or piles up logs the service can never apply. Either way the disk starts a
 * base of a new generation, as after lost state: a delta against the replica where the service holds
 * a complete one, the whole disk where it holds none.
 */
import { rm } from 'node:fs/promises';
import type { DiskProgress } from '../state/schema.js';
import { ServiceError } from '../transport/http-client.js';
import type { DiskStatus } from '../transport/types.js';
import type { ProgressBook } from './context.js';

/**
 * Why the service's expectations (status §5.3 `expect`) rule out shipping logs from this progress,
 * or undefined when they agree. Only for a disk whose base the agent holds done.
 */
export function outOfStep(sd: DiskStatus | undefined, p: DiskProgress): string | undefined {
  if (sd === undefined || p.initial.state !== 'done') return undefined;
  const { action, generation, nextSequence } = sd.expect;
  if (action === 'initial') return `the service holds no base of this disk (this agent's state is at generation ${p.generation}): sending a new base`;
  if (action !== 'logs') return undefined;
  if (generation > p.generation) return `the service is at generation ${generation}, this agent's state at ${p.generation} (a restored or copied state directory?): sending a base of a new generation`;
  if (generation === p.generation && nextSequence > p.nextSequence) {
    return `the service applied log ${generation}/${nextSequence - 1}, this agent's state is at ${p.generation}/${p.nextSequence - 1} (a restored or copied state directory?): sending a base of a new generation`;
  }
  return undefined;
}

/** Whether the service refused a log because it holds other logs of that position or a newer generation. */
export function isOutOfStepRefusal(err: unknown): boolean {
  return err instanceof ServiceError && (err.reason === 'commit_differs' || err.reason === 'stale_generation' || err.reason === 'size_mismatch');
}

/**
 * Puts the disk on a base of a new generation: its unacknowledged logs (refused, or sealed for a
 * position the service no longer takes) are dropped with their spool files.
 */
export async function restartDisk(book: ProgressBook, diskId: string, reason: string): Promise<void> {
  const logs = book.progress.disks[diskId]!.inflight.filter((o) => o.kind === 'log');
  await book.update((p) => {
    const d = p.disks[diskId]!;
    d.inflight = d.inflight.filter((o) => o.kind !== 'log');
    d.resyncReason = reason;
    d.initial.state = 'pending';
    p.pendingBytes = Math.max(0, p.pendingBytes - logs.reduce((n, o) => n + o.changedBytes, 0));
  });
  for (const o of logs) if (o.spool) await rm(o.spool, { force: true });
}
