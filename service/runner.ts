/**
 * One service process: the agent endpoint (HTTPS, client certificates), the operator API, and on
 * embedded defaults the merge workers. `serve` and the tests start it through here.
 */
import type { Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { LifeboatError } from '../shared/errors.js';
import { createAgentServer } from './agent-api/server.js';
import { apiApp } from './api/app.js';
import type { Config } from './config/config.js';
import type { ServiceContext } from './context.js';
import { openContext } from './context.js';
import type { MergeQueue } from './queue.js';
import { connectRedis, createMergeQueue } from './queue.js';
import type { EnqueueMerge } from './replication/uploads.js';
import type { RunningHost } from './failover/host.js';
import { startFailoverHost } from './failover/host.js';
import { planRunExtension } from './plans/job.js';
import { failbackExtension } from './failback/job.js';
import { reverseCycleExtension } from './reverse/schedule.js';
import type { FailoverQueues } from './failover/queue.js';
import { registerFailoverMetrics } from './failover/metrics.js';
import { createFailoverQueues } from './failover/queue.js';
import { registerUsageMetrics } from './usage/metrics.js';
import { startReplicaSampler } from './usage/sampler.js';
import { registerWebhookMetrics } from './events/metrics.js';

export interface StartOptions {
  apiPort?: number | undefined;
  agentPort?: number | undefined;
  /** Run merge workers here (default: config.embeddedWorkers). */
  workers?: boolean | undefined;
  log?: Logger | undefined;
  /** Tests without Redis pass their own; otherwise BullMQ on config.redis.url. */
  enqueue?: EnqueueMerge | undefined;
  /** Run a failover host here (default: config.failover.embeddedHost; needs Redis). */
  failoverHost?: boolean | undefined;
  /** The API can start failovers (queues on Redis) even when no host runs here (default: when Redis is used). */
  failoverApi?: boolean | undefined;
}

export interface RunningService {
  ctx: ServiceContext;
  /** The failover host running in this process, when there is one. */
  failoverHost: RunningHost | undefined;
  apiUrl: string;
  agentUrl: string;
  stop(): Promise<void>;
}

export async function startService(config: Config, options: StartOptions = {}): Promise<RunningService> {
  const ctx = await openContext(config, options.log ? { log: options.log } : {});
  const closers: (() => Promise<void>)[] = [() => ctx.close()];
  const stop = async () => {
    for (const close of closers.reverse()) await close().catch((err: unknown) => ctx.log.error({ err }, 'stop'));
  };
  try {
    let queue: MergeQueue | undefined;
    let enqueue = options.enqueue;
    let failoverQueues: FailoverQueues | undefined;
    let redis: Redis | undefined;
    // Tests that pass their own enqueue run without Redis unless they ask for a failover host.
    const wantHost = options.failoverHost ?? (!enqueue && config.failover.embeddedHost);
    if (!enqueue || wantHost || options.failoverApi) {
      if (config.redis.private) {
        // No Redis configured: a private redis-server, stopped after every client (closers run in reverse).
        const { startPrivateRedis } = await import('./redis/server.js');
        const own = await startPrivateRedis(config.redis.private, ctx.log);
        closers.push(() => own.stop());
      }
      const connected = await connectRedis(config.redis.url);
      redis = connected;
      closers.push(async () => connected.disconnect());
      if (!enqueue) {
        queue = createMergeQueue(connected);
        closers.push(() => queue!.close());
        enqueue = queue.enqueue;
      }
      failoverQueues = createFailoverQueues(connected);
      closers.push(() => failoverQueues!.close());
    }
    if (options.workers ?? config.embeddedWorkers) {
      const { startMergeWorkers } = await import('./workers/run.js');
      const workers = await startMergeWorkers(ctx, { redisUrl: config.redis.url, enqueue });
      closers.push(() => workers.stop());
    }
    let failoverHost: RunningHost | undefined;
    if (wantHost) {
      try {
        failoverHost = await startFailoverHost(ctx, { extensions: [planRunExtension(), failbackExtension(), reverseCycleExtension()] });
        closers.push(() => failoverHost!.stop());
      } catch (err) {
        // Replication goes on without failover on a machine without qemu; the reason is logged once.
        if (options.failoverHost === true) throw err;
        ctx.log.warn({ err: (err as Error).message }, 'no failover host in this process');
      }
    }
    registerFailoverMetrics(ctx);
    registerUsageMetrics(ctx);
    const sampler = startReplicaSampler(ctx);
    closers.push(() => sampler.stop());
    registerWebhookMetrics(ctx);
    let ready = false;
    // The portal's sessions: the service's Redis connection, or (tests without Redis) one made on first use.
    let portalRedis: Promise<Redis> | undefined;
    const redisSource = () => (redis ? Promise.resolve(redis) : (portalRedis ??= connectRedis(config.redis.url).then((r) => {
      closers.push(async () => r.disconnect());
      return r;
    }, (err: unknown) => {
      portalRedis = undefined;
      throw err;
    })));
    const api = createAdaptorServer({ fetch: apiApp(ctx, () => ready, enqueue, failoverQueues, failoverHost, redisSource, redis).fetch }) as HttpServer;
    const agent = await createAgentServer(ctx, enqueue, failoverQueues);
    const apiPort = await listen(api, options.apiPort ?? config.api.port, config.api.host);
    closers.push(() => closeServer(api));
    const agentPort = await listen(agent, options.agentPort ?? config.agentEndpoint.port, config.agentEndpoint.host);
    closers.push(() => closeServer(agent));
    ready = true;
    const host = (h: string) => (h === '0.0.0.0' || h === '::' ? '127.0.0.1' : h);
    return { ctx, failoverHost, apiUrl: `http://${host(config.api.host)}:${apiPort}`, agentUrl: `https://${host(config.agentEndpoint.host)}:${agentPort}`, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

function listen(server: HttpServer | HttpsServer, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE' ? new LifeboatError('unavailable', `port ${port} on ${host} is already in use`) : err));
    server.listen(port, host, () => {
      server.removeAllListeners('error');
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: HttpServer | HttpsServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
