/**
 * The privileged steps, each undone whatever happens: a raw disk file attached as a loop device with
 * its partitions (losetup -P, then partx -a where the kernel made no partition node, as in
 * containers), and a partition mounted on a temporary directory. Callers get the device or mount
 * point only inside a callback; on return or throw the mount is unmounted (lazily if busy) and the
 * loop device detached, so a failed build never leaves either behind.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LifeboatError } from '../../shared/errors.js';
import { run } from './run.js';

/** Runs fn with the device node of partition `number` of the raw disk file. */
export async function withPartitionDevice<T>(raw: string, number: number, fn: (dev: string) => Promise<T>): Promise<T> {
  const loop = (await run('losetup', ['-f', '--show', '-P', raw])).trim();
  try {
    const dev = `${loop}p${number}`;
    if (!existsSync(dev)) await run('partx', ['-a', loop]).catch(() => undefined);
    for (let i = 0; i < 50 && !existsSync(dev); i++) await sleep(100);
    if (!existsSync(dev)) throw new LifeboatError('io', `no partition node ${dev} appeared after losetup -P and partx -a`);
    return await fn(dev);
  } finally {
    await run('partx', ['-d', loop]).catch(() => undefined);
    await detach(loop);
  }
}

async function detach(loop: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await run('losetup', ['-d', loop]);
      return;
    } catch (err) {
      if (i >= 10) throw err;
      await sleep(200);
    }
  }
}

/** Runs fn with dev mounted on a fresh temporary directory. */
export async function withMount<T>(dev: string, fn: (dir: string) => Promise<T>, options: string[] = []): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'lifeboat-guest-mnt-'));
  try {
    await run('mount', [...options, dev, dir]);
    try {
      return await fn(dir);
    } finally {
      await unmount(dir);
    }
  } finally {
    await rmdir(dir).catch(() => undefined);
  }
}

async function unmount(dir: string): Promise<void> {
  for (let i = 0; i < 10; i++) {
    try {
      await run('umount', [dir]);
      return;
    } catch {
      await sleep(300);
    }
  }
  await run('umount', ['-l', dir]);
}
