import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { guidBytes, loadOption, OvmfVarsTemplate, varsWithBootEntry } from './nvram.js';

const esp = { partitionNumber: 1, partitionGuid: '0b71f455-dd75-4841-bf1c-3bd1e72951e7', startLba: 2048, sizeLba: 131072 };

describe('OVMF VARS boot entry', () => {
  it('encodes a GUID in EFI byte order', () => {
    expect(guidBytes('8be4df61-93ca-11d2-aa0d-00e098032b8c').toString('hex')).toBe('61dfe48bca93d211aa0d00e098032b8c');
  });

  it('lays out EFI_LOAD_OPTION: attributes, path list length, description, HD()/File()/End', () => {
    const o = loadOption('debian', esp, '\\EFI\\debian\\grubx64.efi');
    expect(o.readUInt32LE(0)).toBe(1);
    const pathLen = o.readUInt16LE(4);
    const desc = Buffer.from('debian\0', 'utf16le');
    expect(o.subarray(6, 6 + desc.length).equals(desc)).toBe(true);
    const paths = o.subarray(6 + desc.length);
    expect(paths.length).toBe(pathLen);
    expect([paths[0], paths[1], paths.readUInt16LE(2)]).toEqual([4, 1, 42]);
    expect(paths.readUInt32LE(4)).toBe(1);
    expect(Number(paths.readBigUInt64LE(8))).toBe(2048);
    expect(Number(paths.readBigUInt64LE(16))).toBe(131072);
    expect(paths.subarray(24, 40).equals(guidBytes(esp.partitionGuid))).toBe(true);
    expect([paths[40], paths[41]]).toEqual([2, 2]);
    expect([paths[42], paths[43]]).toEqual([4, 4]);
    expect(paths.subarray(-4).equals(Buffer.from([0x7f, 0xff, 4, 0]))).toBe(true);
  });

  it.skipIf(!existsSync(OvmfVarsTemplate))('adds Boot0000 and BootOrder to the empty template, once', () => {
    const t = readFileSync(OvmfVarsTemplate);
    const v = varsWithBootEntry(t, 'debian', esp, '\\EFI\\debian\\grubx64.efi');
    expect(v.length).toBe(t.length);
    const first = v.indexOf(Buffer.from([0xaa, 0x55, 0x3f]));
    expect(first).toBe((v.readUInt16LE(0x30) + 28 + 3) & ~3);
    expect(v.readUInt32LE(first + 4)).toBe(7);
    const nameSize = v.readUInt32LE(first + 36);
    expect(v.subarray(first + 60, first + 60 + nameSize).toString('utf16le')).toBe('Boot0000\0');
    const dataSize = v.readUInt32LE(first + 40);
    const second = (first + 60 + nameSize + dataSize + 3) & ~3;
    expect(v.readUInt16LE(second)).toBe(0x55aa);
    expect(v.subarray(second + 60, second + 60 + 20).toString('utf16le')).toBe('BootOrder\0');
    expect(v.readUInt16LE(second + 60 + 20)).toBe(0);
    expect(() => varsWithBootEntry(v, 'debian', esp, '\\x')).toThrow(/already holds variables/);
    expect(() => varsWithBootEntry(Buffer.alloc(4096), 'debian', esp, '\\x')).toThrow(/firmware volume/);
  });
});
