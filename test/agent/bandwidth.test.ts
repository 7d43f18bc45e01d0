/**
 * The upload limit (agent/transport/bandwidth.ts): uploads of one VM share one bucket, so together
 * they take at least their bytes beyond one burst / RATE (a lower bound only: a busy machine can only
 * make them slower); another VM has its own bucket; a changed RATE takes effect.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { UploadBurstBytes, paced, uploadLimit } from '../../agent/transport/bandwidth.js';

const KiB = 1024;
/** Node's timers may fire a few ms before the real clock says they are due (the loop's cached time). */
const TimerSlackMs = 50;

async function drain(stream: Readable): Promise<number> {
  let n = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) n += chunk.length;
  return n;
}

/** A one-shot stream of `bytes` in 1 MiB-sized reads (bigger than a burst, as a spool file's reads are). */
function source(bytes: number): Readable {
  const block = Buffer.alloc(Math.min(bytes, 1 << 20), 7);
  return Readable.from((function* () {
    for (let left = bytes; left > 0; left -= block.length) yield block.subarray(0, Math.min(left, block.length));
  })());
}

describe('upload bandwidth limit', () => {
  it('holds parallel uploads of one VM together to the rate, passing every byte', async () => {
    const rate = 256 * KiB;
    const started = performance.now();
    const sizes = await Promise.all([0, 1, 2, 3].map(() => drain(paced(source(160 * KiB), uploadLimit('state\0vm-a', rate)))));
    const ms = performance.now() - started;
    expect(sizes).toEqual([160 * KiB, 160 * KiB, 160 * KiB, 160 * KiB]);
    expect(ms).toBeGreaterThanOrEqual(((4 * 160 * KiB - UploadBurstBytes) / rate) * 1000 - TimerSlackMs);
  });

  it('gives each VM its own bucket, keeps it while the rate stays and replaces it when the rate changes', () => {
    const a = uploadLimit('state\0vm-b', 100 * KiB);
    expect(uploadLimit('state\0vm-b', 100 * KiB)).toBe(a);
    expect(uploadLimit('state\0vm-c', 100 * KiB)).not.toBe(a);
    expect(uploadLimit('other-state\0vm-b', 100 * KiB)).not.toBe(a);
    const faster = uploadLimit('state\0vm-b', 200 * KiB);
    expect(faster).not.toBe(a);
    expect(faster!.bytesPerSecond).toBe(200 * KiB);
    expect(uploadLimit('state\0vm-b', null)).toBeUndefined();
  });

  it('leaves an unlimited upload as it is', async () => {
    const s = source(3 * KiB);
    expect(paced(s, undefined)).toBe(s);
    expect(await drain(s)).toBe(3 * KiB);
  });
});
