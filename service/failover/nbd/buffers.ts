/**
 * Memory for READ replies: slabs in power-of-two sizes (MinSlabBytes to MaxSlabBytes) reused across
 * requests and connections, and a per connection byte budget so one connection holds at most
 * ConnectionBufferBytes of them (a client that stops reading its replies stalls itself, not the
 * other connections). A slab goes back when the socket has taken the bytes written from it (the
 * write's callback), never before.
 */

/** Smallest slab: a 4 KiB read of a booting guest does not hold a megabyte. */
export const MinSlabBytes = 64 * 1024;
/** Largest slab: a run of coalesced READs up to this size is read into one buffer by one read. */
export const MaxSlabBytes = 4 * 1024 * 1024;
/** Bytes of free slabs kept for reuse; beyond it they are left to the garbage collector. */
const MaxFreeBytes = 64 * 1024 * 1024;

const free = new Map<number, Buffer[]>();
let freeBytes = 0;

/** The slab size that holds bytes (1 ≤ bytes ≤ MaxSlabBytes): the next power of two, at least MinSlabBytes. */
export function slabSize(bytes: number): number {
  if (bytes > MaxSlabBytes) throw new RangeError(`a slab of ${bytes} bytes is larger than ${MaxSlabBytes}`);
  let size = MinSlabBytes;
  while (size < bytes) size *= 2;
  return size;
}

/** Total slab bytes that hold dataBytes packed: whole MaxSlabBytes slabs, then one for the rest. */
export function slabBytesFor(dataBytes: number): number {
  const whole = Math.floor(dataBytes / MaxSlabBytes) * MaxSlabBytes;
  const rest = dataBytes - whole;
  return whole + (rest > 0 ? slabSize(rest) : 0);
}

/** A slab of slabSize(bytes) bytes; its contents are whatever it last held. */
export function takeSlab(bytes: number): Buffer {
  const size = slabSize(bytes);
  const slab = free.get(size)?.pop();
  if (!slab) return Buffer.allocUnsafeSlow(size);
  freeBytes -= size;
  return slab;
}

export function giveSlab(slab: Buffer): void {
  const size = slab.length;
  if (freeBytes + size > MaxFreeBytes || size !== slabSize(size)) return;
  let list = free.get(size);
  if (!list) free.set(size, (list = []));
  list.push(slab);
  freeBytes += size;
}

/** A counting semaphore over bytes, first come first served (a large request is not starved). */
export class ByteBudget {
  private used = 0;
  private readonly waiting: Array<{ bytes: number; go: () => void }> = [];

  constructor(readonly limit: number) {}

  /** Resolves once bytes (at most limit) are reserved; undefined (nothing to wait for) when they were at once. */
  acquire(bytes: number): Promise<void> | undefined {
    if (bytes > this.limit) throw new RangeError(`${bytes} bytes asked of a ${this.limit}-byte budget`);
    const n = bytes;
    if (this.waiting.length === 0 && this.used + n <= this.limit) {
      this.used += n;
      return undefined;
    }
    return new Promise((go) => this.waiting.push({ bytes: n, go: () => { this.used += n; go(); } }));
  }

  release(bytes: number): void {
    this.used -= bytes;
    while (this.waiting.length > 0 && this.used + this.waiting[0]!.bytes <= this.limit) this.waiting.shift()!.go();
  }
}
