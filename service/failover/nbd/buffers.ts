/**
 * Memory for READ replies: fixed-size slabs reused across requests and connections, and a per
 * connection byte budget so one connection holds at most ConnectionBufferBytes of them (a client
 * that stops reading its replies stalls itself, not the other connections). A slab goes back when
 * the socket has taken the bytes written from it (the write's callback), never before.
 */

/** Size of one slab: one OFFSET_DATA chunk at most; nbdcopy's and qemu's usual request size. */
export const SlabBytes = 256 * 1024;
/** Slabs kept free for reuse; more are left to the garbage collector. */
const MaxFreeSlabs = 256;
const free: Buffer[] = [];

export function takeSlab(): Buffer {
  return free.pop() ?? Buffer.allocUnsafeSlow(SlabBytes);
}

export function giveSlab(slab: Buffer): void {
  if (free.length < MaxFreeSlabs && slab.length === SlabBytes) free.push(slab);
}

/** A counting semaphore over bytes, first come first served (a large request is not starved). */
export class ByteBudget {
  private used = 0;
  private readonly waiting: Array<{ bytes: number; go: () => void }> = [];

  constructor(readonly limit: number) {}

  /** Resolves once bytes (at most limit) are reserved. */
  acquire(bytes: number): Promise<void> {
    if (bytes > this.limit) throw new RangeError(`${bytes} bytes asked of a ${this.limit}-byte budget`);
    const n = bytes;
    if (this.waiting.length === 0 && this.used + n <= this.limit) {
      this.used += n;
      return Promise.resolve();
    }
    return new Promise((go) => this.waiting.push({ bytes: n, go: () => { this.used += n; go(); } }));
  }

  release(bytes: number): void {
    this.used -= bytes;
    while (this.waiting.length > 0 && this.used + this.waiting[0]!.bytes <= this.limit) this.waiting.shift()!.go();
  }
}
