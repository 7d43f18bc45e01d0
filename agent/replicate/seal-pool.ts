/**
 * A small pool of sealing threads (seal-worker.ts) for bases: reading, hashing, compressing and
 * encrypting a chunk is CPU work that a single JavaScript thread would serialize. A pool of size 0
 * seals in the calling thread.
 *
 * The threads run plain JavaScript, not the TypeScript sources through tsx's loader (a loader and a
 * compiler per thread cost about 100 MiB each): seal-worker.ts is bundled once per process with
 * esbuild (the compiler tsx itself uses) into one ES module, its packages left as imports by absolute
 * URL, and each thread starts from that module as a data: URL. A compiled build (this file as .js)
 * starts the threads from seal-worker.js directly.
 */
import { Worker } from 'node:worker_threads';
import { LifeboatError } from '../../shared/errors.js';
import type { ErrorCode } from '../../shared/errors.js';
import type { Sealed, SealJob } from './seal-chunk.js';
import { SealSlack, SealerState, sealChunk } from './seal-chunk.js';

export interface SealReply {
  id: number;
  ok: boolean;
  /** The body lies in the job's shared slot. */
  shared?: boolean;
  body?: ArrayBuffer;
  size?: number;
  sha256?: string;
  digests?: Uint32Array;
  error?: string;
  code?: string;
}

let bundled: Promise<URL> | undefined;

/** The module the threads start from: seal-worker.js beside a compiled build, else the bundle. */
function workerModule(): Promise<URL> {
  if (import.meta.url.endsWith('.js')) return Promise.resolve(new URL('./seal-worker.js', import.meta.url));
  bundled ??= bundleWorker();
  return bundled;
}

async function bundleWorker(): Promise<URL> {
  const { build } = await import('esbuild');
  const r = await build({
    entryPoints: [new URL('./seal-worker.ts', import.meta.url).pathname], bundle: true, write: false, format: 'esm', platform: 'node',
    target: 'node20', logLevel: 'silent',
    // A data: module resolves only absolute specifiers: packages become file: URLs resolved from
    // here, and import.meta.url (createRequire in the codec) this module's URL.
    define: { 'import.meta.url': JSON.stringify(import.meta.url) },
    plugins: [{
      name: 'absolute-packages',
      setup(b) {
        b.onResolve({ filter: /^[^./]/ }, (a) => ({ path: a.path.startsWith('node:') ? a.path : import.meta.resolve(a.path), external: true }));
      },
    }],
  });
  return new URL(`data:text/javascript;base64,${Buffer.from(r.outputFiles[0]!.contents).toString('base64')}`);
}

export class SealPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly waiting: ((w: Worker) => void)[] = [];
  private readonly pending = new Map<number, { resolve: (r: SealReply) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private readonly local: SealerState | undefined;
  /** Which thread's memory a sealed body is, to give it back there. */
  private readonly owners = new WeakMap<ArrayBufferLike, Worker>();
  /**
   * Output slots shared with the threads, one per chunk in flight: a thread seals a body into a slot
   * and the uploader reads it there. Nothing is transferred, so no chunk-sized memory comes and goes
   * through this thread's heap accounting (which would bring on full collections of its large heap).
   */
  private readonly slots: SharedArrayBuffer[] = [];
  private readonly slotSet = new WeakSet<ArrayBufferLike>();

  private started: Promise<void> | undefined;

  constructor(private readonly size: number) {
    if (size === 0) this.local = new SealerState();
  }

  /** Starts the threads on first use (bundling the worker's code once per process). */
  private start(): Promise<void> {
    this.started ??= workerModule().then((module) => { for (let i = 0; i < this.size; i++) this.spawn(module); });
    return this.started;
  }

  private spawn(module: URL): void {
    // The default young generation: a chunk's garbage (mostly buffers, whose memory is outside the
    // heap) stays young until the thread's minor collection after the chunk frees it (seal-worker.ts).
    const w = new Worker(module);
    w.on('message', (r: SealReply) => {
      const p = this.pending.get(r.id);
      this.pending.delete(r.id);
      p?.resolve(r);
    });
    w.on('error', (err) => {
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    });
    this.workers.push(w);
    this.idle.push(w);
  }

  private async take(): Promise<Worker> {
    return this.idle.pop() ?? new Promise<Worker>((resolve) => this.waiting.push(resolve));
  }

  private give(w: Worker): void {
    const next = this.waiting.shift();
    if (next) next(w);
    else this.idle.push(w);
  }

  private call(w: Worker, msg: object): Promise<SealReply> {
    const id = this.nextId++;
    return new Promise<SealReply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.postMessage({ id, ...msg });
    });
  }

  /** Reads and seals one chunk on a free thread. */
  async seal(job: SealJob): Promise<Sealed> {
    if (this.local) return sealChunk(job, this.local);
    await this.start();
    const into = this.slot(job.length + SealSlack);
    const w = await this.take();
    try {
      const r = await this.call(w, { job: { ...job, into } });
      // LifeboatError codes are lower case; anything else (an errno) is an I/O error.
      if (!r.ok) throw new LifeboatError(r.code && /^[a-z_]+$/.test(r.code) ? r.code as ErrorCode : 'io', r.error ?? 'sealing failed');
      if (r.shared) return { body: Buffer.from(into, 0, r.size), size: r.size!, sha256: r.sha256!, digests: r.digests! };
      this.slots.push(into);
      const body = Buffer.from(r.body!, 0, r.size);
      this.owners.set(r.body!, w);
      return { body, size: r.size!, sha256: r.sha256!, digests: r.digests! };
    } catch (err) {
      this.slots.push(into);
      throw err;
    } finally {
      this.give(w);
    }
  }

  /** A free shared output slot of at least length bytes. */
  private slot(length: number): SharedArrayBuffer {
    const i = this.slots.findIndex((s) => s.byteLength >= length);
    if (i >= 0) return this.slots.splice(i, 1)[0]!;
    const s = new SharedArrayBuffer(length);
    this.slotSet.add(s);
    return s;
  }

  /** Gives a shipped body's memory back to its sealer for the next chunk; the caller must not use it after. */
  recycle(body: Buffer): void {
    if (this.local) {
      this.local.recycle(body.buffer as ArrayBuffer);
      return;
    }
    if (this.slotSet.has(body.buffer)) {
      this.slots.push(body.buffer as SharedArrayBuffer);
      return;
    }
    const w = this.owners.get(body.buffer);
    this.owners.delete(body.buffer);
    if (w) w.postMessage({ recycle: body.buffer }, [body.buffer as ArrayBuffer]);
  }

  async close(): Promise<void> {
    await this.local?.close();
    await this.started?.catch(() => undefined);
    await Promise.all(this.workers.map(async (w) => {
      await this.call(w, { close: true }).catch(() => undefined);
      await w.terminate();
    }));
  }
}
