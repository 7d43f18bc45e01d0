/**
 * The events a plan run emits: `plan-run.step-changed` (a step started, ended, or the run itself
 * changed state) and `plan-run.manual-step-waiting` (the run waits for an approval). This is their one
 * call site: when the service's events module (webhook subscriptions, issue 15 "Events and webhooks")
 * lands, emitPlanRunEvent hands them to it; until then they are logged, one line each.
 */
import type { ServiceContext } from '../context.js';

export interface PlanRunEvent {
  type: 'plan-run.step-changed' | 'plan-run.manual-step-waiting';
  tenant: string;
  plan: string;
  run: string;
  mode: string;
  /** The step's index in the run (null: the run as a whole), its name and status. */
  stepIndex: number | null;
  step: string;
  status: string;
  detail: string | null;
  at: string;
}

export function emitPlanRunEvent(ctx: Pick<ServiceContext, 'log'>, event: PlanRunEvent): void {
  ctx.log.info({ event }, event.type);
}
