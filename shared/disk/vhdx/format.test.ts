import { describe, expect, it } from 'vitest';
import { Bat, batLayout, PayloadFullyPresent } from './bat.js';
import { bitRuns, setBits } from './bitmap.js';
import { checksumWithHole, currentHeader, GuidBatRegion, newGuid, parseHeader, readGuid, serializeHeader, TiB, writeGuid, ZeroGuid } from './format.js';
import { descriptorSectors } from './log.js';
import { parseParentLocator, serializeParentLocator } from './metadata.js';

describe('VHDX structures', () => {
  it('stores GUIDs in Microsoft byte order', () => {
    const b = Buffer.alloc(16);
    writeGuid(b, 0, GuidBatRegion);
    expect(b.toString('hex')).toBe('6677c22d23f600429d64115e9bfd4a08');
    expect(readGuid(b, 0)).toBe(GuidBatRegion);
    const g = newGuid();
    writeGuid(b, 0, `{${g.toUpperCase()}}`);
    expect(readGuid(b, 0)).toBe(g);
  });

  it('checksums with the field as zero (CRC-32C)', () => {
    const b = Buffer.from('123456789');
    const withHole = Buffer.concat([b.subarray(0, 4), Buffer.alloc(4), b.subarray(8)]);
    expect(checksumWithHole(withHole, 4)).toBe(checksumWithHole(b, 4));
  });

  it('picks the valid header with the higher sequence number and rejects a damaged one', () => {
    const h = { sequenceNumber: 5n, fileWriteGuid: newGuid(), dataWriteGuid: newGuid(), logGuid: ZeroGuid, logVersion: 0, version: 1, logLength: 1 << 20, logOffset: 1 << 20 };
    const a = serializeHeader(h);
    const b = serializeHeader({ ...h, sequenceNumber: 6n });
    expect(currentHeader(parseHeader(a), parseHeader(b)).slot).toBe(1);
    b[200] = 1;
    expect(parseHeader(b)).toBeUndefined();
    expect(currentHeader(parseHeader(a), parseHeader(b)).slot).toBe(0);
    expect(() => currentHeader(undefined, undefined)).toThrow(/both headers are invalid/);
  });

  it('lays out the BAT as MS-VHDX and qemu count it', () => {
    expect(batLayout({ blockSize: 32 << 20, logicalSectorSize: 512, virtualSize: 4 * 2 ** 30, hasParent: false })).toEqual({ chunkRatio: 128, dataBlocks: 128, sbBlocks: 1, totalEntries: 128 });
    expect(batLayout({ blockSize: 32 << 20, logicalSectorSize: 512, virtualSize: 4 * 2 ** 30 + 1, hasParent: false }).totalEntries).toBe(130);
    expect(batLayout({ blockSize: 1 << 20, logicalSectorSize: 4096, virtualSize: 10 << 20, hasParent: true })).toEqual({ chunkRatio: 32768, dataBlocks: 10, sbBlocks: 1, totalEntries: 32769 });
    const bat = new Bat(Buffer.alloc(8 * 300), 128);
    expect(bat.payloadIndex(128)).toBe(129);
    expect(bat.bitmapIndex(1)).toBe(257);
    bat.set(129, PayloadFullyPresent, 5 * TiB + (3 << 20));
    expect(bat.state(129)).toBe(PayloadFullyPresent);
    expect(bat.offset(129)).toBe(5 * TiB + (3 << 20));
    expect(bat.takeDirtyRuns()).toEqual([{ at: 0, data: bat.bytes.subarray(0, 2400) }]);
  });

  it('sets and splits sector bitmap runs, least significant bit first', () => {
    const b = Buffer.alloc(32);
    setBits(b, 3, 5);
    setBits(b, 16, 100);
    expect(b[0]).toBe(0b00011000);
    expect(bitRuns(b, 0, 256)).toEqual([
      { start: 0, end: 3, present: false },
      { start: 3, end: 5, present: true },
      { start: 5, end: 16, present: false },
      { start: 16, end: 100, present: true },
      { start: 100, end: 256, present: false },
    ]);
  });

  it('round-trips parent locators and refuses entries outside the item', () => {
    const m = new Map([['parent_linkage', '{x}'], ['relative_path', '.\\p.vhdx']]);
    const b = serializeParentLocator(m);
    expect(parseParentLocator(b)).toEqual(m);
    b.writeUInt32LE(b.length, 20);
    expect(() => parseParentLocator(b)).toThrow(/outside the locator/);
  });

  it('counts log descriptor sectors: 126 descriptors in the first, 128 after', () => {
    expect([0, 126, 127, 254, 255].map(descriptorSectors)).toEqual([1, 1, 2, 2, 3]);
  });
});
