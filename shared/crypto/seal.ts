/**
 * Sealing: a plaintext stream in, the envelope's bytes out (docs/formats/envelope.md). Memory is one
 * frame, reused, whatever the stream's length.
 */
import { randomBytes } from 'node:crypto';
import type { ByteSource } from './byte-reader.js';
import { givePooled, takePooled } from '../buffer-pool.js';
import { DefaultFrameSize, MaxFrames, TagBytes, encodeHeader, headerDigest, sealFrame, sealFrameInPlace } from './format.js';
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

/** A buffer filled in place: reserve up to max bytes, fill a prefix of them, commit what was filled. */
export interface ReserveCommit {
  reserve(max: number): Buffer;
  commit(n: number): void;
}

/** Copies bytes into a reserve/commit buffer, as many reservations as it takes. */
export function copyInto(sink: ReserveCommit, bytes: Uint8Array): void {
  for (let at = 0; at < bytes.length;) {
    const slice = sink.reserve(bytes.length - at);
    slice.set(bytes.subarray(at, at + slice.length));
    sink.commit(slice.length);
    at += slice.length;
  }
}

/**
 * Sealing for a writer that builds its plaintext in place: it writes straight into the sealer's frame
 * buffer (reserve, fill, commit; or push to copy), and each full frame is sealed where it lies, its tag
 * written right after it, as soon as more plaintext shows it is not the last; so no byte is copied
 * between the writer's records and what gets uploaded. The envelope's bytes (header, then each frame as
 * ciphertext and tag in one buffer) are taken with drain(). A sealed frame's buffer leaves the sealer
 * with it; the next frame is built in one handed back through release() or, failing that, a fresh one.
 * Memory is one frame plus what was not drained or released yet.
 */
export class FrameSealer {
  private frame: Buffer;
  private filled = 0;
  private index = 0;
  private reserved = 0;
  private finished = false;
  private ready: Buffer[];
  /** With `into`: where the next frame starts in it (the envelope so far lies before). */
  private at = 0;

  private constructor(private readonly dataKey: Buffer, private readonly digest: Buffer, header: Buffer, readonly frameSize: number, private readonly into?: Buffer) {
    if (into !== undefined && into.length >= header.length) {
      header.copy(into);
      this.ready = [into.subarray(0, header.length)];
      this.at = header.length;
    } else {
      this.ready = [header];
      this.into = undefined;
    }
    this.frame = this.room();
  }

  /**
   * A sealer under a fresh data key; its header is the first thing drained. With `into`, the envelope
   * is built in that buffer from its start (header, then each frame where it will lie), as long as
   * it fits; drained pieces then are slices of it, in order and contiguous, and a caller that finds
   * one at its place has nothing to copy. Frames that do not fit are built in the thread's pool.
   */
  static async create(options: SealOptions & { into?: Buffer }): Promise<FrameSealer> {
    const frameSize = options.frameSize ?? DefaultFrameSize;
    const dataKey = randomBytes(DataKeyBytes);
    const jwe = await wrapDataKey(dataKey, options.recipient);
    const header = encodeHeader({ frameSize, context: Buffer.from(options.context ?? new Uint8Array(0)), jwe });
    return new FrameSealer(dataKey, headerDigest(header), header, frameSize, options.into);
  }

  /** Memory for the next frame (a frame of plaintext and room for its tag): in `into` while it fits, else pooled. */
  private room(): Buffer {
    const bytes = this.frameSize + TagBytes;
    if (this.into !== undefined && this.at + bytes <= this.into.length) return this.into.subarray(this.at, this.at + bytes);
    return takePooled(bytes);
  }

  /**
   * Up to max (at least 1) writable bytes at the end of the plaintext, in the frame buffer; the caller
   * fills them and calls commit. Reserving promises plaintext: a full frame is sealed first, as not the
   * last.
   */
  reserve(max: number): Buffer {
    if (this.finished) throw new Error('the sealer is finished');
    if (!(max >= 1)) throw new RangeError(`reserve needs at least 1 byte, not ${max}`);
    if (this.filled === this.frameSize) this.seal(false);
    this.reserved = Math.min(max, this.frameSize - this.filled);
    return this.frame.subarray(this.filled, this.filled + this.reserved);
  }

  /** The first n bytes of the reserved slice now hold plaintext. */
  commit(n: number): void {
    if (n > this.reserved || n < 0) throw new RangeError(`commit of ${n} bytes exceeds the ${this.reserved} reserved`);
    this.filled += n;
    this.reserved = 0;
  }

  /** Appends a copy of bytes to the plaintext. */
  push(bytes: Uint8Array): void {
    copyInto(this, bytes);
  }

  /** The envelope's bytes sealed since the last call, in order. */
  drain(): Buffer[] {
    const out = this.ready;
    this.ready = [];
    return out;
  }

  /**
   * Hands back a drained buffer once every byte of it was written or copied: a later frame (of this
   * sealer or another on this thread) is built in its memory (shared/buffer-pool.ts). Optional; the header is
   * ignored. Release each buffer once.
   */
  release(sealed: Uint8Array): void {
    givePooled(sealed);
  }

  /** Seals the last frame (what is in the frame buffer, possibly nothing) and forgets the data key. */
  finish(): void {
    if (this.finished) return;
    this.seal(true);
    this.finished = true;
    this.dataKey.fill(0);
  }

  private seal(last: boolean): void {
    if (!last && this.index + 1 >= MaxFrames) throw new RangeError(`an envelope holds at most ${MaxFrames} frames`);
    const frame = this.frame;
    sealFrameInPlace(this.dataKey, this.digest, this.index++, last, frame, this.filled);
    this.ready.push(frame.subarray(0, this.filled + TagBytes));
    this.at += this.filled + TagBytes;
    this.filled = 0;
    if (!last) this.frame = this.room();
  }
}
