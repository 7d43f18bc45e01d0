/**
 * Sealing: a plaintext stream in, the envelope's bytes out (docs/formats/envelope.md). Memory is one
 * frame, reused, whatever the stream's length.
 */
import { randomBytes } from 'node:crypto';
import type { ByteSource } from './byte-reader.js';
import { DefaultFrameSize, MaxFrames, encodeHeader, headerDigest, sealFrame } from './format.js';
import type { PublicJwk } from './keys.js';
import { DataKeyBytes, wrapDataKey } from './wrap.js';

export interface SealOptions {
  /** The public key of the one recipient who can open the object. */
  recipient: PublicJwk;
  /**
   * The object's own header, stored in the clear and authenticated by every frame (for a change log, its
   * `.hrl` header). Up to 64 KiB.
   */
  context?: Uint8Array;
  /** Plaintext bytes per frame: a power of two from 4 KiB to 16 MiB (default 1 MiB). */
  frameSize?: number;
}

/**
 * Seals a plaintext stream to a recipient under a fresh data key. Yields the envelope's bytes; the
 * producer may reuse a chunk's memory once the next chunk is asked for (each chunk is copied into the
 * frame buffer). Yielded buffers are never reused.
 */
export async function* sealStream(plaintext: ByteSource, options: SealOptions): AsyncGenerator<Buffer> {
  const frameSize = options.frameSize ?? DefaultFrameSize;
  const dataKey = randomBytes(DataKeyBytes);
  const jwe = await wrapDataKey(dataKey, options.recipient);
  const header = encodeHeader({ frameSize, context: Buffer.from(options.context ?? new Uint8Array(0)), jwe });
  const digest = headerDigest(header);
  yield header;

  const frame = Buffer.allocUnsafe(frameSize);
  let filled = 0;
  let index = 0;
  for await (const chunk of plaintext) {
    let used = 0;
    while (used < chunk.length) {
      if (filled === frameSize) {
        // More plaintext follows the full frame, so it is not the last one.
        if (index + 1 >= MaxFrames) throw new RangeError(`an envelope holds at most ${MaxFrames} frames`);
        yield* sealFrame(dataKey, digest, index++, false, frame);
        filled = 0;
      }
      const n = Math.min(frameSize - filled, chunk.length - used);
      frame.set(chunk.subarray(used, used + n), filled);
      filled += n;
      used += n;
    }
  }
  yield* sealFrame(dataKey, digest, index, true, frame.subarray(0, filled));
  dataKey.fill(0);
}
