/**
 * The private redis-server: a unix socket and no TCP port, a queued BullMQ job kept across a stop and
 * a start (append-only file), started again when it dies under a running supervisor, and each way it
 * cannot start said in one line.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processGone, scratchDir, until } from '../../test/helpers.js';
import { redisAnswers, startPrivateRedis } from './server.js';

const log = pino({ level: 'silent' });
let scratch: Awaited<ReturnType<typeof scratchDir>>;

beforeAll(async () => {
  scratch = await scratchDir('lifeboat-redis-');
});
afterAll(async () => {
  await scratch.remove();
});

describe('private redis-server', () => {
  it('listens on its socket only and keeps a queued job across a stop and a start', async () => {
    const dir = join(scratch.path, 'aof');
    const where = { dir, socket: join(dir, 'redis.sock') };
    const first = await startPrivateRedis(where, log);
    expect(first.url).toBe(where.socket);
    const pid = first.pid();
    const client = new Redis(first.url, { maxRetriesPerRequest: null });
    expect(await client.config('GET', 'port')).toEqual(['port', '0']);
    expect(await client.config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);
    const queue = new Queue('probe', { connection: client });
    await queue.add('merge', { disk: 'd0' }, { jobId: 'kept' });
    await queue.close();
    client.disconnect();
    await first.stop();
    expect(await processGone(pid)).toBe(true);
    expect(existsSync(where.socket)).toBe(false);
    expect(await redisAnswers({ path: where.socket })).toBe(false);

    const again = await startPrivateRedis(where, log);
    const client2 = new Redis(again.url, { maxRetriesPerRequest: null });
    const queue2 = new Queue('probe', { connection: client2 });
    try {
      const job = await queue2.getJob('kept');
      expect(job?.data).toEqual({ disk: 'd0' });
    } finally {
      await queue2.close();
      client2.disconnect();
      await again.stop();
    }
  });

  it('is started again when it dies, and clients reconnect to the same socket', async () => {
    const dir = join(scratch.path, 'restart');
    const own = await startPrivateRedis({ dir, socket: join(dir, 'redis.sock') }, log);
    const client = new Redis(own.url, { maxRetriesPerRequest: null });
    client.on('error', () => undefined); // refused while it is down: ioredis retries
    try {
      await client.set('k', 'v');
      const pid = own.pid();
      process.kill(pid, 'SIGKILL');
      await until(() => own.pid() !== pid, 'a new redis-server');
      expect(await client.set('k2', 'v2')).toBe('OK');
      expect(await client.get('k2')).toBe('v2');
    } finally {
      client.disconnect();
      await own.stop();
    }
  });

  it('refuses a second one on the same socket, a socket path too long, and says what to install', async () => {
    const dir = join(scratch.path, 'twice');
    const own = await startPrivateRedis({ dir, socket: join(dir, 'redis.sock') }, log);
    try {
      await expect(startPrivateRedis({ dir, socket: join(dir, 'redis.sock') }, log)).rejects.toThrow(/a Redis already answers at .*redis\.sock: is another serve running on this data directory/);
    } finally {
      await own.stop();
    }
    const long = join(scratch.path, 'x'.repeat(120));
    await expect(startPrivateRedis({ dir: long, socket: join(long, 'redis.sock') }, log)).rejects.toThrow(/bytes, longer than a unix socket path may be \(107\); set redis\.dir/);
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      await expect(startPrivateRedis({ dir, socket: join(dir, 'redis.sock') }, log)).rejects.toThrow('redis-server is not installed: run `sudo apt-get install redis-server`, or set redis.url (or REDIS_URL) to a Redis you run');
    } finally {
      process.env.PATH = path;
    }
  });
});
