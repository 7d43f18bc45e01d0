/**
 * A small pool of sealing threads (seal-worker.ts) for bases: hashing, compressing and encrypting a
 * chunk is CPU work that a single JavaScript thread would serialize. Each thread loads the sources
 * through tsx's loader (the agent runs its TypeScript directly), resolved from this module. A pool of
 * size 0 seals in the calling thread.
 */
import { Worker } from 'node:worker_threads';
import { LifeboatError } from '../../shared/errors.js';
import type { ErrorCode } from '../../shared/errors.js';
import type { Sealed, SealJob } from './seal-chunk.js';
import { SealerState, sealChunk } from './seal-chunk.js';

export interface SealReply {
  id: number;
  ok: boolean;
  body?: ArrayBuffer;
  sha256?: string;
  digests?: Uint32Array;
  error?: string;
  code?: string;
}

const workerSource = (tsxApi: string, entry: string) => `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;

export class SealPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly waiting: ((w: Worker) => void)[] = [];
  private readonly pending = new Map<number, { resolve: (r: SealReply) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private readonly local: SealerState | undefined;

  constructor(size: number) {
    if (size === 0) this.local = new SealerState();
    const source = workerSource(import.meta.resolve('tsx/esm/api'), new URL('./seal-worker.ts', import.meta.url).href);
    for (let i = 0; i < size; i++) {
      const w = new Worker(source, { eval: true });
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
    const w = await this.take();
    try {
      const r = await this.call(w, { job });
      // LifeboatError codes are lower case; anything else (an errno) is an I/O error.
      if (!r.ok) throw new LifeboatError(r.code && /^[a-z_]+$/.test(r.code) ? r.code as ErrorCode : 'io', r.error ?? 'sealing failed');
      const body = Buffer.from(r.body!);
      return { body: [body], size: body.length, sha256: r.sha256!, digests: r.digests! };
    } finally {
      this.give(w);
    }
  }

  async close(): Promise<void> {
    await this.local?.close();
    await Promise.all(this.workers.map(async (w) => {
      await this.call(w, { close: true }).catch(() => undefined);
      await w.terminate();
    }));
  }
}
