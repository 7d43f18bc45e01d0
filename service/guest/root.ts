/**
 * The guest's root filesystem tree: debootstrap --variant=minbase of GuestSuite with GuestPackages,
 * then configureGuestRoot. It is the slow part of a build (minutes, most of it downloading and
 * unpacking), so it can be packed once into a tarball (tar + zstd, numeric owners, xattrs) that every
 * variant unpacks: BIOS, UEFI, with and without cloud-init (cache.ts keys it by rootRecipeKey).
 * Input: an empty directory. Output: the tree in it, or a tarball path. Failure: LifeboatError
 * naming the step; a half-made tarball is never left under its final name.
 */
import { mkdir, rename, rm } from 'node:fs/promises';
import { configureGuestRoot } from './configure.js';
import { GuestPackages, GuestSuite, guestMirror } from './recipe.js';
import { run } from './run.js';

export type Progress = (step: string, detail?: string) => void;

/** debootstrap into dir (created if missing) and configure what every variant shares. */
export async function makeGuestRoot(dir: string, onProgress: Progress = () => {}): Promise<void> {
  await mkdir(dir, { recursive: true });
  onProgress('debootstrap', `${GuestSuite} from ${guestMirror()}`);
  await run('debootstrap', ['--variant=minbase', `--include=${GuestPackages.join(',')}`, GuestSuite, dir, guestMirror()], {
    onLine: (l) => { if (/^I: (Retriev|Valid|Install|Configur|Base system)/.test(l) && !/^I: Retrieving .*\.deb$/.test(l)) onProgress('debootstrap', l.slice(3)); },
  });
  onProgress('configure root');
  await configureGuestRoot(dir);
}

/** Packs dir into tarball (written beside it under a temporary name, then renamed). */
export async function packGuestRoot(dir: string, tarball: string, onProgress: Progress = () => {}): Promise<void> {
  onProgress('pack root');
  const tmp = `${tarball}.tmp-${process.pid}`;
  try {
    await run('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '-I', 'zstd -T0 -3', '-C', dir, '-cf', tmp, '.']);
    await rename(tmp, tarball);
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Unpacks a tarball made by packGuestRoot into dir (created if missing). */
export async function unpackGuestRoot(tarball: string, dir: string, onProgress: Progress = () => {}): Promise<void> {
  onProgress('unpack root');
  await mkdir(dir, { recursive: true });
  await run('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '-I', 'zstd -T0', '-C', dir, '-xf', tarball]);
}
