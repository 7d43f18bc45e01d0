/** A sealing thread of SealPool: runs sealChunk for the main thread and transfers the result back. */
import { parentPort } from 'node:worker_threads';
import type { SealJob } from './seal-chunk.js';
import { SealerState, sealChunk } from './seal-chunk.js';

const state = new SealerState();

parentPort!.on('message', (msg: { id: number; job?: SealJob; close?: boolean }) => {
  if (msg.close) {
    void state.close().finally(() => parentPort!.postMessage({ id: msg.id, ok: true }));
    return;
  }
  sealChunk(msg.job!, state).then(
    (r) => {
      const joined = Buffer.concat(r.body);
      const body = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.length);
      parentPort!.postMessage({ id: msg.id, ok: true, body, sha256: r.sha256, digests: r.digests }, [body as ArrayBuffer, r.digests.buffer as ArrayBuffer]);
    },
    (err: unknown) => parentPort!.postMessage({ id: msg.id, ok: false, error: err instanceof Error ? err.message : String(err), code: (err as { code?: string }).code }),
  );
});
