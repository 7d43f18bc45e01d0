/**
 * Pull-based reading of exact byte counts from a stream of chunks (a file stream, an object-store body,
 * an opened envelope), holding only what the caller asked for plus one chunk. Parsers use it so that
 * every length is bounded by the caller before anything is read.
 */
export type ByteSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

/** Chunks that arrive in batches (an opened envelope's frames): one pull takes a whole batch. */
export type ByteBatches = AsyncIterable<readonly Uint8Array[]>;

export class ByteReader {
  private readonly iterator: AsyncIterator<Uint8Array | readonly Uint8Array[]> | Iterator<Uint8Array>;
  private readonly chunks: Buffer[] = [];
  /** The source's chunk each entry of chunks is (the rest of), for release. */
  private readonly origins: Uint8Array[] = [];
  /**
   * Index of the first unread entry of chunks and origins. Entries before it are dropped in batches:
   * shifting one at a time moved the whole array each time, which made a source of many tiny chunks
   * quadratic (a 256 KiB stored chunk arriving a byte at a time took minutes).
   */
  private first = 0;
  /** Chunks read to their end, handed back to the source at the next request. */
  private readonly done: Uint8Array[] = [];
  private buffered = 0;
  private ended = false;
  private closed = false;
  /** Bytes handed out so far. */
  position = 0;

  /**
   * With release, a source may reuse its chunks' memory: each chunk is handed to release once every
   * byte of it was read and the caller made its next request (fill, read, readPieces, atEnd), so
   * what a read returned stays valid until the caller asks for more.
   */
  constructor(source: ByteSource, private readonly release?: (chunk: Uint8Array) => void) {
    this.iterator = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]();
  }

  /**
   * A reader over batches of chunks, each batch pulled at once (fewer awaits than chunk by chunk);
   * release as in the constructor, per chunk of a batch.
   */
  static ofBatches(batches: ByteBatches, release?: (chunk: Uint8Array) => void): ByteReader {
    return new ByteReader(batches as unknown as AsyncIterable<Uint8Array>, release);
  }

  /** Pulls chunks until at least n bytes are buffered or the source ended; returns the bytes buffered. */
  async fill(n: number): Promise<number> {
    if (this.release !== undefined) for (const chunk of this.done.splice(0)) this.release(chunk);
    while (this.buffered < n && !this.ended) {
      const next = await this.iterator.next();
      if (next.done) { this.ended = true; break; }
      const value = next.value;
      if (Array.isArray(value)) {
        for (const chunk of value as readonly Uint8Array[]) this.add(chunk);
      } else {
        this.add(value as Uint8Array);
      }
    }
    return this.buffered;
  }

  /** True when every byte has been read. */
  async atEnd(): Promise<boolean> {
    return (await this.fill(1)) === 0;
  }

  /**
   * Up to n bytes as slices of the source's chunks (no copy); fewer only at the end of the source.
   * The slices stay valid as long as the source does not reuse its chunks.
   */
  async readPieces(n: number): Promise<Buffer[]> {
    await this.fill(n);
    const pieces: Buffer[] = [];
    let want = Math.min(n, this.buffered);
    while (want > 0) {
      const head = this.chunks[this.first]!;
      if (head.length <= want) {
        pieces.push(head);
        const origin = this.origins[this.first]!;
        this.first++;
        if (this.release !== undefined) this.done.push(origin);
        want -= head.length;
        this.consumed(head.length);
      } else {
        pieces.push(head.subarray(0, want));
        this.chunks[this.first] = head.subarray(want);
        this.consumed(want);
        want = 0;
      }
    }
    if (this.first >= 64 && this.first * 2 >= this.chunks.length) {
      this.chunks.splice(0, this.first);
      this.origins.splice(0, this.first);
      this.first = 0;
    }
    return pieces;
  }

  /** Up to n bytes as one buffer (copied only when they span chunks); fewer only at the end. */
  async read(n: number): Promise<Buffer> {
    const pieces = await this.readPieces(n);
    return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
  }

  /**
   * Stops reading: ends the source's iterator, which destroys a Node stream and closes its file.
   * Readers call it when they finish or fail, so an abandoned log never holds a descriptor.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ended = true;
    this.chunks.length = 0;
    this.origins.length = 0;
    this.first = 0;
    this.done.length = 0;
    this.buffered = 0;
    await this.iterator.return?.();
  }

  private add(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
    this.origins.push(chunk);
    this.buffered += chunk.length;
  }

  private consumed(n: number): void {
    this.buffered -= n;
    this.position += n;
  }
}
