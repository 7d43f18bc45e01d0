/**
 * Opening: the envelope's bytes in, verified plaintext out (docs/formats/envelope.md, "Reading"). Each
 * frame's plaintext is released only after its tag verified; memory is one frame plus the bytes that show
 * whether another follows.
 */
import { ErrTampered } from '../errors.js';
import { ByteReader, type ByteSource } from './byte-reader.js';
import { givePooled, takePooled } from '../buffer-pool.js';
import { FixedHeaderBytes, MaxFrames, TagBytes, headerDigest, openFrame, openFrameAsync, parseFixedHeader } from './format.js';
import type { RecipientKeys } from './keys.js';
import { unwrapDataKey } from './wrap.js';

export interface OpenOptions {
  /** The recipient's private key. */
  key: RecipientKeys;
  /**
   * Called with each chunk of the sealed source once it has been read through and opened: the source
   * may reuse that chunk's memory for a later one (a file read into a few recycled buffers). The
   * plaintext never points into the source's chunks.
   */
  recycle?: (chunk: Uint8Array) => void;
}

export interface OpenedStream {
  /** The object's header (context), authenticated: frame 0 verified before openStream returned. */
  context: Buffer;
  frameSize: number;
  /**
   * The plaintext, frame by frame, each verified before it is yielded. Ends without error only when
   * the last frame verified; until then nothing done with earlier frames may be treated as final.
   * Throws LifeboatError('tampered') at the first frame that fails.
   */
  plaintext: AsyncIterable<Buffer>;
  /** Stops reading and releases the source (a file stream is destroyed); idempotent. */
  close(): Promise<void>;
}

/** An opened stream whose plaintext comes frame by frame, as the pieces of each verified frame. */
export interface OpenedFrames extends Omit<OpenedStream, 'plaintext'> {
  /** Each frame's plaintext pieces, verified before they are yielded; same rules as plaintext. */
  frames: AsyncIterable<Buffer[]>;
  /**
   * Hands a piece of a yielded frame back once the caller is done with every byte of it: a later frame
   * is opened into its memory instead of a fresh buffer. Optional: pieces never released are simply
   * garbage. Fresh buffers per frame cost a process with a large heap more in garbage collection
   * (each megabyte of them counts towards V8's next full collection) than the AES itself.
   */
  release(piece: Uint8Array): void;
}

/**
 * Opens a sealed stream: reads the header, unwraps the data key, verifies frame 0 (so the context is
 * authenticated) and returns the rest as a lazy stream. Not an envelope: `corrupt`; unknown version:
 * `unsupported`; anything altered, truncated, appended or sealed to another key: `tampered`.
 */
export async function openStream(sealed: ByteSource, options: OpenOptions): Promise<OpenedStream> {
  const { frames, ...opened } = await openFrames(sealed, options);
  async function* plaintext(): AsyncGenerator<Buffer> {
    for await (const frame of frames) yield* frame;
  }
  return { ...opened, plaintext: plaintext() };
}

/**
 * openStream with the plaintext as whole frames (each frame's pieces at once), for consumers that
 * take a frame at a time (a ByteReader over batches): one step per frame instead of one per piece.
 */
export async function openFrames(sealed: ByteSource, options: OpenOptions): Promise<OpenedFrames> {
  const reader = new ByteReader(sealed, options.recycle);
  let frames: FrameOpener;
  let first: Buffer[] | undefined;
  let context: Buffer;
  let frameSize: number;
  try {
    // A copy: with recycling, what a read returns is valid only until the next read.
    const fixed = Buffer.from(await reader.read(FixedHeaderBytes));
    const lengths = parseFixedHeader(fixed);
    frameSize = lengths.frameSize;
    const rest = await reader.read(lengths.contextLength + lengths.jweLength);
    if (rest.length < lengths.contextLength + lengths.jweLength) throw ErrTampered(`truncated: the envelope header ends after ${FixedHeaderBytes + rest.length} bytes`);
    context = Buffer.from(rest.subarray(0, lengths.contextLength));
    const dataKey = await unwrapDataKey(rest.subarray(lengths.contextLength).toString('latin1'), options.key);
    frames = new FrameOpener(reader, dataKey, headerDigest(Buffer.concat([fixed, rest])), frameSize);
    first = await frames.next();
  } catch (err) {
    await reader.close();
    throw err;
  }
  async function* all(): AsyncGenerator<Buffer[]> {
    try {
      let frame: Buffer[] | undefined = first;
      while (frame !== undefined) {
        yield frame;
        frame = await frames.next();
      }
    } finally {
      await reader.close();
    }
  }
  return { context, frameSize, frames: all(), close: () => reader.close(), release: (piece) => frames.release(piece) };
}

