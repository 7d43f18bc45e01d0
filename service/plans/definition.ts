/**
 * A recovery plan's definition (validated with zod) and the steps a run of it goes through.
 *
 * A plan: ordered groups; each group a set of VMs started in parallel, with actions before and after
 * it (wait until every VM of the group is ready, a delay, a signed webhook call waiting for 2xx, a
 * manual step waiting for approval) and a failure policy (stop the run, or continue with the next
 * step). Per plan: the point every VM fails over from (latest, latest-consistent, or a time). No cap
 * on groups or VMs beyond the request body's size.
 *
 * compileSteps(): the flat list a run walks with its cursor. A planned run first shuts the VMs down
 * group by group in the reverse of the start order; every run then takes one cut across all its VMs
 * before the first group starts.
 */
import { z } from 'zod';
import { IdPattern } from '../../shared/protocol/schemas.js';

/** Plan, group and VM names are ids as the agent protocol spells them (a path segment takes them). */
const idMessage = 'must be 1 to 64 of [a-z0-9_-], starting with a letter or digit';
const vmName = z.string().regex(IdPattern, idMessage);

/** As the webhook failover driver asks: https, or plain http to this machine only. */
function httpsOrLoopback(url: string): boolean {
  const u = new URL(url);
  return u.protocol === 'https:' || ['127.0.0.1', '[::1]', 'localhost'].includes(u.hostname);
}

export const DefaultReadyTimeoutSeconds = 900;
export const DefaultWebhookTimeoutSeconds = 60;
export const MaxActionSeconds = 7 * 24 * 3600;

const seconds = (dflt?: number) => (dflt === undefined ? z.number().int().min(0).max(MaxActionSeconds) : z.number().int().min(1).max(MaxActionSeconds).default(dflt));

export const actionSchema = z.discriminatedUnion('kind', [
  /** Every VM of the group ready (its failover's readiness probe answered), within timeoutSeconds. */
  z.strictObject({ kind: z.literal('wait-ready'), timeoutSeconds: seconds(DefaultReadyTimeoutSeconds) }),
  z.strictObject({ kind: z.literal('delay'), seconds: seconds() }),
  /** A signed POST (Standard Webhooks, the plan's secret) retried until a 2xx or timeoutSeconds. */
  z.strictObject({
    kind: z.literal('webhook'),
    url: z.url({ protocol: /^https?$/ }).max(2048).refine(httpsOrLoopback, 'must be https (http only to a loopback address)'),
    timeoutSeconds: seconds(DefaultWebhookTimeoutSeconds),
  }),
  /** The run waits until approved through the API: by the tenant's operators (or the hoster's), or by the hoster's alone. */
  z.strictObject({ kind: z.literal('manual'), message: z.string().min(1).max(1000), approver: z.enum(['tenant', 'hoster']).default('tenant') }),
]);
export type PlanAction = z.infer<typeof actionSchema>;

export const groupSchema = z.strictObject({
  name: z.string().regex(IdPattern, idMessage).optional(),
  vms: z.array(vmName).min(1),
  onFailure: z.enum(['stop', 'continue']).default('stop'),
  before: z.array(actionSchema).default([]),
  after: z.array(actionSchema).default([]),
});

/** latest, latest-consistent, or an ISO 8601 time (the newest point captured at or before it). */
export const pointChoiceSchema = z.union([z.literal('latest'), z.literal('latest-consistent'), z.iso.datetime({ offset: true })]);
export type PointChoice = z.infer<typeof pointChoiceSchema>;

export const planBodySchema = z.strictObject({
  description: z.string().max(2000).default(''),
  point: pointChoiceSchema.default('latest'),
  groups: z.array(groupSchema).min(1),
}).superRefine((p, ctx) => {
  const seen = new Map<string, number>();
  p.groups.forEach((g, gi) => g.vms.forEach((vm, vi) => {
    const first = seen.get(vm);
    if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['groups', gi, 'vms', vi], message: `VM ${vm} is already in group ${first + 1}` });
    else seen.set(vm, gi);
  }));
});
export type PlanDefinition = z.infer<typeof planBodySchema>;

export const planCreateSchema = planBodySchema.safeExtend({ name: z.string().regex(IdPattern, idMessage) });

export type RunMode = 'test' | 'planned' | 'unplanned';

/** One step of a run. `group` is the group's index (0-based); the cut has none. */
export type RunStep =
  | { kind: 'shutdown'; group: number }
  | { kind: 'cut' }
  | { kind: 'start'; group: number }
  | ({ group: number; when: 'before' | 'after' } & PlanAction);

export function compileSteps(plan: PlanDefinition, mode: RunMode): RunStep[] {
  const steps: RunStep[] = [];
  if (mode === 'planned') for (let g = plan.groups.length - 1; g >= 0; g--) steps.push({ kind: 'shutdown', group: g });
  steps.push({ kind: 'cut' });
  plan.groups.forEach((group, g) => {
    for (const a of group.before) steps.push({ ...a, group: g, when: 'before' });
    steps.push({ kind: 'start', group: g });
    for (const a of group.after) steps.push({ ...a, group: g, when: 'after' });
  });
  return steps;
}

/** A step's name in reports: "group 2 (db) after: wait-ready". */
export function stepName(plan: PlanDefinition, s: RunStep): string {
  if (s.kind === 'cut') return 'cut';
  const g = `group ${s.group + 1}${plan.groups[s.group]?.name ? ` (${plan.groups[s.group]!.name})` : ''}`;
  if (s.kind === 'shutdown' || s.kind === 'start') return `${g}: ${s.kind}`;
  return `${g} ${s.when}: ${s.kind}`;
}
