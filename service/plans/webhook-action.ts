/**
 * A plan's webhook action: a POST of JSON signed per Standard Webhooks with the plan's own secret
 * (shared/protocol/standard-webhooks.ts; one attempt is the events module's postOnce: no redirect
 * followed, 1 KiB of the answer read), sent again with backoff until the receiver answers 2xx or the
 * action's timeout passes. Every attempt keeps the message id (the receiver's idempotency key, the
 * same after a resumed run) under a new timestamp and signature.
 *
 * Output: the status and attempts of the 2xx; throws Error naming the last answer (status and the
 * start of its body, or why none came) when the timeout passed; 'cancelled' when shouldStop() said so
 * between attempts.
 */
import { parseSecret, signHeaders } from '../../shared/protocol/standard-webhooks.js';
import { postOnce } from '../events/post.js';

/** One attempt's limit; the first backoff, doubled per attempt up to the maximum. */
const AttemptTimeoutMs = 10_000;
const FirstBackoffMs = 500;
const MaxBackoffMs = 15_000;

export interface WebhookCall {
  url: string;
  secret: string;
  messageId: string;
  body: Record<string, unknown>;
  timeoutSeconds: number;
  /**
   * Only public addresses may be reached (the events module's rule for receivers a tenant chose): a
   * plan is the tenant's, so its webhooks may not call the hoster's loopback, private or link-local
   * services unless the config's webhooks.allowPrivateTargets says so. Refused at once, not retried.
   */
  publicOnly: boolean;
  /** Asked between attempts: true ends the call with 'cancelled'. */
  shouldStop(): Promise<boolean>;
}

export async function callWebhook(call: WebhookCall): Promise<{ status: number; attempts: number } | 'cancelled'> {
  const key = parseSecret(call.secret, 'plan webhook secret');
  const body = JSON.stringify(call.body);
  const deadline = Date.now() + call.timeoutSeconds * 1000;
  for (let attempt = 1, backoff = FirstBackoffMs; ; attempt++, backoff = Math.min(MaxBackoffMs, backoff * 2)) {
    const headers = { 'content-type': 'application/json', 'user-agent': 'lifeboat-plan-run', ...signHeaders(key, body, call.messageId) };
    const r = await postOnce(call.url, headers, body, Math.max(100, Math.min(AttemptTimeoutMs, deadline - Date.now())), { publicOnly: call.publicOnly });
    if (r.ok) return { status: r.status!, attempts: attempt };
    if (r.error?.startsWith('EPRIVATE')) throw new Error(`${r.error} (webhooks.allowPrivateTargets lifts the rule)`);
    const last = `${r.error ?? `HTTP ${r.status}`}${r.excerpt ? ` ${JSON.stringify(r.excerpt.slice(0, 200))}` : ''}`;
    if (Date.now() + backoff >= deadline) throw new Error(`${new URL(call.url).host} did not answer 2xx within ${call.timeoutSeconds} s (${attempt} attempt${attempt > 1 ? 's' : ''}; last: ${last})`);
    if (await call.shouldStop()) return 'cancelled';
    await new Promise((res) => setTimeout(res, backoff));
  }
}
