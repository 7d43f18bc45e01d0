/**
 * The failback request (docs/failback.md): checked and recorded in one transaction with the failover
 * moved to `failing-back` (so the host's monitor no longer treats a powered-off VM as a dead one),
 * then handed to the failover host that runs the VM (job `failback` on its queue: job.ts).
 *
 * Accepted for a committed real failover (its overlay holds the whole disk), or one left
 * `failing-back` by a failback that failed before its VM was removed (asking again resumes). A
 * failover that is still running on the point is refused: commit it first. A second request while
 * one is live answers the live one (repeated: true). A failover of another tenant is a missing one.
 */
import { randomUUID } from 'node:crypto';
import type { FailbackRow } from '../catalog/failbacks.js';
import { getFailback, insertFailback, latestFailbackOf } from '../catalog/failbacks.js';
import type { FailoverRow } from '../catalog/failovers.js';
import { getFailover, setFailoverState } from '../catalog/failovers.js';
import type { ServiceContext } from '../context.js';
import { ErrConflict, ErrNotFoundHere } from '../errors.js';
import { addStep } from '../failover/steps.js';
import type { FailoverQueues } from '../failover/queue.js';

export const FailbackJobName = 'failback';
/** Seconds the guest is given to power off after system_powerdown, unless the request says. */
export const DefaultShutdownTimeoutSeconds = 300;

export interface FailbackRequest {
  /** The caller's tenant (a tenant role), or undefined for a hoster role. */
  tenant: string | undefined;
  failoverId: string;
  shutdownTimeoutSeconds: number;
  requestedBy: string;
}

/** The failover a caller may see: another tenant's is answered as missing. */
export async function visibleFailover(ctx: ServiceContext, tenant: string | undefined, id: string): Promise<FailoverRow> {
  const f = /^fo-[a-z0-9-]{1,40}$/.test(id) ? await getFailover(ctx.db, id) : undefined;
  if (!f || (tenant !== undefined && f.tenant !== tenant)) throw ErrNotFoundHere(`no failover ${id.slice(0, 60)}`);
  return f;
}

export async function requestFailback(ctx: ServiceContext, queues: FailoverQueues, req: FailbackRequest): Promise<{ failback: FailbackRow; repeated: boolean }> {
  const f = await visibleFailover(ctx, req.tenant, req.failoverId);
  const last = await latestFailbackOf(ctx.db, f.id);
  if (last && last.endedAt === null) return { failback: last, repeated: true };
  if (f.kind === 'test') throw ErrConflict('wrong_kind', `failover ${f.id} is a test failover: it is stopped, not failed back (the VM never left home)`);
  if (f.state === 'running' || f.state === 'committing') {
    throw ErrConflict('not_committed', `failover ${f.id} is ${f.state}: its VM still reads the recovery point; commit it first (lifeboat-service failover commit ${f.id}), then fail back`);
  }
  if (f.state !== 'committed' && f.state !== 'failing-back') throw ErrConflict('ended', `failover ${f.id} is ${f.state}; there is nothing to fail back`);
  if (f.goal !== 'committed') throw ErrConflict('reverting', `failover ${f.id} is being ${f.goal === 'reverted' ? 'reverted' : 'stopped'}`);
  const id = `fb-${Date.now().toString(36)}-${randomUUID().slice(0, 8)}`;
  let failback: FailbackRow;
  try {
    failback = await ctx.db.transaction(async (tx) => {
      const row = await insertFailback(tx, { id, tenant: f.tenant, vm: f.vm, failoverId: f.id, host: f.host, shutdownTimeoutSeconds: req.shutdownTimeoutSeconds, requestedBy: req.requestedBy });
      await setFailoverState(tx, f.id, 'failing-back');
      await addStep(tx, f.id, 'failback requested', 'done', `failback ${id}`, req.requestedBy);
      return row;
    });
  } catch (err) {
    // Two requests raced past the check above: the unique index keeps one live failback per failover.
    if ((err as { code?: string }).code === '23505') {
      const live = await latestFailbackOf(ctx.db, f.id);
      if (live) return { failback: live, repeated: true };
    }
    throw err;
  }
  await enqueueFailback(queues, failback);
  return { failback: (await getFailback(ctx.db, id)) ?? failback, repeated: false };
}

export async function enqueueFailback(queues: FailoverQueues, fb: Pick<FailbackRow, 'id' | 'host'>): Promise<void> {
  if (fb.host) await queues.enqueueJob(fb.host, FailbackJobName, `failback.${fb.id}`, { id: fb.id });
}
