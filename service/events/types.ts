/**
 * The event catalogue (docs/webhooks.md lists each type with an example payload). A type names what
 * happened, dotted resource first; its data is a small JSON object whose fields the docs give.
 * Types marked opt-in are delivered only to subscriptions that name them (a '*' filter skips them),
 * because they are frequent: point.created comes hourly per VM.
 */
export const EventTypes = [
  'replication.health_changed',
  'replication.resync_required',
  'point.created',
  'failover.step_changed',
  'plan_run.step_changed',
  'plan_run.manual_step_waiting',
  'quota.reached',
  'certificate.expiring',
  'webhook.subscription_disabled',
  'webhook.test',
] as const;

export type EventType = (typeof EventTypes)[number];

/** Delivered only where a subscription names them. */
export const OptInEventTypes: readonly EventType[] = ['point.created'];

/** Sent only by the "send test event" route, to the one subscription it names. */
export const TestEventType: EventType = 'webhook.test';

/** A subscription's filter entry meaning every type except the opt-in ones (and the test event). */
export const AllTypes = '*';

export function isEventType(t: string): t is EventType {
  return (EventTypes as readonly string[]).includes(t);
}

/** What emitEvent takes: tenant null for a hoster-wide event (seen only by hoster-wide subscriptions). */
export interface NewEvent {
  type: EventType;
  tenant: string | null;
  data: Record<string, unknown>;
  /** When it happened (default: now). */
  at?: Date;
}

/** The JSON body every delivery POSTs (signed as Standard Webhooks). */
export interface EventPayload {
  id: string;
  type: EventType;
  timestamp: string;
  tenant: string | null;
  data: Record<string, unknown>;
}
