/**
 * The guest disk's partitions and filesystems, written into a raw file without mounting anything:
 * sfdisk writes the table, mkfs.ext4 -E offset= fills the root partition from a directory tree (-d),
 * mkfs.vfat --offset= makes the EFI system partition and mtools copies files into it.
 * BIOS: MBR, one bootable Linux partition from 1 MiB (extlinux needs ext4 without 64bit).
 * UEFI: GPT, partition 1 the EFI system partition (FAT32, 64 MiB), partition 2 the Linux root.
 * Failure: LifeboatError from the tool that failed; the caller deletes the file.
 */
import { randomUUID } from 'node:crypto';
import { run } from './run.js';
import type { GuestFirmware } from './recipe.js';

export const SectorSize = 512;
const FirstSector = 2048;
export const EspSizeMiB = 64;
const EspTypeGuid = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
const LinuxTypeGuid = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

export interface Partition {
  number: number;
  startLba: number;
  sizeLba: number;
  /** GPT unique partition GUID (UEFI layout only). */
  uuid?: string;
}

export interface GuestLayout {
  firmware: GuestFirmware;
  root: Partition;
  esp?: Partition;
}

/** Writes the partition table of the layout into raw (already sized) and returns where they are. */
export async function partition(raw: string, firmware: GuestFirmware): Promise<GuestLayout> {
  const script = firmware === 'bios'
    ? `label: dos\nstart=${FirstSector}, type=83, bootable\n`
    : [
      'label: gpt',
      `start=${FirstSector}, size=${(EspSizeMiB * 1024 * 1024) / SectorSize}, type=${EspTypeGuid}, uuid=${randomUUID()}, name="EFI system partition"`,
      `type=${LinuxTypeGuid}, uuid=${randomUUID()}, name="root"`,
      '',
    ].join('\n');
  await run('sfdisk', ['--quiet', '--wipe', 'always', raw], { input: script });
  const table = JSON.parse(await run('sfdisk', ['--json', raw])) as { partitiontable: { partitions: { start: number; size: number; uuid?: string }[] } };
  const parts = table.partitiontable.partitions.map((p, i): Partition => ({ number: i + 1, startLba: p.start, sizeLba: p.size, uuid: p.uuid?.toLowerCase() }));
  return firmware === 'bios' ? { firmware, root: parts[0]! } : { firmware, esp: parts[0]!, root: parts[1]! };
}

/** mkfs.ext4 of partition p of raw, filled from the tree at dir. */
export async function makeRootFs(raw: string, p: Partition, dir: string, uuid: string): Promise<void> {
  const sizeKiB = (p.sizeLba * SectorSize) / 1024;
  await run('mkfs.ext4', ['-q', '-F', '-O', '^64bit', '-U', uuid, '-L', 'root', '-E', `offset=${p.startLba * SectorSize}`, '-d', dir, raw, `${sizeKiB}k`]);
}

/** mkfs.vfat (FAT32, volume id as 8 hex digits) of partition p of raw, then each file copied in (paths under the ESP, with '/'). */
export async function makeEsp(raw: string, p: Partition, files: { path: string; source: string }[], volumeId: string): Promise<void> {
  await run('mkfs.vfat', ['-F', '32', '-s', '1', '-n', 'ESP', '-i', volumeId, `--offset=${p.startLba}`, raw, String((p.sizeLba * SectorSize) / 1024)]);
  const image = `${raw}@@${p.startLba * SectorSize}`;
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.path.split('/').filter(Boolean);
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  for (const d of [...dirs].sort()) await run('mmd', ['-i', image, `::/${d}`], { env });
  for (const f of files) await run('mcopy', ['-i', image, f.source, `::/${f.path.replace(/^\//, '')}`], { env });
}
