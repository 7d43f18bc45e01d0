/**
 * Fencing of state.json (service/workers/commit-state.ts) against real Redis: a holder whose lock
 * lapsed, or one whose token is older than the one already in state.json, cannot replace it, leaves
 * no temporary file behind, and the newer holder's state stays what readers see. And the replica
 * directory's kernel lock (service/workers/dir-lock.ts): a holder in a process of its own
 * (fence-holder.ts) frozen with SIGSTOP between the lease check and the rename, its lease lapsed,
 * keeps every newer holder out until it thaws and commits; killed, it frees the disk at once.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initialState, readState, sweepUnreferencedLayers, writeState } from '../../service/replication/replica.js';
import { LockLostError, writeFencedState } from '../../service/workers/commit-state.js';
import { DirLockFileName, lockDir, lockOpened } from '../../service/workers/dir-lock.js';
import { acquireLock } from '../../service/workers/lock.js';
import { scratchDir, TestRedisUrl } from '../helpers.js';

const root = join(import.meta.dirname, '..', '..');
const holderScript = join(import.meta.dirname, 'fence-holder.ts');

let redis: Redis;
let scratch: Awaited<ReturnType<typeof scratchDir>>;
const prefix = `lbfence-${randomBytes(4).toString('hex')}`;
const holders: ChildProcess[] = [];

beforeAll(async () => {
  redis = new Redis(TestRedisUrl, { maxRetriesPerRequest: null });
  scratch = await scratchDir('lifeboat-fence-');
});
afterAll(async () => {
  for (const child of holders) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); // a failed test's
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
  await scratch.remove();
});

async function replica(name: string): Promise<string> {
  const dir = `${scratch.path}/${name}`;
  await writeState(dir, initialState('raw'));
  return dir;
}

describe('state.json fencing', () => {
  // The Redis lease and the tokens alone (no directory lock): what still guards where the kernel lock
  // does not hold (a network share's server that dropped a lock).
  it('refuses a holder whose lock lapsed after a newer holder committed; the newer state stays', async () => {
    const dir = await replica('lapsed');
    const old = (await acquireLock(redis, 'lapsed', null, { ttlMs: 60, prefix }))!;
    expect(old).toBeDefined();
    await new Promise((r) => setTimeout(r, 120)); // the old holder pauses past its TTL
    const fresh = (await acquireLock(redis, 'lapsed', null, { ttlMs: 60_000, prefix }))!;
    expect(fresh.fence).toBeGreaterThan(old.fence);
    const s = await readState(dir);
    await writeFencedState(dir, { ...s, appliedSequence: 7 }, fresh, 'newer');
    await expect(writeFencedState(dir, { ...s, appliedSequence: 3 }, old, 'stale')).rejects.toBeInstanceOf(LockLostError);
    expect(await readState(dir)).toMatchObject({ appliedSequence: 7, fence: fresh.fence });
    expect((await readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
    await fresh.release();
  });

  it('refuses a token older than the one in state.json even while the lock answers held', async () => {
    const dir = await replica('older');
    const s = await readState(dir);
    await writeFencedState(dir, { ...s, appliedSequence: 5 }, { fence: 9, stillHeld: async () => true }, 'newer');
    let asked = false;
    const stale = { fence: 8, stillHeld: async () => (asked = true) };
    await expect(writeFencedState(dir, { ...s, appliedSequence: 4 }, stale, 'stale')).rejects.toThrow(/token 9, newer than ours \(8\)/);
    expect(asked).toBe(false);
    expect(await readState(dir)).toMatchObject({ appliedSequence: 5, fence: 9 });
  });

  it('checks the lock after the new state is durable, right before the rename', async () => {
    const dir = await replica('order');
    const s = await readState(dir);
    let seenAtCheck: string[] = [];
    const lock = {
      fence: 3,
      async stillHeld() {
        seenAtCheck = await readdir(dir);
        return true;
      },
    };
    const written = await writeFencedState(dir, { ...s, appliedSequence: 2, fence: 0 }, lock, 'order');
    // The prepared file existed when the lock was asked, and the state carries the holder's token.
    expect(seenAtCheck.some((f) => f.startsWith('state.json.tmp-'))).toBe(true);
    expect(written.fence).toBe(3);
    expect(await readState(dir)).toMatchObject({ appliedSequence: 2, fence: 3 });
    expect((await readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('recovers when Redis lost the token counter: the refused holder raises it past the file\'s token', async () => {
    const dir = await replica('lost');
    const first = (await acquireLock(redis, 'lost', dir, { prefix }))!;
    const s = await readState(dir);
    await writeFencedState(dir, { ...s, appliedSequence: 2 }, first, 'first');
    await first.release();
    await redis.set(`${prefix}:fence:lost`, '0'); // as after a Redis restart without its data
    const behind = (await acquireLock(redis, 'lost', dir, { prefix }))!;
    expect(behind.fence).toBeLessThan(first.fence + 1);
    await expect(writeFencedState(dir, { ...s, appliedSequence: 3 }, behind, 'behind')).rejects.toBeInstanceOf(LockLostError);
    await behind.release();
    const next = (await acquireLock(redis, 'lost', dir, { prefix }))!;
    expect(next.fence).toBeGreaterThan(first.fence);
    await writeFencedState(dir, { ...s, appliedSequence: 3 }, next, 'next');
    expect(await readState(dir)).toMatchObject({ appliedSequence: 3, fence: next.fence });
    await next.release();
  });

  it('a lock lost to expiry is not extended by stillHeld, and a held one is', async () => {
    const lock = (await acquireLock(redis, 'lease', null, { ttlMs: 200, prefix }))!;
    expect(await lock.stillHeld()).toBe(true);
    expect(await redis.pttl(`${prefix}:lock:lease`)).toBeGreaterThan(100);
    await redis.del(`${prefix}:lock:lease`);
    expect(await lock.stillHeld()).toBe(false);
    expect(await redis.exists(`${prefix}:lock:lease`)).toBe(0);
  });
});

/** A fence-holder.ts process and the lines it has written. */
interface Holder {
  child: ChildProcess;
  /** Resolves with the match of the first line (already written or to come) matching re. */
  line(re: RegExp): Promise<RegExpMatchArray>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startHolder(name: string, dir: string, ttlMs: number, seq: number): Holder {
  const child = spawn(process.execPath, ['--import', 'tsx', holderScript, TestRedisUrl, prefix, name, dir, String(ttlMs), String(seq)], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  holders.push(child);
  const lines: string[] = [];
  let err = '';
  let partial = '';
  const waiters: (() => void)[] = [];
  child.stdout!.on('data', (d: Buffer) => {
    partial += d.toString();
    const parts = partial.split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
    for (const w of waiters.splice(0)) w();
  });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      for (const w of waiters.splice(0)) w();
      resolve({ code, signal });
    });
  });
  let exited = false;
  void exit.then(() => { exited = true; });
  return {
    child,
    exit,
    async line(re) {
      const deadline = Date.now() + 30_000;
      for (;;) {
        for (const l of lines) {
          const m = l.match(re);
          if (m) return m;
        }
        if (exited || Date.now() > deadline) throw new Error(`holder never wrote ${re} (wrote ${JSON.stringify(lines)}; stderr ${err.slice(-2000)})`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
    },
  };
}

/** Waits until the process is stopped (state T in /proc/<pid>/stat). */
async function stopped(pid: number): Promise<void> {
  await until(async () => /^\S+ \(.*\) T /.test(await readFile(`/proc/${pid}/stat`, 'utf8')));
}

async function until(cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const lockKey = (name: string) => `${prefix}:lock:${name}`;

describe('the replica directory\'s kernel lock', () => {
  it('a holder frozen between the lease check and the rename, its lease lapsed, keeps the disk; it commits when it thaws', async () => {
    const dir = await replica('frozen');
    const holder = startHolder('frozen', dir, 1000, 42);
    const fence = Number((await holder.line(/^locked (\d+)$/))[1]);
    await holder.line(/^paused$/);
    await stopped(holder.child.pid!);
    const before = await readFile(join(dir, 'state.json'), 'utf8');
    const files = (await readdir(dir)).sort();
    expect(files.filter((f) => f.startsWith('state.json.tmp-'))).toHaveLength(1); // prepared, not renamed
    await until(async () => (await redis.exists(lockKey('frozen'))) === 0); // the lease lapses
    // The lease alone would now admit a newer holder: the window the kernel lock closes.
    const leaseOnly = await acquireLock(redis, 'frozen', null, { prefix });
    expect(leaseOnly).toBeDefined();
    await leaseOnly!.release();
    // A holder that takes the directory too is refused, and gives the Redis lock back.
    const counter = Number(await redis.get(`${prefix}:fence:frozen`));
    expect(await acquireLock(redis, 'frozen', dir, { prefix })).toBeUndefined();
    expect(Number(await redis.get(`${prefix}:fence:frozen`))).toBe(counter + 1); // it took a token and got the lease
    expect(await redis.exists(lockKey('frozen'))).toBe(0);
    expect(await readFile(join(dir, 'state.json'), 'utf8')).toBe(before);
    expect((await readdir(dir)).sort()).toEqual(files);
    holder.child.kill('SIGCONT');
    expect((await holder.line(/^committed (\d+)$/))[1]).toBe(String(fence));
    await holder.line(/^released$/);
    expect(await holder.exit).toEqual({ code: 0, signal: null });
    expect(await readState(dir)).toMatchObject({ appliedSequence: 42, fence });
    expect(await readdir(dir)).toEqual(['state.json']); // no temporary file left, and no lock file
    // The thawed holder released: the next one gets in with a newer token and commits on top.
    const next = (await acquireLock(redis, 'frozen', dir, { prefix }))!;
    expect(next.fence).toBeGreaterThan(fence);
    await writeFencedState(dir, { ...(await readState(dir)), appliedSequence: 43 }, next, 'next');
    await next.release();
    expect(await readState(dir)).toMatchObject({ appliedSequence: 43, fence: next.fence });
  });

  it('a holder killed (here while frozen before the rename) frees the disk at once; nothing it prepared becomes state', async () => {
    const dir = await replica('killed');
    const holder = startHolder('killed', dir, 1000, 42);
    await holder.line(/^paused$/);
    await stopped(holder.child.pid!);
    await until(async () => (await redis.exists(lockKey('killed'))) === 0);
    expect(await acquireLock(redis, 'killed', dir, { prefix })).toBeUndefined();
    holder.child.kill('SIGKILL');
    expect(await holder.exit).toEqual({ code: null, signal: 'SIGKILL' });
    const t = Date.now();
    const next = await acquireLock(redis, 'killed', dir, { prefix });
    expect(next).toBeDefined();
    expect(Date.now() - t).toBeLessThan(1000);
    expect(await readState(dir)).toMatchObject({ appliedSequence: 0, fence: 0 });
    await writeFencedState(dir, { ...(await readState(dir)), appliedSequence: 1 }, next!, 'next');
    await next!.release();
    expect(await readState(dir)).toMatchObject({ appliedSequence: 1, fence: next!.fence });
    // The killed holder's lock file was taken over and removed on release; its prepared state stays
    // an unnamed temporary file.
    expect((await readdir(dir)).filter((f) => f === DirLockFileName || f === 'state.json')).toEqual(['state.json']);
  });

  it('excludes a second holder in the same process, is 0600, survives the layer sweep, and needs the directory', async () => {
    const dir = await replica('same');
    const first = (await acquireLock(redis, 'same', dir, { ttlMs: 50, prefix }))!;
    await new Promise((r) => setTimeout(r, 100)); // the lease lapses while the holder is still busy
    expect(await acquireLock(redis, 'same', dir, { prefix })).toBeUndefined();
    expect((await stat(join(dir, DirLockFileName))).mode & 0o777).toBe(0o600);
    await writeFile(join(dir, 'p1.vhdx'), ''); // a stray layer: the sweep deletes it, not the lock file
    await writeFile(join(dir, 'state.json.tmp-4242-1764150000000-k3x9qa'), '{}'); // a killed holder's prepared state, too
    expect((await sweepUnreferencedLayers(dir, await readState(dir))).sort()).toEqual(['p1.vhdx', 'state.json.tmp-4242-1764150000000-k3x9qa']);
    expect(await readdir(dir)).toContain(DirLockFileName);
    await first.release();
    expect(await readdir(dir)).not.toContain(DirLockFileName); // removed on release
    const second = (await acquireLock(redis, 'same', dir, { prefix }))!;
    expect(second).toBeDefined();
    await second.release();
    await expect(acquireLock(redis, 'gone', join(dir, 'missing'), { prefix })).rejects.toThrow(/replica directory .*missing is missing/);
    expect(await redis.exists(lockKey('gone'))).toBe(0);
  });

  it('never has two holders at once while holders come and go (the lock file is removed on each release)', async () => {
    const dir = await replica('churn');
    let inside = 0;
    let most = 0;
    let turns = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 60; i++) {
        const held = await lockDir(dir);
        if (!held) {
          await new Promise((r) => setImmediate(r));
          continue;
        }
        turns++;
        most = Math.max(most, ++inside);
        await new Promise((r) => setImmediate(r));
        inside--;
        await held.release();
      }
    }));
    expect(most).toBe(1);
    expect(turns).toBeGreaterThan(20);
    expect(await readdir(dir)).toEqual(['state.json']);
  });

  it('a lock file opened before its holder released and unlinked it is not taken for the lock', async () => {
    const dir = await replica('moved');
    const path = join(dir, DirLockFileName);
    const first = (await lockDir(dir))!;
    const stale = await open(path, 'r+'); // opened while the first holds it
    try {
      expect(await lockOpened(stale, path)).toBe('busy');
      await first.release(); // unlinks, then closes
      expect(await lockOpened(stale, path)).toBe('moved'); // the flock itself succeeds on the old file
      const second = (await lockDir(dir))!; // a fresh file at the path
      expect(second).toBeDefined();
      expect(await lockOpened(stale, path)).toBe('moved');
      await second.release();
    } finally {
      await stale.close();
    }
  });
});
