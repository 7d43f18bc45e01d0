/**
 * The upload limit of `lifeboat-agent protect --bandwidth RATE`: one token bucket per VM, shared by
 * every upload of that VM (a base sends several chunks at once, a VM's disks may ship together), so
 * the VM's uploads together stay within RATE. A bucket holds at most one 64 KiB piece: the only burst
 * the limit allows.
 */
import { TokenBucket } from '../../shared/objectstore/wrappers/index.js';

/** Passes a stream's bytes on in pieces of at most the burst, each once the bucket holds it. */
export { paced } from '../../shared/objectstore/wrappers/index.js';

export const UploadBurstBytes = 64 * 1024;

const buckets = new Map<string, TokenBucket>();

/** The bucket of a scope (one VM of one state directory) at this rate; none when unlimited. */
export function uploadLimit(scope: string, bytesPerSecond: number | null): TokenBucket | undefined {
  if (bytesPerSecond === null) return undefined;
  let bucket = buckets.get(scope);
  if (bucket?.bytesPerSecond !== bytesPerSecond) {
    bucket = new TokenBucket(bytesPerSecond, UploadBurstBytes);
    buckets.set(scope, bucket);
  }
  return bucket;
}
