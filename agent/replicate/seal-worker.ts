/**
 * A sealing thread of SealPool: runs sealChunk for the main thread. A body sealed into the job's
 * shared slot stays where it is (only its size goes back); a body that did not fit is transferred,
 * and its memory comes back for reuse once shipped. Plain JavaScript once bundled (see seal-pool.ts).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort } from 'node:worker_threads';
import type { SealJob } from './seal-chunk.js';
import { SealerState, sealChunk } from './seal-chunk.js';

const state = new SealerState();
// Sealing a chunk leaves dead buffers (the log writer's read, compression and frame buffers, the
// sealed frames), memory outside the heap that V8 reclaims only after tens of MiB have piled up, in
// each thread. They die young: a minor collection after every chunk (a fraction of a millisecond on
// this thread's small heap) frees them. No full collection is forced: one every 32 MiB sealed cost
// about 2 CPU-seconds per 4 GiB (concurrent marking) and did not lower the peak resident memory;
// V8's own full collections catch what gets promoted.
setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as (options?: { type: 'minor' | 'major' }) => void;

parentPort!.on('message', (msg: { id: number; job?: SealJob; close?: boolean; recycle?: ArrayBuffer }) => {
  if (msg.recycle) {
    state.recycle(msg.recycle);
    return;
  }
  if (msg.close) {
    void state.close().finally(() => parentPort!.postMessage({ id: msg.id, ok: true }));
    return;
  }
  sealChunk(msg.job!, state).then(
    (r) => {
      const shared = msg.job!.into !== undefined && r.body.buffer === msg.job!.into;
      // A body of its own moves to the main thread (transferred, not copied).
      const body = shared ? undefined : r.body.buffer as ArrayBuffer;
      const transfer = [r.digests.buffer as ArrayBuffer, ...(body ? [body] : [])];
      parentPort!.postMessage({ id: msg.id, ok: true, shared, body, size: r.size, sha256: r.sha256, digests: r.digests }, transfer);
      collect({ type: 'minor' });
    },
    (err: unknown) => parentPort!.postMessage({ id: msg.id, ok: false, error: err instanceof Error ? err.message : String(err), code: (err as { code?: string }).code }),
  );
});
