/**
 * Growing the virtual disk. The new size (and, when the BAT must move, both region tables) change
 * through the log in one entry, so a crash leaves either the old disk or the new one. Everything
 * the new metadata points at (the BAT's new entries, a relocated BAT, a fixed disk's new blocks)
 * is durable before the entry is logged.
 */
import { ErrInvalidArgument } from '../../errors.js';
import { Bat, batLayout, PayloadFullyPresent, PayloadPartiallyPresent } from './bat.js';
import type { VhdxCore } from './core.js';
import { MaxVirtualSize, MiB, RegionTableOffsets, serializeRegionTable, writeU64, GuidBatRegion, GuidMetadataRegion } from './format.js';
import { roundUp, writeThroughLog, type LoggedWrite } from './journal.js';
import { LogSector } from './log.js';

export async function resizeVirtual(core: VhdxCore, newSize: number): Promise<void> {
  const oldSize = core.virtualSize;
  if (!Number.isSafeInteger(newSize) || newSize < oldSize) throw ErrInvalidArgument(`cannot shrink a disk (from ${oldSize} to ${newSize} bytes)`);
  if (newSize % core.sectorSize !== 0) throw ErrInvalidArgument(`size ${newSize} is not a multiple of the ${core.sectorSize}-byte sector`);
  if (newSize > MaxVirtualSize) throw ErrInvalidArgument(`size ${newSize} exceeds the VHDX maximum of 64 TiB`);
  if (newSize === oldSize) return;
  await core.beginWrites();
  await clearOldTail(core, oldSize, newSize);
  await core.barrier(true);

  const { bat } = core;
  const layout = batLayout({ blockSize: core.blockSize, logicalSectorSize: core.sectorSize, virtualSize: newSize, hasParent: core.hasParent });
  const oldEntries = bat.entryCount;
  const newEntries = Math.max(layout.totalEntries, oldEntries);
  const grown = Buffer.alloc(newEntries * 8);
  bat.bytes.copy(grown);
  if (core.meta.leaveBlockAllocated && !core.hasParent) {
    // A fixed disk stays fully provisioned: the new blocks are allocated (zero-filled) up front.
    const enc = new Bat(grown, bat.chunkRatio);
    const oldBlocks = Math.ceil(oldSize / core.blockSize);
    for (let b = oldBlocks; b < layout.dataBlocks; b++) enc.set(enc.payloadIndex(b), PayloadFullyPresent, await core.allocate(core.blockSize));
  }

  const logged: LoggedWrite[] = [];
  let region = core.regions.bat;
  if (newEntries * 8 > region.length) {
    // The BAT no longer fits its region: write the whole table to a new region at the end of the file.
    const length = roundUp(newEntries * 8, MiB);
    const at = await core.allocate(length);
    await core.file.write(grown, at);
    region = { ...region, fileOffset: at, length };
    const table = serializeRegionTable([region, core.regions.metadata].sort((a, b) => order(a.guid) - order(b.guid)));
    for (const off of RegionTableOffsets) logged.push({ at: off, data: table });
  } else if (newEntries > oldEntries) {
    await core.file.write(grown.subarray(oldEntries * 8), region.fileOffset + oldEntries * 8);
  }
  await core.file.sync();

  const sectorAt = Math.floor(core.meta.virtualSizeFileOffset / LogSector) * LogSector;
  const sector = Buffer.alloc(LogSector);
  await core.file.read(sector, sectorAt, 'metadata');
  writeU64(sector, core.meta.virtualSizeFileOffset - sectorAt, newSize);
  logged.push({ at: sectorAt, data: sector });
  await writeThroughLog(core.file, core.headers, logged);

  bat.bytes = grown;
  core.regions = { ...core.regions, bat: region };
  core.meta.virtualSize = newSize;
}

function order(guid: string): number {
  return guid === GuidBatRegion ? 0 : guid === GuidMetadataRegion ? 1 : 2;
}

/**
 * Bytes of the old last block past the old end must read as zeros once they are inside the disk;
 * whatever a writer left there is cleared first.
 */
async function clearOldTail(core: VhdxCore, oldSize: number, newSize: number): Promise<void> {
  const { bat, blockSize } = core;
  const inBlock = oldSize % blockSize;
  if (inBlock === 0) return;
  const block = Math.floor(oldSize / blockSize);
  const idx = bat.payloadIndex(block);
  const state = bat.state(idx);
  if (state !== PayloadFullyPresent && state !== PayloadPartiallyPresent) return;
  const end = Math.min(blockSize, inBlock + (newSize - oldSize));
  await core.file.writeZeros(bat.offset(idx) + inBlock, end - inBlock);
  core.unsynced = true;
}
