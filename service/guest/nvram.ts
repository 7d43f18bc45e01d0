/**
 * An OVMF variable store (the VARS flash file) with one boot entry, written without booting.
 * Input: the empty VARS template of the distribution's OVMF (/usr/share/OVMF/OVMF_VARS_4M.fd), the
 * EFI system partition's place on the GPT disk and the loader's path in it. Output: a copy of the
 * template holding Boot0000 ("debian", HD(1,GPT,<partition GUID>,start,size)/\EFI\debian\grubx64.efi)
 * and BootOrder = 0000, so OVMF boots the distribution's loader as an installed system does, not only
 * the removable-media fallback. Failure: LifeboatError('corrupt') when the template is not an empty
 * OVMF variable store this code understands.
 *
 * Layout (EDK2 MdeModulePkg VariableFormat.h, x86-64): a firmware volume header (its length at 0x30)
 * followed by a VARIABLE_STORE_HEADER (signature gEfiAuthenticatedVariableGuid, size, format 0x5A,
 * state 0xFE; 28 bytes); variables start at the next 4-byte boundary. Each is an
 * AUTHENTICATED_VARIABLE_HEADER (60 bytes: StartId 0x55AA, State 0x3F "added", Reserved,
 * Attributes, MonotonicCount, EFI_TIME, PubKeyIndex, NameSize, DataSize, VendorGuid), its UTF-16 name
 * with the NUL, then its data, unpadded (ALIGNMENT is 1 on x86); the next header starts at the next
 * 4-byte boundary. Free space is 0xFF. The store has no checksum of its own.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { LifeboatError } from '../../shared/errors.js';

export const OvmfVarsTemplate = '/usr/share/OVMF/OVMF_VARS_4M.fd';
export const OvmfCode = '/usr/share/OVMF/OVMF_CODE_4M.fd';

const AuthVariableStoreGuid = 'aaf32c78-947b-439a-a180-2e144ec37792';
const EfiGlobalVariableGuid = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
const VarHeaderSize = 60;
const StoreHeaderSize = 28;
/** EFI_VARIABLE_NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS. */
const AttrNvBsRt = 7;
const LoadOptionActive = 1;

/** A GUID in EFI's mixed-endian byte order. */
export function guidBytes(guid: string): Buffer {
  const h = guid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(h)) throw new LifeboatError('invalid_argument', `not a GUID: ${guid}`);
  const b = Buffer.from(h, 'hex');
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
}

function utf16z(s: string): Buffer {
  return Buffer.from(`${s}\0`, 'utf16le');
}

export interface EspPlace {
  /** 1-based partition number. */
  partitionNumber: number;
  /** GPT unique partition GUID. */
  partitionGuid: string;
  startLba: number;
  sizeLba: number;
}

/** EFI_LOAD_OPTION: active, described, booting HD(...)/File(path)/End. */
export function loadOption(description: string, esp: EspPlace, loaderPath: string): Buffer {
  const hd = Buffer.alloc(42);
  hd.writeUInt8(4, 0); // MEDIA_DEVICE_PATH
  hd.writeUInt8(1, 1); // MEDIA_HARDDRIVE_DP
  hd.writeUInt16LE(42, 2);
  hd.writeUInt32LE(esp.partitionNumber, 4);
  hd.writeBigUInt64LE(BigInt(esp.startLba), 8);
  hd.writeBigUInt64LE(BigInt(esp.sizeLba), 16);
  guidBytes(esp.partitionGuid).copy(hd, 24);
  hd.writeUInt8(2, 40); // MBRType: GPT
  hd.writeUInt8(2, 41); // SignatureType: GUID
  const name = utf16z(loaderPath);
  const file = Buffer.alloc(4 + name.length);
  file.writeUInt8(4, 0); // MEDIA_DEVICE_PATH
  file.writeUInt8(4, 1); // MEDIA_FILEPATH_DP
  file.writeUInt16LE(file.length, 2);
  name.copy(file, 4);
  const end = Buffer.from([0x7f, 0xff, 4, 0]);
  const paths = Buffer.concat([hd, file, end]);
  const head = Buffer.alloc(6);
  head.writeUInt32LE(LoadOptionActive, 0);
  head.writeUInt16LE(paths.length, 4);
  return Buffer.concat([head, utf16z(description), paths]);
}

function variable(name: string, vendorGuid: string, data: Buffer): Buffer {
  const n = utf16z(name);
  const h = Buffer.alloc(VarHeaderSize);
  h.writeUInt16LE(0x55aa, 0);
  h.writeUInt8(0x3f, 2); // VAR_ADDED
  h.writeUInt32LE(AttrNvBsRt, 4);
  // MonotonicCount, TimeStamp, PubKeyIndex: zero.
  h.writeUInt32LE(n.length, 36);
  h.writeUInt32LE(data.length, 40);
  guidBytes(vendorGuid).copy(h, 44);
  const v = Buffer.concat([h, n, data]);
  const padded = Buffer.alloc((v.length + 3) & ~3, 0xff);
  v.copy(padded);
  return padded;
}

/** The template with Boot0000 and BootOrder added; the template must hold no variable yet. */
export function varsWithBootEntry(template: Buffer, description: string, esp: EspPlace, loaderPath: string): Buffer {
  const fvHeaderLength = template.length >= 0x40 ? template.readUInt16LE(0x30) : 0;
  if (fvHeaderLength < 0x48 || template.subarray(0x28, 0x2c).toString('latin1') !== '_FVH') {
    throw new LifeboatError('corrupt', 'OVMF VARS template: no firmware volume header');
  }
  const store = fvHeaderLength;
  if (!template.subarray(store, store + 16).equals(guidBytes(AuthVariableStoreGuid))) {
    throw new LifeboatError('corrupt', 'OVMF VARS template: not an authenticated variable store');
  }
  const storeSize = template.readUInt32LE(store + 16);
  const first = (store + StoreHeaderSize + 3) & ~3;
  if (template.readUInt16LE(first) !== 0xffff) throw new LifeboatError('corrupt', 'OVMF VARS template already holds variables');
  const vars = Buffer.concat([
    variable('Boot0000', EfiGlobalVariableGuid, loadOption(description, esp, loaderPath)),
    variable('BootOrder', EfiGlobalVariableGuid, Buffer.from([0, 0])),
  ]);
  if (first + vars.length > store + storeSize) throw new LifeboatError('corrupt', 'OVMF VARS template: variable store too small');
  const out = Buffer.from(template);
  vars.copy(out, first);
  return out;
}

/** Writes OUT (a new file) from the distribution's template with a boot entry for loaderPath. */
export async function writeOvmfVars(out: string, esp: EspPlace, loaderPath: string, template = OvmfVarsTemplate): Promise<void> {
  let t: Buffer;
  try {
    t = await readFile(template);
  } catch (err) {
    throw new LifeboatError('unavailable', `cannot read the OVMF VARS template ${template} (Debian package ovmf)`, { cause: err });
  }
  await writeFile(out, varsWithBootEntry(t, 'debian', esp, loaderPath), { flag: 'wx' });
}
