/**
 * The file adapter: objects are files under a root directory, key segments are path segments.
 * A put writes a temporary file (".tmp-…", never listed) in the object's directory, fsyncs it,
 * renames it over the key and fsyncs the directory, so readers see the old object or the whole new
 * one and a crash leaves at most a stray temporary file. The body is written through to the device
 * (O_DIRECT, shared/direct-io.ts) in 1 MiB pieces staged in page-aligned buffers, its unaligned
 * tail the ordinary way: an object is written once and read, if at all, later and once (a merge,
 * an import), so copying it into the page cache would only cost CPU. Grants need a service route
 * (file-grant.ts).
 */
import { randomUUID } from 'node:crypto';
import type { Stats } from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable, addAbortSignal } from 'node:stream';
import type { FileHandle } from 'node:fs/promises';
import { givePooled, takePooled } from '../buffer-pool.js';
import { AlignedPool, DirectAlign, openThrough, writeThrough } from '../direct-io.js';
import { ErrInvalidArgument, ErrUnsupported, LifeboatError } from '../errors.js';
import { checkedStream } from './body.js';
import { ErrRangeNotSatisfiable, storeError } from './errors.js';
import type { FileGrantConfig } from './file-grant.js';
import { signFileGrant } from './file-grant.js';
import { assertValidKey, assertValidPrefix } from './keys.js';
import { checkRange } from './checks.js';
import type { Body, GetOptions, Grant, GrantOptions, ListEntry, ObjectInfo, ObjectStore, PutOptions } from './types.js';

const TempPrefix = '.tmp-';

export interface FileStoreOptions {
  /** Needed for grant(): where the service serves file grants, and the HMAC key it verifies with. */
  grant?: FileGrantConfig;
}

export class FileStore implements ObjectStore {
  readonly location: string;
  private readonly root: string;

  constructor(root: string, private readonly options: FileStoreOptions = {}) {
    this.root = resolve(root);
    this.location = `file://${this.root}`;
  }

  private pathOf(key: string): string {
    assertValidKey(key);
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<void> {
    const path = this.pathOf(key);
    const dir = dirname(path);
    const temp = join(dir, `${TempPrefix}${randomUUID()}`);
    try {
      options.signal?.throwIfAborted();
      const source = checkedStream(body, options.contentLength, options.signal);
      const created = await mkdir(dir, { recursive: true });
      const handle = await open(temp, 'wx', 0o600);
      const writer = new BodyWriter(handle, options.contentLength);
      try {
        for await (const chunk of source) {
          options.signal?.throwIfAborted();
          await writer.write(chunk as Buffer);
        }
        options.signal?.throwIfAborted();
        await writer.finish();
        await handle.sync();
      } finally {
        await writer.close();
        await handle.close();
      }
      await rename(temp, path);
      await syncDirs(dir, created === undefined ? dir : dirname(created));
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw fileError(`put ${key}`, err);
    }
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const path = this.pathOf(key);
    options.signal?.throwIfAborted();
    const handle = await open(path, 'r').catch((err: unknown) => { throw readError(`get ${key}`, err); });
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw new LifeboatError('not_found', `get ${key}: no such object`);
      const range = checkRange(options.range);
      // 1 MiB reads: a merge streams whole logs, and each read is a round trip through the thread pool.
      if (range === undefined) return wholeFile(handle, info.size, options.signal);
      if (range.offset >= info.size) throw ErrRangeNotSatisfiable(key, range.offset, info.size);
      const end = Math.min(info.size, range.offset + range.length) - 1;
      return handle.createReadStream({ start: range.offset, end, signal: options.signal });
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async head(key: string): Promise<ObjectInfo> {
    const info = await stat(this.pathOf(key)).catch((err: unknown) => { throw readError(`head ${key}`, err); });
    if (!info.isFile()) throw new LifeboatError('not_found', `head ${key}: no such object`);
    return { size: info.size, etag: etagOf(info), lastModified: info.mtime };
  }

  async *list(prefix: string): AsyncIterable<ListEntry> {
    assertValidPrefix(prefix);
    const cut = prefix.lastIndexOf('/');
    const base = cut < 0 ? '' : prefix.slice(0, cut + 1);
    yield* this.walk(base, prefix);
  }

  /** Depth-first in byte order of keys: a directory sorts as its name followed by '/'. */
  private async *walk(dirKey: string, prefix: string): AsyncIterable<ListEntry> {
    const dir = join(this.root, ...dirKey.split('/').filter(Boolean));
    const entries = await readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [];
      throw fileError(`list ${prefix}`, err);
    });
    const named = entries
      .filter((e) => !e.name.startsWith('.') && (e.isFile() || e.isDirectory()))
      .map((e) => ({ key: `${dirKey}${e.name}${e.isDirectory() ? '/' : ''}`, isDir: e.isDirectory() }))
      .filter((e) => e.key.startsWith(prefix) || (e.isDir && prefix.startsWith(e.key)))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const entry of named) {
      if (entry.isDir) {
        yield* this.walk(entry.key, prefix);
        continue;
      }
      const info = await stat(join(this.root, ...entry.key.split('/'))).catch(() => undefined);
      if (info?.isFile()) yield { key: entry.key, size: info.size, lastModified: info.mtime };
    }
  }

  async delete(key: string): Promise<void> {
    await unlink(this.pathOf(key)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT' && err.code !== 'ENOTDIR') throw fileError(`delete ${key}`, err);
    });
  }

  async grant(key: string, options: GrantOptions): Promise<Grant> {
    assertValidKey(key);
    if (this.options.grant === undefined) throw ErrUnsupported(`grant ${key}: this file store has no grant route configured (grantBaseUrl and signing key)`);
    return signFileGrant(this.options.grant, key, options);
  }

  async close(): Promise<void> {}
}

