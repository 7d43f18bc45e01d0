/**
 * Creating VHDX files, laid out as qemu-img does: header section (1 MiB), log at 1 MiB (1 MiB),
 * metadata region at 2 MiB (1 MiB), BAT at 3 MiB (rounded up to 1 MiB), payload blocks after.
 * The file is built under a temporary name and linked into place, so a failed create leaves
 * nothing and an existing file is never overwritten.
 */
import { link, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ErrInvalidArgument } from '../../errors.js';
import { Bat, batLayout, PayloadFullyPresent } from './bat.js';
import { VhdxFile } from './file.js';
import {
  GuidBatRegion, GuidMetadataRegion, HeaderOffsets, MaxBlockSize, MaxVirtualSize, MiB, MinBlockSize, newGuid, RegionTableOffsets,
  serializeHeader, serializeRegionTable, SigFile, ZeroGuid,
} from './format.js';
import { roundUp } from './journal.js';
import { serializeMetadata } from './metadata.js';

export const DefaultBlockSize = 32 * MiB;
export const DefaultLogSize = MiB;
const LogOffset = MiB;
const MetadataOffset = 2 * MiB;
const MetadataLength = MiB;
const BatOffset = 3 * MiB;

export interface VhdxCreateParams {
  virtualSize: number;
  fixed: boolean;
  blockSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  parentLocator?: Map<string, string>;
}

/** Checks creation parameters; throws invalid_argument naming the bad one. */
export function checkCreateParams(p: VhdxCreateParams): void {
  if (p.logicalSectorSize !== 512 && p.logicalSectorSize !== 4096) throw ErrInvalidArgument(`logical sector size ${p.logicalSectorSize} is not 512 or 4096`);
  if (p.physicalSectorSize !== 512 && p.physicalSectorSize !== 4096) throw ErrInvalidArgument(`physical sector size ${p.physicalSectorSize} is not 512 or 4096`);
  if (!Number.isSafeInteger(p.virtualSize) || p.virtualSize <= 0 || p.virtualSize > MaxVirtualSize) throw ErrInvalidArgument(`size ${p.virtualSize} is not between 1 byte and 64 TiB`);
  if (p.virtualSize % p.logicalSectorSize !== 0) throw ErrInvalidArgument(`size ${p.virtualSize} is not a multiple of the ${p.logicalSectorSize}-byte sector`);
  const bs = p.blockSize;
  if (!Number.isSafeInteger(bs) || bs < MinBlockSize || bs > MaxBlockSize || (bs & (bs - 1)) !== 0) throw ErrInvalidArgument(`block size ${bs} is not a power of two from 1 MiB to 256 MiB`);
}

/** Writes a complete new VHDX file at path. */
export async function createVhdxFile(path: string, p: VhdxCreateParams): Promise<void> {
  checkCreateParams(p);
  const layout = batLayout({ blockSize: p.blockSize, logicalSectorSize: p.logicalSectorSize, virtualSize: p.virtualSize, hasParent: p.parentLocator !== undefined });
  const batLength = roundUp(layout.totalEntries * 8, MiB);
  const dataStart = BatOffset + batLength;
  const metadata = serializeMetadata({
    blockSize: p.blockSize,
    leaveBlockAllocated: p.fixed,
    virtualSize: p.virtualSize,
    page83: newGuid(),
    logicalSectorSize: p.logicalSectorSize,
    physicalSectorSize: p.physicalSectorSize,
    parentLocator: p.parentLocator,
  });
  if (metadata.length > MetadataLength) throw ErrInvalidArgument('parent locator is too long');

  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const file = await VhdxFile.create(tmp);
  try {
    const id = Buffer.alloc(64 * 1024);
    id.write(SigFile, 0, 'latin1');
    id.write('lifeboat', 8, 'utf16le');
    await file.write(id, 0);
    const header = { fileWriteGuid: newGuid(), dataWriteGuid: newGuid(), logGuid: ZeroGuid, logVersion: 0, version: 1, logLength: DefaultLogSize, logOffset: LogOffset };
    await file.write(serializeHeader({ ...header, sequenceNumber: 0n }), HeaderOffsets[0]);
    await file.write(serializeHeader({ ...header, sequenceNumber: 1n }), HeaderOffsets[1]);
    const regions = serializeRegionTable([
      { guid: GuidBatRegion, fileOffset: BatOffset, length: batLength, required: true },
      { guid: GuidMetadataRegion, fileOffset: MetadataOffset, length: MetadataLength, required: true },
    ]);
    for (const at of RegionTableOffsets) await file.write(regions, at);
    await file.write(metadata, MetadataOffset);
    let end = dataStart;
    if (p.fixed) {
      const bat = new Bat(Buffer.alloc(layout.totalEntries * 8), layout.chunkRatio);
      for (let b = 0; b < layout.dataBlocks; b++) bat.set(bat.payloadIndex(b), PayloadFullyPresent, dataStart + b * p.blockSize);
      await file.write(bat.bytes, BatOffset);
      end = dataStart + layout.dataBlocks * p.blockSize;
    }
    await file.extend(end);
    await file.sync();
    await file.close();
    await link(tmp, path);
  } catch (err) {
    await file.close().catch(() => undefined);
    throw err;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}
