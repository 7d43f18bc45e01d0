/**
 * The VHD format entry of the disk registry: probe, open and create fixed and dynamic VHDs.
 * docs/formats/vhd.md says what we read, what we write and what we refuse.
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import { ErrCorrupt, ErrInvalidArgument, ErrUnsupported } from '../../errors.js';
import { readFull, writeFull } from '../raw.js';
import type { CreateOptions, DiskFormatDriver, DiskImage } from '../types.js';
import { DynamicVhd, readBat } from './dynamic.js';
import { FixedVhd } from './fixed.js';
import {
  DiskTypeDynamic, DiskTypeFixed, FooterCookie, FooterSize, footerVirtualSize, isFooter, NoDataOffset, parseFooter, SectorSize,
  serializeFooter, newFooter, type Footer,
} from './footer.js';
import { checkBlockSize, DefaultBlockSize, HeaderSize, parseHeader, serializeHeader } from './header.js';

const hasCookie = (buf: Buffer) => buf.length >= FooterSize && buf.toString('latin1', 0, 8) === FooterCookie;

async function openVhd(path: string, readOnly: boolean): Promise<DiskImage> {
  const fh = await open(path, readOnly ? 'r' : 'r+');
  try {
    return await openHandle(path, fh, readOnly);
  } catch (err) {
    await fh.close();
    throw err;
  }
}

async function openHandle(path: string, fh: FileHandle, readOnly: boolean): Promise<DiskImage> {
  const { size } = await fh.stat();
  if (size < FooterSize) throw ErrCorrupt(`VHD truncated: ${size} bytes, shorter than its footer`);
  const head = Buffer.alloc(FooterSize);
  const tail = Buffer.alloc(FooterSize);
  await readFull(fh, head, 0);
  await readFull(fh, tail, size - FooterSize);
  // A dynamic disk keeps a copy of its footer at offset 0, which readers trust first (as qemu does).
  const footer = parseFooter(hasCookie(head) ? head : tail);
  if (footer.diskType === DiskTypeFixed) {
    if (hasCookie(head) && !hasCookie(tail)) throw ErrCorrupt('fixed VHD has no footer at its end');
    return new FixedVhd(path, fh, footer, size, readOnly);
  }
  if (footer.dataOffset === NoDataOffset || footer.dataOffset < BigInt(FooterSize) || footer.dataOffset + BigInt(HeaderSize) > BigInt(size)) {
    throw ErrCorrupt(`VHD dynamic header offset ${footer.dataOffset} lies outside the file of ${size} bytes`);
  }
  const hbuf = Buffer.alloc(HeaderSize);
  await readFull(fh, hbuf, Number(footer.dataOffset));
  const virtualSize = footerVirtualSize(footer);
  const header = parseHeader(hbuf, virtualSize, size);
  const bat = await readBat(fh, header);
  // Without a valid footer at the end (a writer stopped before moving it), new blocks go past the file.
  const footerAt = Math.ceil((isFooter(tail) ? size - FooterSize : size) / SectorSize) * SectorSize;
  const img = new DynamicVhd(path, fh, footer, header, bat, size, footerAt, readOnly);
  if (!readOnly && !isFooter(tail)) await writeFull(fh, serializeFooter(footer), footerAt);
  return img;
}

/** Creates a fixed VHD (sparse data then the footer) or a dynamic one (footer copy, header, BAT, footer). */
async function createVhd(path: string, options: CreateOptions): Promise<DiskImage> {
  const type = options.type ?? 'dynamic';
  if (options.logicalSectorSize !== undefined && options.logicalSectorSize !== SectorSize) {
    throw ErrUnsupported(`VHD has 512-byte sectors only (asked for ${options.logicalSectorSize})`);
  }
  if (!Number.isSafeInteger(options.virtualSize) || options.virtualSize <= 0) throw ErrInvalidArgument(`virtual size ${options.virtualSize} must be positive`);
  const virtualSize = Math.ceil(options.virtualSize / SectorSize) * SectorSize;
  if (type === 'fixed' && options.blockSize !== undefined) throw ErrInvalidArgument('a fixed VHD has no block size');
  const blockSize = options.blockSize ?? DefaultBlockSize;
  checkBlockSize(blockSize);
  const layout = type === 'fixed' ? fixedLayout(virtualSize) : dynamicLayout(virtualSize, blockSize);

  const fh = await open(path, 'wx+', 0o600);
  try {
    for (const [offset, bytes] of layout.writes) await writeFull(fh, bytes, offset);
    await fh.truncate(layout.fileSize);
    return await openHandle(path, fh, false);
  } catch (err) {
    await fh.close();
    await rm(path, { force: true });
    throw err;
  }
}

interface Layout { fileSize: number; writes: Array<[number, Buffer]> }

function fixedLayout(virtualSize: number): Layout {
  const footer = serializeFooter(newFooter(virtualSize, DiskTypeFixed, NoDataOffset));
  return { fileSize: virtualSize + FooterSize, writes: [[virtualSize, footer]] };
}

function dynamicLayout(virtualSize: number, blockSize: number): Layout {
  const headerAt = FooterSize;
  const tableOffset = headerAt + HeaderSize;
  const maxTableEntries = Math.ceil(virtualSize / blockSize);
  const batBytes = Math.ceil(maxTableEntries * 4 / SectorSize) * SectorSize;
  const footer: Footer = newFooter(virtualSize, DiskTypeDynamic, BigInt(headerAt));
  const fbytes = serializeFooter(footer);
  const bat = Buffer.alloc(batBytes, 0xff);
  return {
    fileSize: tableOffset + batBytes + FooterSize,
    writes: [[0, fbytes], [headerAt, serializeHeader({ tableOffset, maxTableEntries, blockSize })], [tableOffset, bat], [tableOffset + batBytes, fbytes]],
  };
}

export const vhdDriver: DiskFormatDriver = {
  format: 'vhd',
  /** A footer cookie at the start (dynamic) or the end (fixed); open() checks the rest. */
  probe: (head, tail) => hasCookie(head) || hasCookie(tail),
  open: (path, options) => openVhd(path, options.readOnly ?? false),
  create: createVhd,
};
