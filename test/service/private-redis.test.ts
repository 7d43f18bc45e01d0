/**
 * `serve` with no Redis configured, through the binary: it runs a private redis-server on a socket in
 * the data directory; a worker process finds it there; a SIGKILLed serve takes its Redis along
 * (parent-death signal); the next serve finds the queued job again (append-only file); a stopped serve
 * leaves no Redis and no socket. Without redis-server, or a worker before serve: one line each.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processGone, runBin, until } from '../helpers.js';
import type { TestEnv } from './helpers.js';
import { testEnv } from './helpers.js';

const bin = resolve(import.meta.dirname, '..', '..', 'bin', 'lifeboat-service.js');
// A REDIS_URL in the environment would override the configuration's "no URL"; empty counts as unset.
const childEnv = { ...process.env, REDIS_URL: '' };

let env: TestEnv;
let socket: string;
const started: ChildProcess[] = [];

beforeAll(async () => {
  env = await testEnv((c) => {
    c.redis = {};
  });
  socket = env.config.redis.private!.socket;
});

afterAll(async () => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await env?.cleanup();
});

/** Starts a long-running subcommand and resolves once it prints a line matching ready. */
function start(args: string[], ready: RegExp): Promise<{ child: ChildProcess; out: () => string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [bin, ...args, '--config', env.config.path], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d;
      if (ready.test(out)) resolvePromise({ child, out: () => out });
    });
    child.stderr.on('data', (d: Buffer) => { out += d; });
    child.on('close', (code, signal) => reject(new Error(`${args[0]} ended (${signal ?? code}) before it was ready: ${out.trim().split('\n').at(-1)}`)));
  });
}

const serve = () => start(['serve', '--api-port', '0', '--no-failover-host'], /lifeboat-service ready/);

/** The child's exit code, or the signal that ended it. */
function closed(child: ChildProcess): Promise<number | string | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode ?? child.signalCode);
  return new Promise((r) => child.once('close', (code, signal) => r(code ?? signal)));
}

/** The redis-server among pid's children. */
async function redisChildOf(pid: number): Promise<number> {
  for (const task of await readdir(`/proc/${pid}/task`)) {
    const children = (await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter(Boolean);
    for (const c of children) {
      if ((await readFile(`/proc/${c}/cmdline`, 'utf8').catch(() => '')).includes('redis-server')) return Number(c);
    }
  }
  throw new Error(`no redis-server child of ${pid}`);
}

async function withQueue<T>(use: (queue: Queue, client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis(socket, { maxRetriesPerRequest: null });
  const queue = new Queue('lifeboat-test-probe', { connection: client });
  try {
    return await use(queue, client);
  } finally {
    await queue.close();
    client.disconnect();
  }
}

describe('serve with no Redis configured', () => {
  it('a worker started before serve says to start serve first', async () => {
    const r = await runBin('service', ['worker', '--config', env.config.path], { env: childEnv });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`lifeboat-service: no Redis answers at ${socket}: with no redis.url in ${env.config.path}, workers use the private Redis that serve runs there; start serve first, or set redis.url for serve and every worker\n`);
  });

  it('runs a private Redis that a worker shares, that a killed serve takes along, and whose queued job the next serve finds', { timeout: 300_000 }, async () => {
    const first = await serve();
    const redisPid = await redisChildOf(first.child.pid!);
    expect(existsSync(socket)).toBe(true);
    await withQueue(async (queue, client) => {
      expect(await client.config('GET', 'port')).toEqual(['port', '0']);
      await queue.add('probe', { disk: 'd0' }, { jobId: 'kept' });
    });

    const worker = await start(['worker'], /worker ready/);
    expect(worker.out()).toContain(`lifeboat-service worker ready: queue merge on ${socket}`);
    worker.child.kill('SIGTERM');
    expect(await closed(worker.child)).toBe(0);

    first.child.kill('SIGKILL');
    await until(() => processGone(redisPid), `redis-server ${redisPid} gone after its serve was killed`);
    expect(existsSync(socket)).toBe(false);

    const second = await serve();
    const secondRedis = await redisChildOf(second.child.pid!);
    expect(await withQueue(async (queue) => (await queue.getJob('kept'))?.data)).toEqual({ disk: 'd0' });
    second.child.kill('SIGTERM');
    expect(await closed(second.child)).toBe(0);
    expect(await processGone(secondRedis)).toBe(true);
    expect(existsSync(socket)).toBe(false);
  });

  it('without redis-server installed: one line naming the package', async () => {
    const r = await runBin('service', ['serve', '--api-port', '0', '--no-failover-host', '--config', env.config.path], { env: { ...childEnv, PATH: '/nonexistent' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('lifeboat-service: redis-server is not installed: run `sudo apt-get install redis-server`, or set redis.url (or REDIS_URL) to a Redis you run\n');
  });
});
