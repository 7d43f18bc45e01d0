/**
 * The recovery-points jobs in a process of their own, for the kill test: the same Pointer the worker's
 * once-a-minute timer runs (service/workers/points-job.ts), on the config's catalog and Redis, with
 * the clock given on the command line instead of the wall clock so a test can make hours pass.
 *
 *   node --import tsx test/service/pointer-process.ts CONFIG NOW_MS
 *
 * stdout: `ready` once connected, `points N MS` after points(now), `done N MS` after prune(now).
 */
import pino from 'pino';
import { loadConfig } from '../../service/config/config.js';
import { openContext } from '../../service/context.js';
import { connectRedis } from '../../service/queue.js';
import { Pointer } from '../../service/workers/points-job.js';

const [configPath, nowMs] = process.argv.slice(2);
const config = await loadConfig(configPath);
const ctx = await openContext(config, { log: pino({ level: 'silent' }) });
const redis = await connectRedis(config.redis.url);
const pointer = new Pointer(ctx, redis);
const now = new Date(Number(nowMs));
process.stdout.write('ready\n');
let t = Date.now();
const made = await pointer.points(now);
process.stdout.write(`points ${made} ${Date.now() - t}\n`);
t = Date.now();
const pruned = await pointer.prune(now);
process.stdout.write(`done ${pruned} ${Date.now() - t}\n`);
redis.disconnect();
await ctx.close();
