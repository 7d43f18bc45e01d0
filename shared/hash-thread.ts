/**
 * SHA-256 of a merge's object bytes on a helper thread, so the digest that proves the object is the
 * one committed runs beside the decryption and decompression of the same bytes instead of after them
 * on the merge's thread. One thread per process serves every merge in it.
 *
 * Bytes reach the helper in one of two ways:
 * - A chunk that is a whole buffer of the thread's pool (shared/buffer-pool.ts: the file store reads
 *   objects into such buffers) is handed over: `pass` transfers its memory to the helper, which hashes it and
 *   transfers it back, and the chunk comes out of `pass` again, its bytes untouched. Nothing is copied;
 *   a transfer there and back costs about 60 µs per MiB of both threads' time, where copying a MiB
 *   into shared memory cost the merge's thread about 100 µs (V8 copies into a SharedArrayBuffer with
 *   word-sized relaxed atomics, not memcpy).
 * - Any other chunk (another store's stream, whose memory may hold other buffers too) is copied into
 *   the next free slot of the hash's ring of `Slots` slots of 4 MiB (SharedArrayBuffer, pooled
 *   between hashes), and a small message names the slot; the helper counts each slot done in a
 *   shared word, which the merge's thread waits on (Atomics.waitAsync) only when every slot is
 *   still being hashed.
 * The helper takes messages in order, so the digest covers the chunks in the order they were given.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { adoptPooled, isPooled } from './buffer-pool.js';

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
  } else if (m.op === 'own') {
    h?.hash.update(new Uint8Array(m.buffer, 0, m.length));
    parentPort.postMessage({ op: 'back', id: m.id, buffer: m.buffer }, [m.buffer]);
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
  /** A handed-over chunk's memory is back (they come back in the order they went). */
  onBack: (buffer: ArrayBuffer) => void;
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
    t.on('message', (m: { op: string; id: number; hex?: string; buffer?: ArrayBuffer }) => {
      if (m.op === 'digest') waiters.get(m.id)?.onDigest?.(m.hex!);
      else if (m.op === 'back') waiters.get(m.id)?.onBack(m.buffer!);
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

  /** Settles when everything passed so far is on its way. */
  private ordered: Promise<void> = Promise.resolve();
  /** Handed-over chunks not back yet, oldest first. */
  private readonly away: { resolve: (chunk: Buffer) => void; reject: (err: Error) => void }[] = [];

  constructor() {
    this.waiter = {
      onDigest: undefined,
      onError: (err) => {
        this.error = err;
        for (const a of this.away.splice(0)) a.reject(err);
      },
      onBack: (buffer) => {
        // Only whole buffers travel: the chunk is all of what came back.
        this.away.shift()?.resolve(adoptPooled(buffer, 0, buffer.byteLength));
      },
    };
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

  /**
   * Hashes chunk and gives it back once hashed: a pooled chunk's memory goes to the helper and comes
   * back (the chunk passed in is left empty, use the one returned), any other chunk is copied as by
   * update() and returned once copied. Chunks are hashed in the order they are passed, and several
   * may be on their way at once (the calls need not wait for each other).
   */
  pass(chunk: Buffer): Promise<Buffer> {
    const step = this.ordered.then(() => this.enqueue(chunk));
    this.ordered = step.then(() => undefined, () => undefined);
    return step.then((s) => s.back);
  }

  /** Sends chunk on its way (after every chunk passed before it); `back` settles when it is hashed. */
  private async enqueue(chunk: Buffer): Promise<{ back: Promise<Buffer> }> {
    // Only a whole pooled buffer goes: a piece of one may share its memory with pieces still unread.
    const whole = chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength;
    if (this.inline || !whole || !isPooled(chunk) || chunk.length === 0 || !(chunk.buffer instanceof ArrayBuffer)) {
      await this.update(chunk);
      return { back: Promise.resolve(chunk) };
    }
    if (this.error) throw this.error;
    if (!this.ring) this.start();
    this.send(); // a slot's bytes come first
    const { buffer, length } = chunk;
    const back = new Promise<Buffer>((resolve, reject) => this.away.push({ resolve, reject }));
    thread!.postMessage({ op: 'own', id: this.id, buffer, length }, [buffer]);
    return { back };
  }

  /** Copies chunk to the thread; not to be mixed with pass() calls that were not awaited. */
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
    await this.ordered;
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
