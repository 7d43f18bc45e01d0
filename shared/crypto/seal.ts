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
  /**
   * The producer leaves each chunk unchanged until the chunk after the next one is asked for. Then a
   * chunk holding a whole frame is sealed in place, once the next chunk shows whether more follows,
   * instead of being copied into the frame buffer first.
   */
  chunksOutliveNext?: boolean;
}

/**
 * Seals a plaintext stream to a recipient under a fresh data key. Yields the envelope's bytes; the
 * producer may reuse a chunk's memory once the next chunk is asked for (or, with chunksOutliveNext, the
 * one after it). Bytes are copied into one reused frame buffer unless a whole frame can be sealed where
 * it lies. Yielded buffers are never reused.
 */
export async function* sealStream(plaintext: ByteSource, options: SealOptions): AsyncGenerator<Buffer> {
  const frameSize = options.frameSize ?? DefaultFrameSize;
  const dataKey = randomBytes(DataKeyBytes);
  const jwe = await wrapDataKey(dataKey, options.recipient);
  const header = encodeHeader({ frameSize, context: Buffer.from(options.context ?? new Uint8Array(0)), jwe });
  const digest = headerDigest(header);
  yield header;

  const retained = options.chunksOutliveNext ?? false;
  const frame = Buffer.allocUnsafe(frameSize);
  // A whole frame lent by the producer, sealed in place once more plaintext shows it is not the last.
  let held: Buffer | undefined;
  let filled = 0;
  let index = 0;
  const next = (): Buffer[] => {
    // More plaintext follows the full frame, so it is not the last one.
    if (index + 1 >= MaxFrames) throw new RangeError(`an envelope holds at most ${MaxFrames} frames`);
    const body = held ?? frame;
    held = undefined;
    filled = 0;
    return sealFrame(dataKey, digest, index++, false, body);
  };
  for await (const chunk of plaintext) {
    if (chunk.length === 0) {
      // Asking for another chunk would end the loan of a held frame: keep a copy instead.
      if (held !== undefined) frame.set(held);
      filled = held !== undefined ? frameSize : filled;
      held = undefined;
      continue;
    }
    let used = 0;
    while (used < chunk.length) {
      if (held !== undefined || filled === frameSize) yield* next();
      const rest = chunk.length - used;
      // Without the producer's promise, only a frame with more of this chunk behind it is sealed in place.
      if (filled === 0 && (rest > frameSize || (retained && rest === frameSize))) {
        held = Buffer.from(chunk.buffer, chunk.byteOffset + used, frameSize);
        used += frameSize;
        continue;
      }
      const n = Math.min(frameSize - filled, rest);
      frame.set(chunk.subarray(used, used + n), filled);
      filled += n;
      used += n;
    }
  }
  yield* sealFrame(dataKey, digest, index, true, held ?? frame.subarray(0, filled));
  dataKey.fill(0);
}
