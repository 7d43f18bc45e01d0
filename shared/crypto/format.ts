/**
 * The envelope's byte layout (docs/formats/envelope.md): the fixed header, its bounds, and the nonce and
 * associated data of each frame. Sealing and opening both build frames from here, so the two can never
 * disagree on what is authenticated.
 */
import { createHash } from 'node:crypto';
import { ErrTampered, ErrUnsupported, LifeboatError } from '../errors.js';
import { gcmOpen, gcmOpenAsync, gcmSeal } from './aes-gcm.js';

export const EnvelopeMagic = Buffer.from([0x4c, 0x42, 0x45, 0x4e, 0x56, 0x00, 0x0d, 0x0a]);
export const EnvelopeVersion = 1;
export const FixedHeaderBytes = 24;
export const TagBytes = 16;
export const DefaultFrameSize = 1 << 20;
export const MinFrameSize = 1 << 12;
export const MaxFrameSize = 1 << 24;
export const MaxContextBytes = 64 * 1024;
export const MaxJweBytes = 4096;
export const MaxFrames = 2 ** 32;

export interface EnvelopeHeader {
  frameSize: number;
  context: Buffer;
  jwe: string;
}

/** The header bytes [0, H): fixed part, context, JWE. */
export function encodeHeader(h: EnvelopeHeader): Buffer {
  checkFrameSize(h.frameSize);
  const jwe = Buffer.from(h.jwe, 'ascii');
  if (h.context.length > MaxContextBytes) throw new LifeboatError('too_large', `envelope context is ${h.context.length} bytes; at most ${MaxContextBytes}`);
  if (jwe.length === 0 || jwe.length > MaxJweBytes) throw new Error(`wrapped key of ${jwe.length} bytes is out of bounds`);
  const fixed = Buffer.alloc(FixedHeaderBytes);
  EnvelopeMagic.copy(fixed, 0);
  fixed.writeUInt16LE(EnvelopeVersion, 8);
  fixed.writeUInt16LE(0, 10);
  fixed.writeUInt32LE(h.frameSize, 12);
  fixed.writeUInt32LE(h.context.length, 16);
  fixed.writeUInt32LE(jwe.length, 20);
  return Buffer.concat([fixed, h.context, jwe]);
}

/** Lengths of the variable part, from the fixed 24 bytes, each bounded before anything is read. */
export function parseFixedHeader(fixed: Buffer): { frameSize: number; contextLength: number; jweLength: number } {
  if (fixed.length < EnvelopeMagic.length || !fixed.subarray(0, EnvelopeMagic.length).equals(EnvelopeMagic)) {
    throw new LifeboatError('corrupt', 'not a sealed lifeboat object (no envelope magic)');
  }
  if (fixed.length < FixedHeaderBytes) throw ErrTampered(`truncated: the envelope header ends after ${fixed.length} bytes`);
  const version = fixed.readUInt16LE(8);
  if (version !== EnvelopeVersion) throw ErrUnsupported(`envelope version ${version} is not supported (this reader knows ${EnvelopeVersion})`);
  const flags = fixed.readUInt16LE(10);
  if (flags !== 0) throw ErrUnsupported(`envelope flags 0x${flags.toString(16)} are not supported`);
  const frameSize = fixed.readUInt32LE(12);
  const contextLength = fixed.readUInt32LE(16);
  const jweLength = fixed.readUInt32LE(20);
  if (!isValidFrameSize(frameSize)) throw ErrTampered(`envelope frame size ${frameSize} is not a power of two from ${MinFrameSize} to ${MaxFrameSize}`);
  if (contextLength > MaxContextBytes) throw ErrTampered(`envelope context length ${contextLength} exceeds ${MaxContextBytes}`);
  if (jweLength === 0 || jweLength > MaxJweBytes) throw ErrTampered(`envelope key-wrap length ${jweLength} is not 1 to ${MaxJweBytes}`);
  return { frameSize, contextLength, jweLength };
}

export function isValidFrameSize(n: number): boolean {
  return Number.isInteger(n) && n >= MinFrameSize && n <= MaxFrameSize && (n & (n - 1)) === 0;
}

export function checkFrameSize(n: number): void {
  if (!isValidFrameSize(n)) throw new RangeError(`frame size ${n} is not a power of two from ${MinFrameSize} to ${MaxFrameSize}`);
}

/** SHA-256 of the header bytes, bound into every frame. */
export function headerDigest(header: Buffer): Buffer {
  return createHash('sha256').update(header).digest();
}

function nonce(index: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeUInt32LE(index >>> 0, 4);
  n.writeUInt32LE(Math.floor(index / 2 ** 32), 8);
  return n;
}

function associatedData(digest: Buffer, index: number, last: boolean): Buffer {
  const aad = Buffer.allocUnsafe(41);
  digest.copy(aad, 0);
  aad.writeUInt32LE(index >>> 0, 32);
  aad.writeUInt32LE(Math.floor(index / 2 ** 32), 36);
  aad[40] = last ? 1 : 0;
  return aad;
}

/** Seals one frame's plaintext: one fresh buffer holding its ciphertext, then the tag. */
export function sealFrame(key: Buffer, digest: Buffer, index: number, last: boolean, plaintext: Buffer): Buffer[] {
  const out = Buffer.allocUnsafe(plaintext.length + TagBytes);
  gcmSeal(key, nonce(index), associatedData(digest, index, last), plaintext, out, 0, out, plaintext.length);
  return [out];
}

/** Seals the first length bytes of frame where they lie and writes the tag right after them. */
export function sealFrameInPlace(key: Buffer, digest: Buffer, index: number, last: boolean, frame: Buffer, length: number): void {
  if (frame.length < length + TagBytes) throw new RangeError('no room for the tag after the frame');
  const plaintext = frame.subarray(0, length);
  gcmSeal(key, nonce(index), associatedData(digest, index, last), plaintext, frame, 0, frame, length);
}

/**
 * Opens one frame into `into` (when given and large enough) or a fresh buffer, never into the
 * ciphertext's memory, which the source may reuse; undefined when the tag does not verify.
 */
export function openFrame(key: Buffer, digest: Buffer, index: number, last: boolean, ciphertext: Buffer[], tag: Buffer, into?: Buffer): Buffer[] | undefined {
  const { body, out } = frameBody(ciphertext, into);
  return gcmOpen(key, nonce(index), associatedData(digest, index, last), body, out, 0, tag) ? [out] : undefined;
}

/**
 * openFrame on libuv's thread pool (gcmOpenAsync): the ciphertext pieces, tag and into must stay
 * untouched until it settles.
 */
export async function openFrameAsync(key: Buffer, digest: Buffer, index: number, last: boolean, ciphertext: Buffer[], tag: Buffer, into?: Buffer): Promise<Buffer[] | undefined> {
  const { body, out } = frameBody(ciphertext, into);
  return (await gcmOpenAsync(key, nonce(index), associatedData(digest, index, last), body, out, 0, tag)) ? [out] : undefined;
}

/** Where a frame is opened from and into: pieces spanning source chunks are gathered first and opened in place. */
function frameBody(ciphertext: Buffer[], into: Buffer | undefined): { body: Buffer; out: Buffer } {
  const length = ciphertext.length === 1 ? ciphertext[0]!.length : ciphertext.reduce((n, piece) => n + piece.length, 0);
  const out = into !== undefined && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  if (ciphertext.length <= 1) return { body: ciphertext[0] ?? out, out };
  let at = 0;
  for (const piece of ciphertext) at += piece.copy(out, at);
  return { body: out, out };
}
