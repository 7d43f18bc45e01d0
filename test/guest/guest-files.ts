/**
 * Test helpers that put a file into a guest disk's root filesystem, or read one back, offline: the
 * disk must not be in use by a running VM. Raw disks only. The root partition is found from the
 * partition table (sfdisk --json: the MBR Linux partition, or the GPT Linux filesystem partition);
 * debugfs then works on the ext4 filesystem at that offset (`DISK?offset=N`, e2fsprogs' unix I/O
 * option), so no loop device or mount is needed and nothing is left attached on failure.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../service/guest/run.js';

const LinuxGptType = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

/** Byte offset of the guest's root (ext4) partition in a raw disk. */
export async function rootPartitionOffset(rawDisk: string): Promise<number> {
  const t = JSON.parse(await run('sfdisk', ['--json', rawDisk])) as {
    partitiontable: { label: string; sectorsize?: number; partitions: { start: number; type: string }[] };
  };
  const pt = t.partitiontable;
  const root = pt.partitions.find((p) => (pt.label === 'dos' ? p.type === '83' : p.type.toUpperCase() === LinuxGptType));
  if (!root) throw new Error(`${rawDisk}: no Linux root partition in its ${pt.label} partition table`);
  return root.start * (pt.sectorsize ?? 512);
}

async function debugfs(rawDisk: string, commands: string[], writable: boolean): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lifeboat-debugfs-'));
  try {
    const cmdFile = join(dir, 'commands');
    await writeFile(cmdFile, `${commands.join('\n')}\n`);
    const target = `${rawDisk}?offset=${await rootPartitionOffset(rawDisk)}`;
    return await run('debugfs', [...(writable ? ['-w'] : []), '-f', cmdFile, target]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function quote(path: string): string {
  if (!path.startsWith('/') || /["\n]/.test(path)) throw new Error(`guest path must be absolute, without quotes or newlines: ${path}`);
  return `"${path}"`;
}

/** Writes (replacing) the file at guestPath (its directory must exist), owned by root, mode 0644. */
export async function writeGuestFile(rawDisk: string, guestPath: string, content: string | Uint8Array): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'lifeboat-guestfile-'));
  try {
    const src = join(dir, 'content');
    await writeFile(src, content);
    const p = quote(guestPath);
    await debugfs(rawDisk, [`rm ${p}`, `write "${src}" ${p}`, `sif ${p} mode 0100644`, `sif ${p} uid 0`, `sif ${p} gid 0`], true);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const back = await readGuestFile(rawDisk, guestPath);
  if (back === undefined || !back.equals(Buffer.from(content))) throw new Error(`writing ${guestPath} into ${rawDisk} did not take (is its directory there?)`);
}

/** The file at guestPath in the guest's root filesystem, or undefined when there is none. */
export async function readGuestFile(rawDisk: string, guestPath: string): Promise<Buffer | undefined> {
  const dir = await mkdtemp(join(tmpdir(), 'lifeboat-guestfile-'));
  try {
    const dst = join(dir, 'content');
    await debugfs(rawDisk, [`dump ${quote(guestPath)} "${dst}"`], false);
    return await readFile(dst).catch(() => undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
