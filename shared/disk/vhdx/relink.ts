/**
 * Rewriting a differencing disk's parent locator (after a merge changed the parent's
 * DataWriteGuid, or to point at another parent). The metadata table sector and the locator's
 * sectors change together through the log, so a crash leaves the old locator or the new one.
 */
import { ErrUnsupported } from '../../errors.js';
import type { VhdxCore } from './core.js';
import { readGuid } from './format.js';
import { roundUp, writeThroughLog, type LoggedWrite } from './journal.js';
import { LogSector } from './log.js';
import { GuidParentLocator, MetadataTableSize, serializeParentLocator } from './metadata.js';

export async function rewriteParentLocator(core: VhdxCore, locator: Map<string, string>): Promise<void> {
  const region = core.regions.metadata;
  const table = Buffer.alloc(MetadataTableSize);
  await core.file.read(table, region.fileOffset, 'metadata table');
  const count = table.readUInt16LE(10);
  let entryAt = -1;
  const others: { start: number; end: number }[] = [];
  for (let i = 0; i < count; i++) {
    const at = 32 + i * 32;
    const item = { start: table.readUInt32LE(at + 16), end: table.readUInt32LE(at + 16) + table.readUInt32LE(at + 20) };
    if (readGuid(table, at) === GuidParentLocator) entryAt = at;
    else if (item.end > item.start) others.push(item);
  }
  if (entryAt < 0) throw ErrUnsupported('disk has no parent locator to rewrite');
  const bytes = serializeParentLocator(locator);
  const fits = (start: number) => start + bytes.length <= region.length && others.every((o) => start + bytes.length <= o.start || o.end <= start);
  let offset = table.readUInt32LE(entryAt + 16);
  if (offset < MetadataTableSize || !fits(offset)) {
    offset = roundUp(Math.max(MetadataTableSize, ...others.map((o) => o.end), offset + table.readUInt32LE(entryAt + 20)), LogSector);
    if (!fits(offset)) throw ErrUnsupported('new parent locator does not fit the metadata region');
  }
  table.writeUInt32LE(offset, entryAt + 16);
  table.writeUInt32LE(bytes.length, entryAt + 20);

  // The locator's sectors keep whatever else they hold; only its bytes change.
  const first = Math.floor(offset / LogSector) * LogSector;
  const sectors = Buffer.alloc(roundUp(offset + bytes.length, LogSector) - first);
  await core.file.read(sectors, region.fileOffset + first, 'metadata');
  bytes.copy(sectors, offset - first);
  const tableSector = Math.floor(entryAt / LogSector) * LogSector;
  const writes: LoggedWrite[] = [
    { at: region.fileOffset + tableSector, data: table.subarray(tableSector, tableSector + LogSector) },
    { at: region.fileOffset + first, data: sectors },
  ];
  await core.barrier(true);
  await core.headers.beginWrites(core.file, false);
  await writeThroughLog(core.file, core.headers, writes);
  core.meta.parentLocator = locator;
}
