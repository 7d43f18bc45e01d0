/**
 * The kernel's exclusive lock on a disk's replica directory: flock(LOCK_EX | LOCK_NB) on
 * `<dir>/.lock`, taken by lock.ts right after the disk's Redis lock and held until it is released
 * (the holder then removes the file; see lockDir).
 * Unlike the Redis lease it does not lapse while its holder is merely frozen (SIGSTOP, a paused VM):
 * the lock belongs to the open file, which stays open until the holder closes it or its process
 * dies. A holder that finds it taken gives up exactly as when the Redis lock is taken
 * (docs/service.md "Fencing").
 *
 * flock, not fcntl: an flock lock belongs to the open file description, so two opens in the same
 * process exclude each other too, and closing some other descriptor of the file does not drop it
 * (fcntl's POSIX locks have both faults). Node opens files close-on-exec, so a child process never
 * inherits the descriptor and keeps the lock past its release. The file is opened read-write because
 * Linux emulates flock with a whole-file fcntl write lock on NFS, which needs a descriptor open for
 * writing.
 *
 * Through fs-ext, loaded lazily on the main thread only: it is a per-process addon (not
 * context-aware) and aborts the process when a second thread loads it (as in shared/disk/sparse.ts).
 * Where it cannot be loaded, taking the lock fails: nothing is written without it.
 */
import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open, stat, unlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { isMainThread } from 'node:worker_threads';
import { LifeboatError } from '../../shared/errors.js';

/** The lock file in a replica directory while a holder has it; no layer name, so no sweep deletes it. */
export const DirLockFileName = '.lock';

export interface DirLock {
  readonly path: string;
  /** Drops the lock (closes the file). */
  release(): Promise<void>;
}

type Flock = (fd: number, flags: 'exnb', callback: (err: NodeJS.ErrnoException | null) => void) => void;

let flock: Flock | undefined;

function flocker(): Flock {
  if (flock) return flock;
  if (!isMainThread) throw new LifeboatError('io', 'the replica directory lock is taken on the main thread only (fs-ext cannot load in a worker thread)');
  try {
    flock = (createRequire(import.meta.url)('fs-ext') as { flock: Flock }).flock;
  } catch (err) {
    throw new LifeboatError('io', `the replica directory lock needs fs-ext's flock, which did not load: ${(err as Error).message}`, { cause: err });
  }
  return flock;
}

/**
 * Takes the exclusive lock of the replica directory dir, creating the lock file (0600) when missing;
 * undefined when another holder has it. The directory itself is not created: replica directories are
 * made when a disk is registered, before any holder can name them, so a missing one means storage
 * that is gone or not mounted, and making it would lock a file on the wrong filesystem.
 *
 * The holder removes the lock file when it releases (a killed holder's stays, and the next holder
 * takes it over), so between jobs the directory holds the layers and state.json only. Hence the
 * check after locking: the file locked must still be the one at the path, or a holder that released
 * in between unlinked it and a newer one may be locking a fresh file there; then we start again.
 */
export async function lockDir(dir: string): Promise<DirLock | undefined> {
  flocker(); // fails here, before anything is created, when the lock cannot be had at all
  const path = join(dir, DirLockFileName);
  for (let attempt = 0; attempt < 5; attempt++) {
    let fh: FileHandle;
    try {
      fh = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new LifeboatError('unavailable', `replica directory ${dir} is missing (storage not mounted?)`, { cause: err });
      throw new LifeboatError('io', `cannot open ${path}: ${code ?? (err as Error).message}`, { cause: err });
    }
    let outcome: Locking = 'busy';
    try {
      outcome = await lockOpened(fh, path);
    } finally {
      if (outcome !== 'locked') await fh.close();
    }
    if (outcome === 'busy') return undefined;
    if (outcome === 'moved') continue;
    let held = true;
    return {
      path,
      async release() {
        if (!held) return;
        held = false;
        // Unlinked while still locked: whoever opened this file meanwhile finds it gone once it locks.
        // A file that cannot be removed is only left behind, and the next holder takes it over.
        await unlink(path).catch(() => undefined);
        await fh.close();
      },
    };
  }
  return undefined; // the file kept changing under us: holders coming and going; try again later
}

type Locking = 'locked' | 'busy' | 'moved';

/**
 * flock on an open lock file, then the check that it is still the file at path: 'locked', 'busy'
 * (another holder has it), or 'moved' (a holder that released unlinked it after we opened it; open
 * the path again). Exported for the test of that last case.
 */
export async function lockOpened(fh: FileHandle, path: string): Promise<Locking> {
  const lockFlock = flocker();
  // The asynchronous call: on a network share the request goes to the server, off the event loop.
  const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => lockFlock(fh.fd, 'exnb', resolve));
  if (err) {
    if (err.code === 'EAGAIN' || err.code === 'EWOULDBLOCK') return 'busy';
    throw new LifeboatError('io', `cannot lock ${path}: ${err.code ?? err.message}`, { cause: err });
  }
  const [ours, there] = await Promise.all([fh.stat(), stat(path).catch(() => undefined)]);
  return there !== undefined && there.ino === ours.ino && there.dev === ours.dev ? 'locked' : 'moved';
}
