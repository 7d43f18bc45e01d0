/**
 * lifeboat-agent disk create FILE --size SIZE [--format vhdx|raw|vhd] [--block-size SIZE]
 * [--type dynamic|fixed], or disk create FILE --parent PARENT (a differencing child).
 * Refuses an existing FILE; a failed create leaves nothing behind.
 */
import { rm } from 'node:fs/promises';
import type { Command } from 'commander';
import { LifeboatError } from '../../shared/errors.js';
import { createChildDisk, createDisk, type DiskImage } from '../../shared/disk/index.js';
import { checkOutputDir, refuseExisting } from '../../shared/disk/ops/convert.js';
import { about, outputFormat, outputType, requireFile, sizeOption } from './disk-common.js';

interface CreateFlags { size?: string; format?: string; blockSize?: string; type?: string; parent?: string }

export function registerDiskCreate(disk: Command): void {
  disk
    .command('create')
    .description('create an empty image, or a differencing child of a parent')
    .argument('<file>', 'the image to create (must not exist)')
    .option('--size <size>', 'virtual size (512, 64K, 10G; binary units)')
    .option('--format <format>', 'vhdx, vhd or raw (default: from the extension, else vhdx)')
    .option('--block-size <size>', 'VHDX/VHD block size (VHDX 1M to 256M, default 32M; VHD default 2M)')
    .option('--type <type>', 'dynamic (default) or fixed')
    .option('--parent <file>', 'create a differencing child of this image instead (VHDX)')
    .action(async (file: string, flags: CreateFlags) => {
      const img = await about(file, () => create(file, flags));
      await img.close();
    });
}

async function create(file: string, flags: CreateFlags): Promise<DiskImage> {
  const blockSize = sizeOption(flags.blockSize, 'block size');
  if (flags.parent !== undefined) {
    if (flags.size !== undefined || flags.type !== undefined || flags.format !== undefined) {
      throw new LifeboatError('invalid_argument', `${file}: --parent takes neither --size, --type nor --format (the child has its parent's)`);
    }
    const parent = flags.parent;
    await requireFile(parent).catch((err: Error) => { throw new LifeboatError('not_found', `${file}: parent ${err.message}`); });
  }
  const size = sizeOption(flags.size, 'size');
  if (flags.parent === undefined && size === undefined) throw new LifeboatError('invalid_argument', `${file}: give --size SIZE or --parent FILE`);
  const format = outputFormat(flags.format, file);
  const type = outputType(flags.type, file);
  await refuseExisting(file);
  await checkOutputDir(file);
  try {
    if (flags.parent !== undefined) return await createChildDisk(file, flags.parent, { blockSize });
    return await createDisk(file, format, { virtualSize: size!, type, blockSize });
  } catch (err) {
    await rm(file, { force: true });
    throw err;
  }
}
