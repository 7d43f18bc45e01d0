/**
 * SHA-256 of a merge's object bytes on a helper thread, so the digest that proves the object is the
 * one committed runs beside the decryption and decompression of the same bytes instead of after them
 * on the merge's thread. One thread per process serves every merge in it.
 *
 * Bytes travel through shared memory: each hash owns a ring of `Slots` slots of 4 MiB
 * (SharedArrayBuffer, pooled between hashes), the merge's thread copies the object's bytes into the
 * next free slot and posts a small message naming it; the helper hashes the slot and counts it done
 * in a shared word, which the merge's thread waits on (Atomics.waitAsync) only when every slot is
 * still being hashed. Nothing is transferred and nothing comes back per slot: moving 4 MiB
 * ArrayBuffers there and back cost the merge's thread more than the copy.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

const SlotBytes = 4 << 20;
/** Slots per hash: bounds how far the hashing may fall behind. */
const Slots = 3;
/** Rings kept for later hashes. */
const PoolMax = 4;
/** Longest a wait for a free slot lasts before it looks at the thread's health again. */
const WaitMs = 200;

const threadCode = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (m) => {
  let h = hashes.get(m.id);
  if (m.op === 'ring') {
    hashes.set(m.id, { hash: createHash('sha256'), data: new Uint8Array(m.data), done: new Int32Array(m.done) });
  } else if (m.op === 'data') {
    h.hash.update(h.data.subarray(m.at, m.at + m.length));
    Atomics.add(h.done, 0, 1);
    Atomics.notify(h.done, 0);
  } else if (m.op === 'end') {
    hashes.delete(m.id);
    parentPort.postMessage({ op: 'digest', id: m.id, hex: h.hash.digest('hex') });
  } else if (m.op === 'drop') {
    hashes.delete(m.id);
  }
});
`;

interface Ring {
  data: SharedArrayBuffer;
  /** Word 0: slots hashed so far (reset when the ring is reused). */
  done: SharedArrayBuffer;
}

interface Waiter {
  onDigest: ((hex: string) => void) | undefined;
  onError: (err: Error) => void;
}

let thread: Worker | undefined;
let failed = false;
const waiters = new Map<number, Waiter>();
const rings: Ring[] = [];
let nextId = 1;

/** Atomics.waitAsync (V8 has it; the ES2023 library this project compiles against does not name it). */
const waitAsync = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number, ms: number): { async: false } | { async: true; value: Promise<string> } }).waitAsync;

function helper(): Worker | undefined {
  if (thread || failed) return thread;
  try {
    const t = new Worker(threadCode, { eval: true });
    t.on('message', (m: { op: string; id: number; hex?: string }) => {
      if (m.op === 'digest') waiters.get(m.id)?.onDigest?.(m.hex!);
    });
    const fail = (err: Error) => {
      failed = true;
      thread = undefined;
      for (const w of waiters.values()) w.onError(err);
    };
    t.on('error', fail);
    t.on('exit', (code) => fail(new Error(`hash thread exited with code ${code}`)));
    // After the listeners (adding one refs it): only pending digests keep the process alive.
    t.unref();
    thread = t;
  } catch {
    failed = true;
  }
  return thread;
}

/** An incremental SHA-256 whose work runs on the helper thread (or inline when it cannot start). */
export class Sha256 {
  private readonly id = nextId++;
  private readonly inline = helper() === undefined ? createHash('sha256') : undefined;
  private readonly waiter: Waiter;
  private error: Error | undefined;
  private ring: Ring | undefined;
  private data: Buffer | undefined;
  private done: Int32Array | undefined;
  /** Slots handed to the thread. */
  private sent = 0;
  private fill = 0;

  constructor() {
    this.waiter = { onDigest: undefined, onError: (err) => { this.error = err; } };
    if (!this.inline) {
      waiters.set(this.id, this.waiter);
      if (waiters.size === 1) thread!.ref();
    }
  }

  private forget(): void {
    if (!waiters.delete(this.id)) return;
    if (waiters.size === 0) thread?.unref();
    if (this.ring && rings.length < PoolMax) rings.push(this.ring);
    this.ring = undefined;
  }

  async update(chunk: Buffer): Promise<void> {
    if (this.inline) {
      this.inline.update(chunk);
      return;
    }
    if (!this.ring) this.start();
    let at = 0;
    while (at < chunk.length) {
      if (this.fill === 0) await this.freeSlot();
      const slot = this.sent % Slots;
      const n = Math.min(chunk.length - at, SlotBytes - this.fill);
      chunk.copy(this.data!, slot * SlotBytes + this.fill, at, at + n);
      this.fill += n;
      at += n;
      if (this.fill === SlotBytes) this.send();
    }
  }

  private start(): void {
    const ring = rings.pop() ?? { data: new SharedArrayBuffer(Slots * SlotBytes), done: new SharedArrayBuffer(4) };
    this.ring = ring;
    this.data = Buffer.from(ring.data);
    this.done = new Int32Array(ring.done);
    Atomics.store(this.done, 0, 0);
    thread!.postMessage({ op: 'ring', id: this.id, data: ring.data, done: ring.done });
  }

  /** Waits until the slot to fill next was hashed (or was never used). */
  private async freeSlot(): Promise<void> {
    for (;;) {
      if (this.error) throw this.error;
      const done = Atomics.load(this.done!, 0);
      if (this.sent - done < Slots) return;
      const w = waitAsync(this.done!, 0, done, WaitMs);
      if (w.async) await w.value;
    }
  }

  private send(): void {
    if (this.fill === 0) return;
    thread!.postMessage({ op: 'data', id: this.id, at: (this.sent % Slots) * SlotBytes, length: this.fill });
    this.sent++;
    this.fill = 0;
  }

  /** The hex digest of everything updated; ends this hash. */
  async digest(): Promise<string> {
    if (this.inline) return this.inline.digest('hex');
    try {
      if (this.error) throw this.error;
      if (!this.ring) this.start();
      this.send();
      const hex = await new Promise<string>((resolve, reject) => {
        this.waiter.onDigest = resolve;
        this.waiter.onError = reject;
        thread!.postMessage({ op: 'end', id: this.id });
      });
      return hex;
    } finally {
      this.forget();
    }
  }

  /** Ends this hash without a digest (the merge failed). */
  drop(): void {
    if (this.inline || !waiters.has(this.id)) return;
    // The thread may still be hashing a slot: the ring is not reused (forget() pools only finished ones).
    this.ring = undefined;
    this.forget();
    thread?.postMessage({ op: 'drop', id: this.id });
  }
}
