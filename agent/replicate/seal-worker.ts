/**
 * A sealing thread of SealPool: runs sealChunk for the main thread and transfers the result back;
 * takes back shipped bodies' memory for reuse. Plain JavaScript once bundled (see seal-pool.ts).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort } from 'node:worker_threads';
import type { SealJob } from './seal-chunk.js';
import { SealerState, sealChunk } from './seal-chunk.js';

const state = new SealerState();
// Sealing a chunk leaves several MiB of dead buffers (read, compression and frame buffers of the log
// writer), memory outside the heap that V8 reclaims only after tens of MiB have piled up, in each
// thread. A collection of this thread's small heap every CollectEvery bytes sealed keeps the agent's
// resident memory bounded (a few ms each).
setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;
const CollectEvery = 8 << 20;
let sealedSinceCollect = 0;

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
      // The body's memory moves to the main thread (transferred, not copied).
      const body = r.body.buffer as ArrayBuffer;
      sealedSinceCollect += msg.job!.length;
      if (sealedSinceCollect >= CollectEvery) {
        sealedSinceCollect = 0;
        collect();
      }
      parentPort!.postMessage({ id: msg.id, ok: true, body, size: r.size, sha256: r.sha256, digests: r.digests }, [body, r.digests.buffer as ArrayBuffer]);
    },
    (err: unknown) => parentPort!.postMessage({ id: msg.id, ok: false, error: err instanceof Error ? err.message : String(err), code: (err as { code?: string }).code }),
  );
});
