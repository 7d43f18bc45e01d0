/**
 * Per-key rate limits through the real service and the shared Redis: a key over its minute gets a
 * 429 problem with Retry-After, other keys and JWTs go on; with Redis not answering requests pass.
 */
import { Hono } from 'hono';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rateLimit } from '../../service/api/rate-limit.js';
import { problemHandler } from '../../service/http/problem.js';
import { startService } from '../../service/runner.js';
import type { ApiClaims } from '../../service/trust/tokens.js';
import { freePort } from '../helpers.js';
import type { TestEnv } from './helpers.js';
import { operator, testEnv } from './helpers.js';

let env: TestEnv;
let svc: Awaited<ReturnType<typeof startService>>;
const Limit = 5;

beforeAll(async () => {
  env = await testEnv((c) => {
    (c.api as Record<string, unknown>).rateLimitPerMinute = Limit;
  });
  // failoverApi: the process connects to Redis as `serve` does (no workers, no failover host).
  svc = await startService(env.config, { apiPort: 0, workers: false, log: pino({ level: 'silent' }), enqueue: async () => undefined, failoverApi: true });
  expect((await operator(svc, 'POST', '/v1/tenants', { name: 'acme' })).status).toBe(201);
});
afterAll(async () => {
  await svc?.stop();
  await env?.cleanup();
});

const newKey = async () => (await operator<{ key: string }>(svc, 'POST', '/v1/api-keys', { name: 'limited', role: 'tenant-viewer', tenant: 'acme' })).body.key;
const get = (key: string) => fetch(`${svc.apiUrl}/v1/tenants/acme/failovers`, { headers: { authorization: `Bearer ${key}` } });

describe('rate limits', () => {
  it('refuse a key past its requests of the minute with 429, Retry-After and a problem; other keys go on', async () => {
    const [a, b] = [await newKey(), await newKey()];
    // A minute boundary in the middle would start a new window: try again in the next one then.
    let refused: Response | undefined;
    for (let attempt = 0; attempt < 2 && !refused; attempt++) {
      const answers: Response[] = [];
      for (let i = 0; i <= Limit; i++) answers.push(await get(a));
      if (answers.slice(0, Limit).every((r) => r.status === 200) && answers[Limit]!.status === 429) refused = answers[Limit];
      else if (attempt === 0) await new Promise((r) => setTimeout(r, 61_000 - (Date.now() % 60_000)));
    }
    expect(refused, 'the request after the limit is refused').toBeDefined();
    expect(refused!.headers.get('content-type')).toBe('application/problem+json');
    const retryAfter = Number(refused!.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(await refused!.json()).toMatchObject({ status: 429, code: 'rate_limited', type: 'https://lifeboat.dev/problems/rate_limited' });
    const other = await get(b);
    expect(other.status).toBe(200);
    expect(other.headers.get('ratelimit-limit')).toBe(String(Limit));
    expect(Number(other.headers.get('ratelimit-remaining'))).toBe(Limit - 1);
    // JWTs are not limited.
    for (let i = 0; i <= Limit; i++) expect((await operator(svc, 'GET', '/v1/tenants')).status).toBe(200);
  }, 150_000);

  it('let requests through when Redis does not answer', async () => {
    const down = new Redis({ port: await freePort(), lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 });
    down.on('error', () => undefined);
    const app = new Hono<{ Variables: { operator: ApiClaims } }>();
    app.onError(problemHandler(pino({ level: 'silent' })));
    app.use('*', async (c, next) => {
      c.set('operator', { role: 'tenant-viewer', tenant: 'acme', sub: 'key:0123456789abcdef', keyId: '0123456789abcdef' });
      await next();
    });
    app.use('*', rateLimit(down, { perMinute: 1, log: pino({ level: 'silent' }) }));
    app.get('/x', (c) => c.text('ok'));
    for (let i = 0; i < 3; i++) expect((await app.request('/x')).status).toBe(200);
    down.disconnect();
  });
});
