/**
 * A plan's webhook action: a POST of JSON signed per Standard Webhooks with the plan's own secret
 * (service/failover/drivers/webhook-sign.ts), sent again with backoff until the receiver answers
 * 2xx or the action's timeout passes. Every attempt keeps the message id (the receiver's idempotency
 * key, the same after a resumed run) under a new timestamp and signature. Redirects are not followed.
 *
 * Output: the status and attempts of the 2xx; throws Error naming the last answer (status and the
 * start of its body, or the connection error) when the timeout passed, or 'cancelled' when
 * shouldStop() said so between attempts.
 */
import { parseSecret, signHeaders } from '../failover/drivers/webhook-sign.js';

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
  /** Asked between attempts: true ends the call with 'cancelled'. */
  shouldStop(): Promise<boolean>;
}

export async function callWebhook(call: WebhookCall): Promise<{ status: number; attempts: number } | 'cancelled'> {
  const key = parseSecret(call.secret, 'plan webhook secret');
  const body = JSON.stringify(call.body);
  const deadline = Date.now() + call.timeoutSeconds * 1000;
  let last = 'no attempt';
  for (let attempt = 1, backoff = FirstBackoffMs; ; attempt++, backoff = Math.min(MaxBackoffMs, backoff * 2)) {
    const left = deadline - Date.now();
    try {
      const res = await fetch(call.url, {
        method: 'POST', redirect: 'manual', body, signal: AbortSignal.timeout(Math.max(100, Math.min(AttemptTimeoutMs, left))),
        headers: { 'content-type': 'application/json', 'user-agent': 'lifeboat-plan-run', ...signHeaders(key, body, call.messageId) },
      });
      const text = (await res.text()).slice(0, 200);
      if (res.status >= 200 && res.status < 300) return { status: res.status, attempts: attempt };
      last = `HTTP ${res.status}${text ? ` ${JSON.stringify(text)}` : ''}`;
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      last = e.name === 'TimeoutError' ? 'no answer in time' : e.cause?.code ?? e.cause?.message ?? e.message;
    }
    if (Date.now() + backoff >= deadline) throw new Error(`${new URL(call.url).host} did not answer 2xx within ${call.timeoutSeconds} s (${attempt} attempt${attempt > 1 ? 's' : ''}; last: ${last})`);
    if (await call.shouldStop()) return 'cancelled';
    await new Promise((r) => setTimeout(r, backoff));
  }
}
