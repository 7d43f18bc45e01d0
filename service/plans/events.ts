/**
 * The events a plan run emits (docs/webhooks.md): `plan_run.step_changed` (a step started, ended, or
 * the run itself changed state) and `plan_run.manual_step_waiting` (the run waits for an approval),
 * through the service's events module, written in the caller's transaction with the change they
 * report. This is their one call site in the plans code.
 *
 * data: {plan, run, mode, stepIndex (null: the run as a whole), step, status, detail}.
 */
import type { Queryable } from '../catalog/db.js';
import { emitEvent } from '../events/emit.js';

export interface PlanRunEvent {
  type: 'plan_run.step_changed' | 'plan_run.manual_step_waiting';
  tenant: string;
  plan: string;
  run: string;
  mode: string;
  stepIndex: number | null;
  step: string;
  status: string;
  detail: string | null;
}

export async function emitPlanRunEvent(db: Queryable, e: PlanRunEvent): Promise<void> {
  await emitEvent(db, { type: e.type, tenant: e.tenant, data: { plan: e.plan, run: e.run, mode: e.mode, stepIndex: e.stepIndex, step: e.step, status: e.status, detail: e.detail } });
}
