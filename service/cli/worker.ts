/**
 * `lifeboat-service worker --config FILE`: merge workers alone, as many processes as you start. They
 * share the catalog, so it must be a PostgreSQL server: the embedded PGlite catalog lives inside
 * `serve`, which runs its own workers. Without a redis.url they use the private Redis that `serve`
 * runs on the data directory's socket, so serve must be up first.
 */
import type { Command } from 'commander';
import pino from 'pino';
import { ErrInvalidArgument, ErrUnsupported, LifeboatError } from '../../shared/errors.js';
import { loadConfig } from '../config/config.js';
import { withConfig } from './common.js';
import { waitForSignal } from './process.js';

export function registerWorker(program: Command): void {
  withConfig(program.command('worker').description('run merge workers alone (needs a PostgreSQL catalog)'))
    .option('--concurrency <n>', 'disks merged at once by this process', '8')
    .action(async (opts: { config?: string; concurrency: string }) => {
      const config = await loadConfig(opts.config);
      if (config.catalog.kind === 'pglite') throw ErrUnsupported('worker needs a PostgreSQL catalog (catalog.kind "postgres"); with the embedded PGlite catalog, serve runs the workers');
      const concurrency = Number(opts.concurrency);
      if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw ErrInvalidArgument(`--concurrency ${opts.concurrency} must be 1 to 64`);
      if (config.redis.private) {
        const { redisAnswers } = await import('../redis/server.js');
        const { socket } = config.redis.private;
        if (!(await redisAnswers({ path: socket }))) throw new LifeboatError('unavailable', `no Redis answers at ${socket}: with no redis.url in ${config.path}, workers use the private Redis that serve runs there; start serve first, or set redis.url for serve and every worker`);
      }
      const log = pino({ level: config.logLevel, base: { service: 'lifeboat-worker' } }, pino.destination(2));
      const { openContext } = await import('../context.js');
      const { startMergeWorkers } = await import('../workers/run.js');
      const ctx = await openContext(config, { log });
      const workers = await startMergeWorkers(ctx, { redisUrl: config.redis.url, concurrency });
      const signalled = waitForSignal(); // before saying ready: a SIGTERM right after must find the handler
      process.stdout.write(`lifeboat-service worker ready: queue merge on ${config.redis.url.replace(/\/\/[^@]*@/, '//')}\n`);
      await signalled;
      await workers.stop();
      await ctx.close();
    });
}
