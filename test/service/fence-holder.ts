/**
 * A holder of a disk's locks in a process of its own, for the fencing tests (fencing.test.ts): it
 * takes the disk's Redis lock and the replica directory's kernel lock (service/workers/lock.ts) with
 * the TTL given, and commits a state through writeFencedState with appliedSequence SEQ. Test-only
 * pause point: the lock it hands to writeFencedState answers the real lease check and then, when it
 * says held, stops its own process with SIGSTOP, so the process is frozen exactly between the Lua
 * reply and the rename; the test lets the lease lapse and then sends SIGCONT (or SIGKILL).
 *
 *   node --import tsx test/service/fence-holder.ts REDIS_URL PREFIX NAME DIR TTL_MS SEQ
 *
 * stdout: `locked FENCE` once both locks are held (`busy` and exit 3 if not), `paused` right before
 * it stops itself, `committed FENCE` after the rename, `released` at the end.
 */
import { Redis } from 'ioredis';
import { readState } from '../../service/replication/replica.js';
import type { MergeFence } from '../../service/workers/commit-state.js';
import { writeFencedState } from '../../service/workers/commit-state.js';
import { acquireLock } from '../../service/workers/lock.js';

const [url, prefix, name, dir, ttlMs, seq] = process.argv.slice(2) as [string, string, string, string, string, string];
const redis = new Redis(url, { maxRetriesPerRequest: null });
const lock = await acquireLock(redis, name, dir, { ttlMs: Number(ttlMs), prefix });
if (!lock) {
  process.stdout.write('busy\n');
  redis.disconnect();
  process.exit(3);
}
process.stdout.write(`locked ${lock.fence}\n`);
const pausing: MergeFence = {
  fence: lock.fence,
  observe: (f) => lock.observe(f),
  async stillHeld() {
    const held = await lock.stillHeld();
    if (held) {
      process.stdout.write('paused\n'); // a pipe: written before the next line runs
      process.kill(process.pid, 'SIGSTOP');
    }
    return held;
  },
};
const state = await readState(dir);
await writeFencedState(dir, { ...state, appliedSequence: Number(seq) }, pausing, `holder ${process.pid}`);
process.stdout.write(`committed ${lock.fence}\n`);
await lock.release();
process.stdout.write('released\n');
redis.disconnect();