/** Size of the page-aligned buffers puts write through from and gets read through into. */
const AlignedBytes = 1 << 20;
/**
 * The aligned buffers of every put and get of the thread: two per put in flight (one written, one
 * filling), one per get read in flight. Each goes back as soon as its write or copy is done.
 */
const pages = new AlignedPool(AlignedBytes, 8, 4);
/** A tail at least this long is written through even when the object never filled a stage. */
const MinThroughBytes = 64 << 10;

/**
 * Writes a put's body into its temporary file: gathered into page-aligned staging buffers, each
 * full one written through (O_DIRECT) while the next fills, at most one such write in flight; the
 * last stage's aligned part through as well and the tail after it the ordinary way. Where write-through
 * is unavailable or refused, every byte goes the ordinary way.
 */
class BodyWriter {
  /** The write-through handle: undefined until first needed, null when unavailable. */
  private direct: FileHandle | null | undefined;
  private stage: Buffer | null = null;
  private fill = 0;
  /** File offset of stage[0]: everything before it is written or being written. */
  private pos = 0;
  private inflight: Promise<void> | null = null;

  /** A body known to be small is written the ordinary way from the start, without a staging buffer. */
  constructor(private readonly handle: FileHandle, contentLength?: number) {
    if (contentLength !== undefined && contentLength < MinThroughBytes) this.direct = null;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.direct === null && this.stage === null) {
      await this.ordinary(chunk, this.pos);
      this.pos += chunk.length;
      return;
    }
    for (let off = 0; off < chunk.length;) {
      this.stage ??= pages.take();
      const n = chunk.copy(this.stage, this.fill, off);
      off += n;
      this.fill += n;
      if (this.fill === this.stage.length) await this.flush(this.stage.length);
    }
  }

  /** Writes the rest and waits for every write; the caller then syncs. */
  async finish(): Promise<void> {
    if (this.stage !== null && this.fill > 0) {
      const through = Math.floor(this.fill / DirectAlign) * DirectAlign;
      // The tail first: flush() hands the stage back to the pool once its write is done.
      await this.ordinary(this.stage.subarray(through, this.fill), this.pos + through);
      if (through >= MinThroughBytes || (through > 0 && this.direct)) await this.flush(through, true);
      else await this.ordinary(this.stage.subarray(0, through), this.pos);
    }
    await this.inflight;
  }

  /** Hands stage[0, length) to a write (through when it can), after the one before it finished. */
  private async flush(length: number, last = false): Promise<void> {
    const buf = this.stage!;
    const at = this.pos;
    this.stage = null;
    this.fill = 0;
    this.pos += length;
    await this.inflight;
    if (this.direct === undefined) this.direct = await openThrough(this.handle, 'write');
    const data = buf.subarray(0, length);
    const write = (async () => {
      try {
        if (this.direct && pages.aligned(buf)) {
          if (await writeThrough(this.direct, data, at)) return;
          await this.dropDirect(); // refused as unaligned: the ordinary way from now on
        }
        await this.ordinary(data, at);
      } finally {
        pages.give(buf);
      }
    })();
    write.catch(() => undefined); // awaited by the next flush or finish; never left unhandled
    this.inflight = write;
    if (last) await write;
  }

  private async ordinary(data: Buffer, at: number): Promise<void> {
    for (let done = 0; done < data.length;) done += (await this.handle.write(data, done, data.length - done, at + done)).bytesWritten;
  }

  private async dropDirect(): Promise<void> {
    const direct = this.direct;
    this.direct = null;
    await direct?.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.inflight?.catch(() => undefined);
    if (this.stage) pages.give(this.stage);
    this.stage = null;
    await this.dropDirect();
  }
}

