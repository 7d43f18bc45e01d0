/**
 * Retries an operation that failed for a reason worth retrying (the service did not answer, a 5xx),
 * with exponential backoff and jitter. A user's mistake or a 4xx fails at once.
 */
import { isRetryable } from '../transport/http-client.js';

export interface RetryOptions {
  attempts?: number;
  baseMs?: number;
  maxMs?: number;
  /** Waits; tests pass one that does not sleep. */
  sleep?: (ms: number) => Promise<void>;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

export const DefaultRetryAttempts = 5;

export function backoffDelay(attempt: number, baseMs = 500, maxMs = 30_000): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** attempt);
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

const realSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function withRetry<T>(fn: () => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const attempts = options.attempts ?? DefaultRetryAttempts;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isRetryable(err) || attempt + 1 >= attempts) throw err;
      const delay = backoffDelay(attempt, options.baseMs, options.maxMs);
      options.onRetry?.(err, attempt + 1, delay);
      await (options.sleep ?? realSleep)(delay);
    }
  }
}
