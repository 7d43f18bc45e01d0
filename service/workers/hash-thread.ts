/**
 * SHA-256 of a merge's object bytes on a helper thread, so the digest that proves the object is the
 * one committed runs beside the decryption and decompression of the same bytes instead of after them
 * on the merge's thread. One thread per process serves every merge in it; bytes travel in 4 MiB
 * buffers that are transferred there and back (copied once into them), at most `BuffersPerHash` per
 * digest, which bounds how far the hashing may fall behind.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

const BufferBytes = 4 << 20;
const BuffersPerHash = 3;

const threadCode = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (m) => {
  let h = hashes.get(m.id);
  if (m.op === 'data') {
    if (!h) hashes.set(m.id, (h = createHash('sha256')));
    h.update(new Uint8Array(m.buf, 0, m.length));
    parentPort.postMessage({ op: 'free', id: m.id, buf: m.buf }, [m.buf]);
  } else if (m.op === 'end') {
    hashes.delete(m.id);
    parentPort.postMessage({ op: 'digest', id: m.id, hex: (h ?? createHash('sha256')).digest('hex') });
  } else if (m.op === 'drop') {
    hashes.delete(m.id);
  }
});
`;

interface Waiter {
  free: ArrayBuffer[];
  onFree: (() => void) | undefined;
  onDigest: ((hex: string) => void) | undefined;
  onError: (err: Error) => void;
}

let thread: Worker | undefined;
let failed = false;
const waiters = new Map<number, Waiter>();
let nextId = 1;

function helper(): Worker | undefined {
  if (thread || failed) return thread;
  try {
    const t = new Worker(threadCode, { eval: true });
    t.on('message', (m: { op: string; id: number; buf?: ArrayBuffer; hex?: string }) => {
      const w = waiters.get(m.id);
      if (!w) return;
      if (m.op === 'free') {
        w.free.push(m.buf!);
        const f = w.onFree;
        w.onFree = undefined;
        f?.();
      } else if (m.op === 'digest') {
        w.onDigest?.(m.hex!);
      }
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
  private buf: ArrayBuffer | undefined;
  private fill = 0;
  private allocated = 0;

  constructor() {
    this.waiter = { free: [], onFree: undefined, onDigest: undefined, onError: (err) => { this.error = err; this.waiter.onFree?.(); } };
    if (!this.inline) {
      waiters.set(this.id, this.waiter);
      if (waiters.size === 1) thread!.ref();
    }
  }

  private forget(): void {
    if (!waiters.delete(this.id)) return;
    if (waiters.size === 0) thread?.unref();
  }

  async update(chunk: Buffer): Promise<void> {
    if (this.inline) {
      this.inline.update(chunk);
      return;
    }
    let at = 0;
    while (at < chunk.length) {
      if (!this.buf) this.buf = await this.take();
      const n = Math.min(chunk.length - at, BufferBytes - this.fill);
      chunk.copy(new Uint8Array(this.buf), this.fill, at, at + n);
      this.fill += n;
      at += n;
      if (this.fill === BufferBytes) this.send();
    }
  }

  private async take(): Promise<ArrayBuffer> {
    for (;;) {
      if (this.error) throw this.error;
      const b = this.waiter.free.pop();
      if (b) return b;
      if (this.allocated < BuffersPerHash) {
        this.allocated++;
        return new ArrayBuffer(BufferBytes);
      }
      await new Promise<void>((resolve) => { this.waiter.onFree = resolve; });
    }
  }

  private send(): void {
    if (!this.buf || this.fill === 0) return;
    const buf = this.buf;
    thread!.postMessage({ op: 'data', id: this.id, buf, length: this.fill }, [buf]);
    this.buf = undefined;
    this.fill = 0;
  }

  /** The hex digest of everything updated; ends this hash. */
  async digest(): Promise<string> {
    if (this.inline) return this.inline.digest('hex');
    try {
      if (this.error) throw this.error;
      this.send();
      return await new Promise<string>((resolve, reject) => {
        this.waiter.onDigest = resolve;
        this.waiter.onError = reject;
        thread!.postMessage({ op: 'end', id: this.id });
      });
    } finally {
      this.forget();
    }
  }

  /** Ends this hash without a digest (the merge failed). */
  drop(): void {
    if (this.inline || !waiters.has(this.id)) return;
    this.forget();
    thread?.postMessage({ op: 'drop', id: this.id });
  }
}
