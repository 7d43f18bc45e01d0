/**
 * buildGuest: a small bootable Debian guest disk shaped as tenants' VMs are (docs/guest.md).
 * Input: GuestOptions plus OUT, and optionally a root tarball (root.ts) to start from instead of
 * running debootstrap. Output: OUT (VHDX or raw) and, for UEFI, OUT.nvram.fd: an OVMF VARS file
 * whose Boot0000 boots the distribution's loader. Both appear only when everything succeeded
 * (built in a work directory beside OUT, then hard-linked into place, which fails if they exist).
 * Failure: LifeboatError naming the step; loop devices and mounts are undone, the work directory is
 * removed, nothing is left at OUT.
 *
 * BIOS: MBR disk, ext4 root without 64bit, extlinux in /boot/extlinux and syslinux's mbr.bin
 * (grub-install cannot map loop partitions to GRUB drives here). UEFI: GPT with a FAT32 EFI system
 * partition holding a standalone GRUB (grub-mkstandalone, run inside the guest root) at
 * EFI/debian/grubx64.efi and at the removable-media path EFI/BOOT/BOOTX64.EFI.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { constants, existsSync } from 'node:fs';
import { access, copyFile, link, mkdir, mkdtemp, open, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { LifeboatError } from '../../shared/errors.js';
import { makeEsp, makeRootFs, partition } from './layout.js';
import { withMount, withPartitionDevice } from './loop.js';
import { OvmfVarsTemplate, writeOvmfVars } from './nvram.js';
import type { GuestOptions } from './recipe.js';
import { normalizeGuestOptions } from './recipe.js';
import type { Progress } from './root.js';
import { makeGuestRoot, unpackGuestRoot } from './root.js';
import { haveTool, run } from './run.js';

export const SyslinuxMbr = '/usr/lib/syslinux/mbr/mbr.bin';
/** Where the UEFI loader sits on the ESP, as Debian installs it and as the removable-media fallback. */
export const EfiDistributionLoader = '/EFI/debian/grubx64.efi';
export const EfiFallbackLoader = '/EFI/BOOT/BOOTX64.EFI';
/** The kernel command line every variant boots with. */
export const KernelArgs = 'ro console=tty0 console=ttyS0,115200 net.ifnames=0';

export interface BuildGuestOptions extends GuestOptions {
  out: string;
  /** A tarball from packGuestRoot; without it debootstrap runs (slow). */
  rootTarball?: string;
  /** Where the work directory goes (needs about the disk's size free); default beside OUT. */
  workDir?: string;
  onProgress?: Progress;
}

export interface BuiltGuest {
  path: string;
  /** OVMF VARS file with the boot entry (UEFI only). */
  nvram?: string;
  firmware: 'bios' | 'uefi';
  format: 'vhdx' | 'raw';
  virtualSize: number;
}

/** The NVRAM file that goes with a UEFI guest image. */
export function nvramPathFor(image: string): string {
  return `${image}.nvram.fd`;
}

