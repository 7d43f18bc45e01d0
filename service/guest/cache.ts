/**
 * The guest cache (docs/guest.md "Cache"): finished images and the shared debootstrap root, under
 * LIFEBOAT_GUEST_CACHE (default /var/cache/lifeboat/guests, outside any clone so every checkout and
 * test process shares it). Names carry their recipe key (recipe.ts), so a changed recipe builds anew
 * and never reuses a stale image. Builds run under an exclusive kernel lock (flock) per key, so two
 * processes never build the same thing twice: the second waits and finds the first one's result.
 * Images appear under their final name only when whole (buildGuest links them into place).
 * Input: GuestOptions. Output: the cached image's path (and its .nvram.fd for UEFI beside it).
 * Failure: whatever the build throws; nothing is left under the final name.
 */
import { constants, existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LifeboatError } from '../../shared/errors.js';
import { buildGuest } from './build.js';
import type { GuestOptions } from './recipe.js';
import { guestRecipeKey, normalizeGuestOptions, rootRecipeKey } from './recipe.js';
import type { Progress } from './root.js';
import { makeGuestRoot, packGuestRoot } from './root.js';

export const DefaultGuestCache = '/var/cache/lifeboat/guests';
/** How long a process waits for another one's build of the same key. */
const MaxLockWaitMs = 60 * 60 * 1000;

export function guestCacheDir(): string {
  return process.env.LIFEBOAT_GUEST_CACHE ?? DefaultGuestCache;
}

/** The path a cached image of these options has (whether or not it exists yet). */
export function cachedGuestPath(options: GuestOptions): string {
  const o = normalizeGuestOptions(options);
  const name = `guest-${o.firmware}-${o.cloudInit ? 'cloudinit' : 'nocloudinit'}-${o.sizeMiB}m-${guestRecipeKey(o)}.${o.format}`;
  return join(guestCacheDir(), name);
}

/** The cached debootstrap root tarball, made first when missing. */
export async function cachedGuestRoot(onProgress: Progress = () => {}): Promise<string> {
  const dir = guestCacheDir();
  const tarball = join(dir, `root-${rootRecipeKey()}.tar.zst`);
  if (existsSync(tarball)) return tarball;
  await mkdir(dir, { recursive: true });
  return withBuildLock(join(dir, `.lock-root-${rootRecipeKey()}`), onProgress, async () => {
    if (existsSync(tarball)) return tarball;
    const work = await mkdtemp(join(dir, '.lifeboat-guest-root-'));
    try {
      await makeGuestRoot(join(work, 'root'), onProgress);
      await packGuestRoot(join(work, 'root'), tarball, onProgress);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    return tarball;
  });
}

/** The path of a cached guest image for options, built first (from the cached root) when missing. */
export async function cachedGuest(options: GuestOptions & { onProgress?: Progress }): Promise<string> {
  const path = cachedGuestPath(options);
  if (existsSync(path)) return path;
  const progress = options.onProgress ?? (() => {});
  const root = await cachedGuestRoot(progress);
  const lock = join(guestCacheDir(), `.lock-${guestRecipeKey(options)}`);
  return withBuildLock(lock, progress, async () => {
    if (existsSync(path)) return path;
    await buildGuest({ ...options, out: path, rootTarball: root, onProgress: progress });
    return path;
  });
}

type Flock = (fd: number, flags: 'exnb', callback: (err: NodeJS.ErrnoException | null) => void) => void;

/** Runs fn holding flock(LOCK_EX) on lockPath; waits (polling) while another process holds it. */
async function withBuildLock<T>(lockPath: string, onProgress: Progress, fn: () => Promise<T>): Promise<T> {
  const flock = (createRequire(import.meta.url)('fs-ext') as { flock: Flock }).flock;
  const fh = await open(lockPath, constants.O_RDWR | constants.O_CREAT, 0o644);
  try {
    const started = Date.now();
    let told = false;
    for (;;) {
      const got = await new Promise<boolean>((resolve, reject) => flock(fh.fd, 'exnb', (err) => {
        if (!err) resolve(true);
        else if (err.code === 'EWOULDBLOCK' || err.code === 'EAGAIN') resolve(false);
        else reject(err);
      }));
      if (got) break;
      if (!told) { onProgress('wait', `another process is building (${lockPath})`); told = true; }
      if (Date.now() - started > MaxLockWaitMs) throw new LifeboatError('unavailable', `gave up waiting for the guest build lock ${lockPath}`);
      await sleep(1000);
    }
    return await fn();
  } finally {
    await fh.close(); // drops the lock; the file stays (removing it would race a waiter)
  }
}