/** fsyncs dir and each parent up to and including top, so new directories survive a crash too. */
async function syncDirs(dir: string, top: string): Promise<void> {
  for (let d = dir; ; d = dirname(d)) {
    const h = await open(d, 'r');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
    if (d === top || dirname(d) === d) return;
  }
}

function etagOf(info: Stats): string {
  return `${info.ino.toString(16)}-${info.size.toString(16)}-${Math.round(info.mtimeMs * 1000).toString(16)}`;
}

/** For reads, a path through a file (ENOTDIR) is just a missing object. */
function readError(op: string, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return new LifeboatError('not_found', `${op}: no such object`, { cause: err });
  return fileError(op, err);
}

/** For writes, path clashes (a key used as a directory, or under a key that is a file) are conflicts. */
function fileError(op: string, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EISDIR' || code === 'ENOTDIR' || code === 'EEXIST' || code === 'ENOTEMPTY') {
    return new LifeboatError('conflict', `${op}: the key clashes with another key used as a directory`, { cause: err });
  }
  if (code === 'ENAMETOOLONG') return ErrInvalidArgument(`${op}: key too long for this filesystem`, err);
  return storeError(op, err);
}

const ReadChunkBytes = AlignedBytes;
/** Reads of a whole object in flight ahead of its consumer. */
const ReadAhead = 3;

/**
 * A whole file as a byte stream of 1 MiB chunks, a few reads ahead of the consumer. Read through
 * the device (O_DIRECT, as puts are written) into page-aligned buffers of this module, then copied
 * into buffers of the thread's pool (shared/buffer-pool.ts): a copy costs far less than page-cache
 * memory faulted in for an object read once, and the aligned buffers never leave, so no consumer
 * can use them up. The ordinary way where that cannot be had. A consumer that hands each chunk back
 * once done with it (`recycleBodyChunk`, as the merge does) reads an object of any size through a
 * few buffers; any other consumer gets fresh ones. The file is closed when the stream ends, fails
 * or is destroyed.
 */
function wholeFile(handle: FileHandle, size: number, signal: AbortSignal | undefined): Readable {
  const stream = Readable.from(throughChunks(handle, size), { objectMode: false });
  return signal ? addAbortSignal(signal, stream) : stream;
}

async function* throughChunks(handle: FileHandle, size: number): AsyncGenerator<Buffer> {
  const through = size >= ReadChunkBytes ? await openThrough(handle, 'read') : null;
  let direct = through;
  const readAt = async (at: number): Promise<Buffer> => {
    const want = Math.min(ReadChunkBytes, size - at);
    const chunk = takePooled(ReadChunkBytes);
    let got = 0;
    try {
      const page = direct ? pages.take() : undefined;
      if (page !== undefined) {
        try {
          // O_DIRECT wants whole pages: ask for the whole buffer, the end of the file cuts it short.
          if (direct && pages.aligned(page)) got = (await direct.read(page, 0, ReadChunkBytes, at)).bytesRead;
          page.copy(chunk, 0, 0, got);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
          direct = null; // refused as unaligned: the ordinary way from now on
        } finally {
          pages.give(page);
        }
      }
      while (got < want) {
        const { bytesRead } = await handle.read(chunk, got, want - got, at + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
    } catch (err) {
      givePooled(chunk);
      throw err;
    }
    if (got !== want) {
      givePooled(chunk);
      throw new LifeboatError('io', `read of ${want} bytes at ${at} got ${got}: the object changed while it was read`);
    }
    return got === ReadChunkBytes ? chunk : chunk.subarray(0, got);
  };
  const pending: Promise<Buffer>[] = [];
  let next = 0;
  const issue = () => {
    while (pending.length < ReadAhead && next < size) {
      const p = readAt(next);
      p.catch(() => undefined); // awaited in order below; never left unhandled
      pending.push(p);
      next += ReadChunkBytes;
    }
  };
  try {
    issue();
    while (pending.length > 0) {
      const chunk = await pending.shift()!;
      issue();
      yield chunk;
    }
  } finally {
    // Reads still in flight (the consumer stopped early or one failed) finish before the file closes.
    for (const p of pending) await p.then(givePooled, () => undefined);
    await through?.close().catch(() => undefined);
    await handle.close();
  }
}