/**
 * Reads and verifies frames in order; undefined after the last one. One frame ahead: when frame i is
 * handed out, frame i+1's bytes are already being read and its AES-GCM runs on libuv's thread pool
 * (openFrameAsync) while the caller works on frame i. Frame i+1's source pieces are read only after
 * frame i verified, and stay unreleased (the ByteReader recycles a chunk at the next read) until
 * frame i+1 verified, so nothing under a running decryption is reused.
 */
class FrameOpener {
  private index = 0;
  private done = false;
  /** The next frame, being read and opened. */
  private ahead: Promise<Buffer[] | undefined> | undefined;

  constructor(private readonly reader: ByteReader, private readonly key: Buffer, private readonly digest: Buffer, private readonly frameSize: number) {}

  async next(): Promise<Buffer[] | undefined> {
    const frame = await (this.ahead ?? this.open());
    this.ahead = undefined;
    if (frame !== undefined && !this.done) {
      const ahead = this.open();
      ahead.catch(() => undefined); // awaited by the next call; never left unhandled
      this.ahead = ahead;
    }
    return frame;
  }

  private async open(): Promise<Buffer[] | undefined> {
    if (this.done) return undefined;
    const full = this.frameSize + TagBytes;
    const available = await this.reader.fill(full + 1);
    const last = available <= full;
    const length = last ? available : full;
    const i = this.index;
    if (length < TagBytes) {
      throw ErrTampered(length === 0 && i === 0 ? 'truncated: the object has no frames' : `truncated inside frame ${i}`);
    }
    if (i >= MaxFrames) throw ErrTampered(`more than ${MaxFrames} frames`);
    // Body and tag in one request: with recycling, what a read returns is valid until the next one.
    const { body, tag } = splitTag(await this.reader.readPieces(length));
    const into = takePooled(this.frameSize);
    const plain = await openFrameAsync(this.key, this.digest, i, last, body, tag, into);
    if (plain === undefined) throw this.diagnose(i, last, body, tag);
    this.index++;
    if (last) {
      this.done = true;
      this.key.fill(0);
    }
    return plain;
  }

  /** A piece of a frame this opener yielded, done with: its buffer goes back to the thread's pool. */
  release(piece: Uint8Array): void {
    givePooled(piece);
  }

  /** Tells truncation and appended data from other damage by trying the frame with the other flag. */
  private diagnose(i: number, last: boolean, body: Buffer[], tag: Buffer): Error {
    if (openFrame(this.key, this.digest, i, !last, body, tag) !== undefined) {
      return last
        ? ErrTampered(`truncated after frame ${i}: it was sealed as a frame with more to follow`)
        : ErrTampered(`data after the last frame: frame ${i} was sealed as the last`);
    }
    return ErrTampered(`frame ${i} failed authentication: the object was altered, its frames reordered or dropped, its header changed, or it was sealed with another key`);
  }
}

/** The pieces of a frame as its body pieces and its 16-byte tag (copied only when it spans pieces). */
function splitTag(pieces: Buffer[]): { body: Buffer[]; tag: Buffer } {
  const last = pieces[pieces.length - 1]!;
  if (last.length >= TagBytes) {
    const body = pieces.slice(0, -1);
    if (last.length > TagBytes) body.push(last.subarray(0, last.length - TagBytes));
    return { body, tag: last.subarray(last.length - TagBytes) };
  }
  const tag = Buffer.allocUnsafe(TagBytes);
  let need = TagBytes;
  let i = pieces.length - 1;
  for (; need > 0; i--) {
    const p = pieces[i]!;
    const n = Math.min(need, p.length);
    p.copy(tag, need - n, p.length - n);
    need -= n;
    if (n < p.length) {
      return { body: [...pieces.slice(0, i), p.subarray(0, p.length - n)], tag };
    }
  }
  return { body: pieces.slice(0, i + 1), tag };
}
