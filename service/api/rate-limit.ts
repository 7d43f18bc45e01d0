/**
 * Per-key rate limits on the API (docs/api.md, Rate limits): a fixed window of one minute per API
 * key, counted in Redis so every service process shares the count. JWTs (the hoster's admin token,
 * tokens signed with the service's key) are not limited: whoever holds them holds the service.
 *
 *   key  lifeboat:ratelimit:<key id>:<minute since the epoch>   INCR, then PEXPIRE 2 min
 *
 * Over the limit: 429 rate_limited with Retry-After (seconds to the next window). Every answer
 * carries RateLimit-Limit and RateLimit-Remaining. When Redis does not answer, requests go through
 * (a limit protects the service; it is no access control) and the failure is logged at most once a
 * minute. A process without Redis (tests that run the API alone) has no limiter at all.
 */
import type { MiddlewareHandler } from 'hono';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { ErrRateLimited } from '../errors.js';
import type { ApiClaims } from '../trust/tokens.js';

export const RateLimitPrefix = 'lifeboat:ratelimit:';
const WindowMs = 60_000;

type Env = { Variables: { operator: ApiClaims } };

export interface RateLimitOptions {
  perMinute: number;
  log: Logger;
  /** The clock, for tests. */
  now?: () => number;
  prefix?: string;
}

/** Runs after authentication: counts an API key's request in the current minute, refusing beyond the limit. */
export function rateLimit(redis: Redis, o: RateLimitOptions): MiddlewareHandler<Env> {
  const now = o.now ?? Date.now;
  let lastWarned = 0;
  return async function limitRate(c, next) {
    const keyId = c.get('operator').keyId;
    if (o.perMinute <= 0 || keyId === undefined) return next();
    const caller = `key ${keyId}`;
    const t = now();
    const window = Math.floor(t / WindowMs);
    let count: number;
    try {
      const key = `${o.prefix ?? RateLimitPrefix}${keyId}:${window}`;
      const r = await redis.multi().incr(key).pexpire(key, 2 * WindowMs).exec();
      count = Number(r?.[0]?.[1] ?? 0);
    } catch (err) {
      if (t - lastWarned > WindowMs) {
        lastWarned = t;
        o.log.warn({ err: (err as Error).message }, 'rate limit: Redis did not answer; requests go through unlimited');
      }
      return next();
    }
    c.header('RateLimit-Limit', String(o.perMinute));
    c.header('RateLimit-Remaining', String(Math.max(0, o.perMinute - count)));
    if (count > o.perMinute) {
      const retryAfter = Math.max(1, Math.ceil(((window + 1) * WindowMs - t) / 1000));
      throw ErrRateLimited(retryAfter, `more than ${o.perMinute} requests a minute with ${caller}; try again in ${retryAfter} s`);
    }
    await next();
  };
}
