import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type * as ZstdBindingModule from 'zstd-napi/binding.js';
import { ChunkCompressor, ChunkDecompressor, CodecStored, DefaultZstdLevel } from './codec.js';

const zstd = createRequire(import.meta.url)('zstd-napi/binding.js') as typeof ZstdBindingModule;
const MiB = 1 << 20;

/** Text-like bytes (words from a small vocabulary), compressible as the synthetic disk's text. */
function text(n: number): Buffer {
  const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet'];
  const parts: string[] = [];
  let seed = 1;
  for (let len = 0; len < n;) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const w = `${words[seed % words.length]!}${seed % 97} `;
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

/** The zstd frame header's checksum flag and window size (RFC 8878, 3.1.1.1). */
function frameHeader(frame: Buffer): { checksum: boolean; windowBytes: number | undefined } {
  expect(frame.readUInt32LE(0)).toBe(0xfd2fb528);
  const descriptor = frame[4]!;
  const singleSegment = (descriptor & 0x20) !== 0;
  if (singleSegment) return { checksum: (descriptor & 0x04) !== 0, windowBytes: undefined };
  const w = frame[5]!;
  const base = 2 ** (10 + (w >> 3));
  return { checksum: (descriptor & 0x04) !== 0, windowBytes: base + (base / 8) * (w & 7) };
}

describe('chunk codec', () => {
  it('writes a zstd chunk as one standard frame with its content size, no checksum and a window within the chunk', () => {
    const raw = text(MiB);
    const compressor = new ChunkCompressor('zstd', MiB);
    const chunk = compressor.compress(raw);
    expect(chunk.codec).toBe(1);
    expect(chunk.bytes.length).toBeLessThan(raw.length);
    const frame = Buffer.from(chunk.bytes);
    expect(zstd.findFrameCompressedSize(frame)).toBe(frame.length);
    expect(zstd.getFrameContentSize(frame)).toBe(raw.length);
    const header = frameHeader(frame);
    expect(header.checksum).toBe(false);
    expect(header.windowBytes ?? raw.length).toBeLessThanOrEqual(MiB);
    // Any zstd decoder reads it: the library's one-shot decompress, not only our reused context.
    const out = Buffer.alloc(raw.length);
    expect(zstd.decompress(out, frame)).toBe(raw.length);
    expect(out.equals(raw)).toBe(true);
  });

  it('round-trips through the decompressor at the default and other levels, with a reused context', () => {
    const d = new ChunkDecompressor('zstd', MiB);
    for (const level of [DefaultZstdLevel, -5, 3]) {
      const c = new ChunkCompressor('zstd', MiB, level);
      for (const raw of [text(MiB), text(MiB - 12345), Buffer.alloc(MiB), text(100)]) {
        const chunk = c.compress(raw);
        expect(d.decompress(chunk.codec, Buffer.from(chunk.bytes), raw.length, 'test').equals(raw)).toBe(true);
      }
    }
  });

  it('stores a chunk that does not shrink as is', () => {
    const raw = randomBytes(MiB);
    for (const compression of ['zstd', 'lz4', 'none'] as const) {
      const chunk = new ChunkCompressor(compression, MiB).compress(raw);
      expect(chunk.codec).toBe(CodecStored);
      expect(chunk.bytes).toBe(raw);
    }
  });

  it('refuses a frame of another raw length, or cut short', () => {
    const raw = text(MiB);
    const chunk = new ChunkCompressor('zstd', MiB).compress(raw);
    const d = new ChunkDecompressor('zstd', MiB);
    expect(() => d.decompress(chunk.codec, Buffer.from(chunk.bytes), raw.length - 1, 'chunk 0')).toThrow(/chunk 0/);
    const truncated = Buffer.from(chunk.bytes.subarray(0, chunk.bytes.length - 10));
    expect(() => d.decompress(chunk.codec, truncated, raw.length, 'chunk 0')).toThrow(/chunk 0/);
  });
});
