/**
 * Megabyte-sized buffers shared by every sealer, opener and file reader of one thread (each worker
 * thread has its own pool): envelope frames, and file chunks read for the log reader or an object
 * store body. A buffer leaves the pool with a frame or chunk and comes back when its holder releases
 * it; a log or object of any size, and any number of them one after another, then goes through a
 * handful of buffers. Fresh megabyte buffers are what this avoids: each one counts towards V8's next full
 * garbage collection, and in a process with a service's heap, or a sealing thread that seals one log
 * per chunk, those collections cost more than the AES.
 */
import type { FileHandle } from 'node:fs/promises';

/** Buffers kept per size; more are left to the garbage collector. */
const MaxFreePerSize = 8;
const free = new Map<number, Buffer[]>();
/** Every buffer this pool made: nothing else is ever taken in. */
const made = new WeakSet<ArrayBufferLike>();

/** A buffer of exactly bytes bytes (contents undefined), from the pool or fresh. */
export function takePooled(bytes: number): Buffer {
  const reused = free.get(bytes)?.pop();
  if (reused !== undefined) return reused;
  const b = Buffer.allocUnsafeSlow(bytes);
  made.add(b.buffer);
  return b;
}

/**
 * Hands back the buffer under a piece of a buffer taken here, once nothing reads or writes it any more.
 * Anything the pool did not make is ignored, and so is a buffer already in the pool.
 */
export function givePooled(piece: Uint8Array): void {
  const buffer = piece.buffer;
  if (!made.has(buffer)) return;
  const bytes = buffer.byteLength;
  let list = free.get(bytes);
  if (list === undefined) free.set(bytes, (list = []));
  if (list.length >= MaxFreePerSize || list.some((b) => b.buffer === buffer)) return;
  list.push(Buffer.from(buffer, 0, bytes));
}

/** True when piece lies in a buffer this pool made (its memory is nobody else's while taken). */
export function isPooled(piece: Uint8Array): boolean {
  return made.has(piece.buffer);
}

/**
 * Takes back into the pool's keeping a buffer that went to another thread and came back (a
 * transferred ArrayBuffer arrives as a new object): the view at [offset, offset + length) of it,
 * which givePooled then accepts. Only for memory that left as a pooled buffer.
 */
export function adoptPooled(buffer: ArrayBuffer, offset: number, length: number): Buffer {
  made.add(buffer);
  return Buffer.from(buffer, offset, length);
}

/**
 * givePooled for a consumer that cannot know whether the stream it read was cut into pieces on the way
 * (an object store body through wrappers): only a piece that is a whole pool buffer comes back, never
 * the first slice of a buffer whose other slices may still be unread.
 */
export function giveWholePooled(piece: Uint8Array): void {
  if (piece.byteOffset === 0 && piece.byteLength === piece.buffer.byteLength) givePooled(piece);
}

/**
 * A file's bytes from position 0 in order, read into chunkBytes-long buffers of the pool (the last
 * chunk may be shorter). A consumer that hands each chunk back with giveWholePooled once it is done
 * with it reads a file of any size through a few buffers. Ending the iteration, or a failure, closes
 * the file.
 */
export async function* pooledFileChunks(handle: FileHandle, chunkBytes: number): AsyncGenerator<Buffer> {
  try {
    for (let position = 0; ;) {
      const buf = takePooled(chunkBytes);
      const { bytesRead } = await handle.read(buf, 0, chunkBytes, position);
      if (bytesRead === 0) return;
      position += bytesRead;
      yield bytesRead === chunkBytes ? buf : buf.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}
