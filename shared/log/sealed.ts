/**
 * Change logs as they are stored: the plaintext `.hrl` stream sealed in the envelope, with the `.hrl`
 * header as the envelope's context (docs/formats/hrl.md, docs/formats/envelope.md). This is what the
 * agent uploads and the merge worker opens.
 */
import { open, rm } from 'node:fs/promises';
import { giveWholePooled, pooledFileChunks } from '../buffer-pool.js';
import { ByteReader, type ByteSource } from '../crypto/byte-reader.js';
import type { PublicJwk, RecipientKeys } from '../crypto/keys.js';
import { openFrames } from '../crypto/open.js';
import { DefaultFrameSize } from '../crypto/format.js';
import { FrameSealer } from '../crypto/seal.js';
import { ErrCorrupt, ErrTampered, isLifeboatError } from '../errors.js';
import { decodeLogHeader, encodeLogHeader, type LogHeader } from './header.js';
import { LogReader } from './reader.js';
import { DefaultZstdLevel } from './codec.js';
import { completeHeader, encodeInto, type EncodeOptions, type LogHeaderInit, type LogSource } from './writer.js';

export interface WriteLogOptions extends EncodeOptions {
  /** Who can open the log: the tenant's replica key at the hoster, or the agent's own for reverse replication. */
  recipient: PublicJwk;
  /** Envelope frame size (default 1 MiB). */
  frameSize?: number;
  /** Build the sealed log in this buffer while it fits (FrameSealer.create's `into`). */
  into?: Buffer;
}

/**
 * The fields that say which log this is; readLog compares them with what the caller expects. A cycle
 * of null expects a log without one (version 1).
 */
export type LogIdentity = Pick<LogHeader, 'tenant' | 'vm' | 'disk' | 'generation' | 'sequence'> & { cycle: number | null };

export interface ReadLogOptions {
  key: RecipientKeys;
  /** See OpenOptions.recycle: the source's chunks are handed back once opened. */
  recycle?: (chunk: Uint8Array) => void;
  /**
   * What the caller knows the log must be (from the object key and the catalog). A log whose
   * authenticated header says otherwise was replayed under another name: `tampered`.
   */
  expect?: Partial<LogIdentity>;
}

/** A sealed log being written: its header, its sealed bytes, and where to hand them back. */
export interface WrittenLog {
  header: LogHeader;
  /** The sealed bytes in order; each buffer is the caller's until it is released (if ever). */
  sealed: AsyncGenerator<Buffer>;
  /**
   * Hands back a buffer of `sealed` once every byte of it was written or copied: a later frame is
   * built in its memory instead of a fresh buffer (FrameSealer.release). Optional, but a writer that
   * releases allocates a few frames for a log of any size, and spares a large process the garbage
   * collections that megabytes of fresh buffers bring.
   */
  release(sealed: Uint8Array): void;
}

/**
 * Writes a sealed log: its complete header, and the sealed bytes as a stream. The records are written
 * straight into the envelope's frame buffer and each frame is sealed where it lies.
 */
export function writeLog(init: LogHeaderInit, source: LogSource, options: WriteLogOptions): WrittenLog {
  const header = completeHeader(init);
  const context = encodeLogHeader(header);
  let sealer: FrameSealer | undefined;
  async function* sealed(): AsyncGenerator<Buffer> {
    sealer = await FrameSealer.create({ recipient: options.recipient, context, frameSize: options.frameSize ?? DefaultFrameSize, into: options.into });
    yield* encodeInto(header, source, sealer, options.level ?? DefaultZstdLevel);
  }
  return { header, sealed: sealed(), release: (b) => sealer?.release(b) };
}

/**
 * writeLog into a new file, mode 0600. Refuses to overwrite a file (EEXIST); if writing fails, the
 * partial file is removed, so a failed write leaves nothing behind.
 */
export async function writeLogFile(path: string, init: LogHeaderInit, source: LogSource, options: WriteLogOptions): Promise<LogHeader> {
  const { header, sealed, release } = writeLog(init, source, options);
  const out = await open(path, 'wx', 0o600);
  try {
    for await (const bytes of sealed) {
      for (let at = 0; at < bytes.length;) at += (await out.write(bytes, at, bytes.length - at)).bytesWritten;
      release(bytes);
    }
    await out.close();
  } catch (err) {
    await out.close().catch(() => undefined);
    await rm(path, { force: true });
    throw err;
  }
  return header;
}

/**
 * Opens a sealed log: verifies the envelope's first frame, checks the authenticated header against
 * `expect`, and returns a reader whose items are verified frame by frame. The log is whole and correct
 * only when the items ended without error (reader.trailer is set); appliers stage until then.
 */
export async function readLog(sealed: ByteSource, options: ReadLogOptions): Promise<LogReader> {
  const opened = await openFrames(sealed, { key: options.key, recycle: options.recycle });
  try {
    checkIdentity(opened.context, options.expect ?? {});
  } catch (err) {
    await opened.close();
    throw err;
  }
  // The plaintext reader takes a whole verified frame per pull, and hands each frame's memory back once
  // every byte of it was read and the next item asked for (items' data is valid until then).
  const reader = await LogReader.open(ByteReader.ofBatches(opened.frames, opened.release));
  if (!reader.headerBytes.equals(opened.context)) {
    await opened.close();
    throw ErrCorrupt('the log header differs from the header it was sealed with');
  }
  return reader;
}

/** The authenticated header must be a log header naming what the caller expects. */
function checkIdentity(context: Buffer, expect: Partial<LogIdentity>): void {
  let claimed: LogHeader;
  try {
    claimed = decodeLogHeader(context);
  } catch (err) {
    if (isLifeboatError(err)) throw ErrCorrupt(`not a change log: the sealed object's header is not a log header (${err.message})`, err);
    throw err;
  }
  for (const [field, want] of Object.entries(expect) as [keyof LogIdentity, string | number | null | undefined][]) {
    const got = claimed[field] ?? null;
    if (want !== undefined && got !== want) {
      throw ErrTampered(`log is ${field} ${got ?? 'none'}, expected ${field} ${want ?? 'none'}: replayed under another name`);
    }
  }
}

/** readLog from a file, read in 1 MiB pieces into a few buffers that are recycled as they are opened. */
export async function readLogFile(path: string, options: ReadLogOptions): Promise<LogReader> {
  // Read into a few pooled buffers, each handed back once opened.
  return readLog(pooledFileChunks(await open(path, 'r'), FileChunkBytes), { ...options, recycle: giveWholePooled });
}

const FileChunkBytes = 1 << 20;
