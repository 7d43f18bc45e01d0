/**
 * Opening a VHDX file: identifier, headers, log replay, region tables, metadata and BAT, each
 * checked against the file before anything is allocated from it.
 */
import { ErrCorrupt, ErrUnsupported } from '../../errors.js';
import { Bat, batLayout, validateBat } from './bat.js';
import { VhdxFile } from './file.js';
import {
  currentHeader, HeaderOffsets, HeaderSectionSize, HeaderSize, MiB, parseHeader, parseRegionTable, RegionTableOffsets, RegionTableSize,
  SigFile, validateRegions, GuidBatRegion, GuidMetadataRegion, type RegionEntry, type Regions,
} from './format.js';
import { HeaderState } from './headers.js';
import { checkLogLocation, replayLog } from './journal.js';
import { parseMetadata, type VhdxMetadata } from './metadata.js';

/** Metadata regions above this are refused rather than read into memory. */
export const MaxMetadataRegion = 32 * MiB;

export interface VhdxLayout {
  file: VhdxFile;
  headers: HeaderState;
  regions: Regions;
  meta: VhdxMetadata;
  bat: Bat;
  /** True when a log was replayed (in memory for a read-only open). */
  replayed: boolean;
  /** File ranges that are not payload: header section, log, every region of the region table. */
  reserved: { start: number; end: number }[];
}

/** True when head starts with the VHDX file type identifier. */
export function isVhdx(head: Buffer): boolean {
  return head.length >= 8 && head.toString('latin1', 0, 8) === SigFile;
}

export async function openLayout(path: string, readOnly: boolean): Promise<VhdxLayout> {
  const file = await VhdxFile.open(path, readOnly);
  try {
    return await readLayout(file);
  } catch (err) {
    await file.close();
    throw err;
  }
}

async function readLayout(file: VhdxFile): Promise<VhdxLayout> {
  if (file.size < HeaderSectionSize) throw ErrCorrupt(`file of ${file.size} bytes is too short for VHDX`);
  const head = Buffer.alloc(RegionTableOffsets[1] + RegionTableSize);
  await file.read(head, 0, 'header section');
  if (!isVhdx(head)) throw ErrCorrupt('no VHDX file type identifier');
  const { header, slot } = currentHeader(
    parseHeader(head.subarray(HeaderOffsets[0], HeaderOffsets[0] + HeaderSize)),
    parseHeader(head.subarray(HeaderOffsets[1], HeaderOffsets[1] + HeaderSize)),
  );
  const headers = new HeaderState(header, slot);
  checkLogLocation(headers, file.size);
  const replayed = await replayLog(file, headers);
  if (replayed) await file.read(head, 0, 'header section');

  const entries = readRegionTables(head);
  const regions = validateRegions(entries, file.size);
  if (!file.readOnly) await repairRegionTables(file, head);
  if (regions.metadata.length > MaxMetadataRegion) throw ErrUnsupported(`metadata region of ${regions.metadata.length} bytes is too large`);
  const metaBytes = Buffer.alloc(regions.metadata.length);
  await file.read(metaBytes, regions.metadata.fileOffset, 'metadata region');
  const meta = parseMetadata(metaBytes, regions.metadata.fileOffset);

  const layout = batLayout({ ...meta, hasParent: meta.hasParent });
  const batBytes = layout.totalEntries * 8;
  if (batBytes > regions.bat.length) throw ErrCorrupt(`BAT region of ${regions.bat.length} bytes is too small for ${layout.totalEntries} entries`);
  const bytes = Buffer.alloc(batBytes);
  await file.read(bytes, regions.bat.fileOffset, 'BAT');
  const bat = new Bat(bytes, layout.chunkRatio);
  const reserved = [
    { start: 0, end: HeaderSectionSize },
    { start: headers.current.logOffset, end: headers.current.logOffset + headers.current.logLength },
    { start: regions.bat.fileOffset, end: regions.bat.fileOffset + regions.bat.length },
    { start: regions.metadata.fileOffset, end: regions.metadata.fileOffset + regions.metadata.length },
  ];
  validateBat(bat, meta.blockSize, file.size, reserved);
  // Regions we do not know (optional ones) are not payload either.
  for (const e of entries) if (e.guid !== GuidBatRegion && e.guid !== GuidMetadataRegion) reserved.push({ start: e.fileOffset, end: e.fileOffset + e.length });
  return { file, headers, regions, meta, bat, replayed, reserved };
}

/** The first valid region table; the second is the spare used when the first is damaged. */
function readRegionTables(head: Buffer): RegionEntry[] {
  const t1 = parseRegionTable(head.subarray(RegionTableOffsets[0], RegionTableOffsets[0] + RegionTableSize));
  const t2 = parseRegionTable(head.subarray(RegionTableOffsets[1], RegionTableOffsets[1] + RegionTableSize));
  const t = t1 ?? t2;
  if (!t) throw ErrCorrupt('both region tables are invalid (bad signature or CRC-32C)');
  // A spare that is valid must not name a required region we do not know either.
  if (t1 && t2) checkRequired(t2);
  return t;
}

function checkRequired(entries: RegionEntry[]): void {
  const unknown = entries.find((e) => e.required && e.guid !== GuidBatRegion && e.guid !== GuidMetadataRegion);
  if (unknown) throw ErrUnsupported(`unknown required region ${unknown.guid}`);
}

/**
 * Writable open: a damaged region table is rewritten from the valid one (qemu reads only the
 * first). One copy stays valid throughout, so a crash during the repair changes nothing.
 */
async function repairRegionTables(file: VhdxFile, head: Buffer): Promise<void> {
  const tables = RegionTableOffsets.map((at) => head.subarray(at, at + RegionTableSize));
  const valid = tables.map((t) => parseRegionTable(t) !== undefined);
  const good = valid.indexOf(true);
  const bad = valid.indexOf(false);
  if (good < 0 || bad < 0) return;
  await file.write(Buffer.from(tables[good]!), RegionTableOffsets[bad]!);
  await file.sync();
}