export async function buildGuest(options: BuildGuestOptions): Promise<BuiltGuest> {
  const o = normalizeGuestOptions(options);
  const out = resolve(options.out);
  const nvram = o.firmware === 'uefi' ? nvramPathFor(out) : undefined;
  const progress: Progress = options.onProgress ?? (() => {});
  await preflight(out, nvram, o.firmware, options.rootTarball);

  const work = await mkdtemp(join(options.workDir ?? dirname(out), '.lifeboat-guest-build-'));
  try {
    const tree = join(work, 'root');
    if (options.rootTarball) await unpackGuestRoot(options.rootTarball, tree, progress);
    else await makeGuestRoot(tree, progress);

    progress('partition');
    const raw = join(work, 'disk.raw');
    const virtualSize = o.sizeMiB * 1024 * 1024;
    const fh = await open(raw, 'wx');
    await fh.truncate(virtualSize);
    await fh.close();
    const layout = await partition(raw, o.firmware);

    progress('configure variant');
    const rootUuid = randomUUID();
    const espVolumeId = randomBytes(4).toString('hex');
    const kernel = await kernelFiles(tree);
    await configureVariant(tree, { rootUuid, espVolumeId: o.firmware === 'uefi' ? espVolumeId : undefined, cloudInit: o.cloudInit });
    let efiLoader: string | undefined;
    if (o.firmware === 'bios') await writeExtlinuxConf(tree, kernel, rootUuid);
    else efiLoader = await makeGrubEfi(tree, kernel, rootUuid);

    progress('root filesystem');
    await makeRootFs(raw, layout.root, tree, rootUuid);
    await rm(tree, { recursive: true, force: true });

    if (o.firmware === 'bios') {
      progress('bootloader', 'extlinux');
      await installExtlinux(raw, layout.root.number);
    } else {
      progress('EFI system partition');
      await makeEsp(raw, layout.esp!, [
        { path: EfiDistributionLoader, source: efiLoader! },
        { path: EfiFallbackLoader, source: efiLoader! },
      ], espVolumeId);
      progress('NVRAM', `Boot0000 ${EfiDistributionLoader}`);
      await writeOvmfVars(join(work, 'nvram.fd'), {
        partitionNumber: layout.esp!.number, partitionGuid: layout.esp!.uuid!, startLba: layout.esp!.startLba, sizeLba: layout.esp!.sizeLba,
      }, EfiDistributionLoader.replace(/\//g, '\\'));
    }

    let image = raw;
    if (o.format === 'vhdx') {
      progress('convert', 'vhdx');
      image = join(work, 'disk.vhdx');
      await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', raw, image]);
    }
    progress('install');
    if (nvram) await link(join(work, 'nvram.fd'), nvram);
    try {
      await link(image, out);
    } catch (err) {
      if (nvram) await unlink(nvram).catch(() => undefined);
      throw err;
    }
    progress('done', out);
    return { path: out, nvram, firmware: o.firmware, format: o.format, virtualSize };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Everything a build needs, checked before anything is made: one clear line for what is missing. */
async function preflight(out: string, nvram: string | undefined, firmware: 'bios' | 'uefi', rootTarball?: string): Promise<void> {
  for (const p of [out, nvram]) {
    if (p && existsSync(p)) throw new LifeboatError('already_exists', `${p} already exists; the guest build never overwrites`);
  }
  await access(dirname(out), constants.W_OK).catch((err: unknown) => {
    throw new LifeboatError('invalid_argument', `cannot write into ${dirname(out)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  });
  if (process.getuid?.() !== 0) throw new LifeboatError('forbidden', 'building a guest needs root (debootstrap, losetup, mount)');
  const tools: [string, string][] = [['sfdisk', 'fdisk'], ['mkfs.ext4', 'e2fsprogs'], ['qemu-img', 'qemu-utils'], ['zstd', 'zstd']];
  if (!rootTarball) tools.push(['debootstrap', 'debootstrap']);
  if (firmware === 'bios') tools.push(['extlinux', 'extlinux'], ['losetup', 'mount'], ['partx', 'util-linux']);
  else tools.push(['mkfs.vfat', 'dosfstools'], ['mcopy', 'mtools']);
  for (const [tool, pkg] of tools) {
    if (!(await haveTool(tool))) throw new LifeboatError('unavailable', `${tool} is not installed (Debian package ${pkg})`);
  }
  if (firmware === 'bios' && !existsSync(SyslinuxMbr)) throw new LifeboatError('unavailable', `${SyslinuxMbr} is missing (Debian package syslinux-common)`);
  if (firmware === 'uefi' && !existsSync(OvmfVarsTemplate)) throw new LifeboatError('unavailable', `${OvmfVarsTemplate} is missing (Debian package ovmf)`);
}

interface KernelFiles { vmlinuz: string; initrd: string }

/** The one kernel and initrd under /boot (paths as the guest sees them). */
async function kernelFiles(tree: string): Promise<KernelFiles> {
  const names = await readdir(join(tree, 'boot'));
  const vmlinuz = names.filter((n) => n.startsWith('vmlinuz-')).sort().pop();
  if (!vmlinuz) throw new LifeboatError('io', 'the guest root has no kernel in /boot');
  const initrd = `initrd.img-${vmlinuz.slice('vmlinuz-'.length)}`;
  if (!names.includes(initrd)) throw new LifeboatError('io', `the guest root has no ${initrd} in /boot`);
  return { vmlinuz: `/boot/${vmlinuz}`, initrd: `/boot/${initrd}` };
}

/** fstab and cloud-init's switch: the files that differ between variants of one root. */
async function configureVariant(tree: string, v: { rootUuid: string; espVolumeId?: string; cloudInit: boolean }): Promise<void> {
  let fstab = `UUID=${v.rootUuid} / ext4 defaults,errors=remount-ro 0 1\n`;
  if (v.espVolumeId) {
    const id = `${v.espVolumeId.slice(0, 4)}-${v.espVolumeId.slice(4)}`.toUpperCase();
    fstab += `UUID=${id} /boot/efi vfat umask=0077,nofail 0 1\n`;
    await mkdir(join(tree, 'boot/efi'), { recursive: true });
  }
  await writeFile(join(tree, 'etc/fstab'), fstab);
  const disabled = join(tree, 'etc/cloud/cloud-init.disabled');
  if (v.cloudInit) await rm(disabled, { force: true });
  else await writeFile(disabled, 'lifeboat test guest built with cloud-init disabled\n');
}

async function writeExtlinuxConf(tree: string, k: KernelFiles, rootUuid: string): Promise<void> {
  await mkdir(join(tree, 'boot/extlinux'), { recursive: true });
  await writeFile(join(tree, 'boot/extlinux/extlinux.conf'), [
    'SERIAL 0 115200',
    'DEFAULT debian',
    'PROMPT 0',
    'TIMEOUT 10',
    'LABEL debian',
    `  LINUX ${k.vmlinuz}`,
    `  INITRD ${k.initrd}`,
    `  APPEND root=UUID=${rootUuid} ${KernelArgs}`,
    '',
  ].join('\n'));
}

/** mbr.bin into the MBR's boot code, then extlinux --install on the mounted root partition. */
async function installExtlinux(raw: string, partitionNumber: number): Promise<void> {
  const mbr = await readFile(SyslinuxMbr);
  const fh = await open(raw, 'r+');
  try {
    await fh.write(mbr, 0, Math.min(440, mbr.length), 0);
  } finally {
    await fh.close();
  }
  await withPartitionDevice(raw, partitionNumber, (dev) => withMount(dev, (mnt) => run('extlinux', ['--install', join(mnt, 'boot/extlinux')])));
}

/**
 * A standalone GRUB EFI image made inside the guest root by its own grub-mkstandalone (package
 * grub-efi-amd64-bin): its embedded config finds the root filesystem by UUID and reads
 * /boot/grub/grub.cfg there, which names the kernel. Returns the image's path on the host.
 */
async function makeGrubEfi(tree: string, k: KernelFiles, rootUuid: string): Promise<string> {
  await mkdir(join(tree, 'boot/grub'), { recursive: true });
  await writeFile(join(tree, 'boot/grub/grub.cfg'), [
    'set timeout=1',
    'serial --unit=0 --speed=115200',
    'terminal_input console serial',
    'terminal_output console serial',
    "menuentry 'Debian GNU/Linux' {",
    `  linux ${k.vmlinuz} root=UUID=${rootUuid} ${KernelArgs}`,
    `  initrd ${k.initrd}`,
    '}',
    '',
  ].join('\n'));
  const embedded = [
    'insmod part_gpt',
    'insmod ext2',
    `search --no-floppy --fs-uuid --set=root ${rootUuid}`,
    'set prefix=($root)/boot/grub',
    'configfile ($root)/boot/grub/grub.cfg',
    '',
  ].join('\n');
  await writeFile(join(tree, 'tmp/lifeboat-grub-embedded.cfg'), embedded);
  await run('chroot', [tree, 'grub-mkstandalone', '-O', 'x86_64-efi', '-o', '/tmp/lifeboat-grubx64.efi',
    '--modules=part_gpt part_msdos ext2 fat search search_fs_uuid linux normal configfile echo serial terminal efi_gop all_video',
    '--locales=', '--themes=', '--fonts=',
    'boot/grub/grub.cfg=/tmp/lifeboat-grub-embedded.cfg']);
  const efi = join(dirname(tree), 'grubx64.efi');
  await copyFile(join(tree, 'tmp/lifeboat-grubx64.efi'), efi);
  await rm(join(tree, 'tmp/lifeboat-grubx64.efi'), { force: true });
  await rm(join(tree, 'tmp/lifeboat-grub-embedded.cfg'), { force: true });
  return efi;
}

