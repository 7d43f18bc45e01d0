/**
 * A failover's step, recorded and reported: the catalog row (catalog/failovers.ts addStep) and the
 * event failover.step_changed in the same transaction or statement sequence on db. Every step the
 * engine, the job, the host's monitor and the public-address code record goes through here, so the
 * report (GET …/failovers/{id}) and the webhooks tell the same story.
 */
import type { Queryable } from '../catalog/db.js';
import type { FailoverStepRow } from '../catalog/failovers.js';
import { addStep as addStepRow } from '../catalog/failovers.js';
import { emitEvent } from '../events/emit.js';

export async function addStep(db: Queryable, failoverId: string, step: string, status: FailoverStepRow['status'], detail?: string, cause?: string): Promise<void> {
  await addStepRow(db, failoverId, step, status, detail, cause);
  const f = (await db.query<{ tenant: string; vm: string; kind: string; state: string; goal: string }>('SELECT tenant, vm, kind, state, goal FROM failovers WHERE id = $1', [failoverId]))[0];
  if (!f) return;
  await emitEvent(db, { type: 'failover.step_changed', tenant: f.tenant, data: {
    failover: failoverId, vm: f.vm, kind: f.kind, state: f.state, goal: f.goal, step, status, detail: detail ?? null, ...(cause ? { cause } : {}),
  } });
}
