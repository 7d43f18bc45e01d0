/**
 * The agent's side of bench/agent.ts, run as a child process so its wall time and peak resident
 * memory are measured alone: `tsx bench/agent-run.ts initial|cycle STATE DISK STORE`.
 * initial: the disk's full base (chunks sealed, compressed, uploaded in parallel) to a file store;
 * cycle: one change-log cycle against the map the base left. The service is replaced by
 * StoreTransport (below), which puts objects straight into the store and accepts every commit:
 * what is measured is the agent's work, not a service's.
 */
import { mkdir } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { generateKeyPair } from '../shared/crypto/keys.js';
import { openDisk } from '../shared/disk/index.js';
import { FileStore } from '../shared/objectstore/file.js';
import { chunkKey, logKey } from '../shared/objectstore/keys.js';
import { ProgressBook, silentLogger } from '../agent/replicate/context.js';
import type { EngineContext } from '../agent/replicate/context.js';
import { diskCycle } from '../agent/replicate/cycle.js';
import { runBase, startBase } from '../agent/replicate/initial.js';
import { AgentState } from '../agent/state/store.js';
import type { VmConfig } from '../agent/state/schema.js';
import type { AgentTransport, Grant, GrantRequest, VmStatus } from '../agent/transport/types.js';

class StoreTransport implements AgentTransport {
  constructor(private readonly store: FileStore) {}
  async registerVm(vm: string): Promise<VmStatus> { return this.vmStatus(vm); }
  async unregisterVm(): Promise<void> {}
  async vmStatus(vm: string): Promise<VmStatus> { return { vm, state: 'replicating', health: 'normal', lastAppliedAt: null, disks: [] }; }
  async grant(vm: string, disk: string, r: GrantRequest): Promise<Grant> {
    const ref = { tenant: 'bench', vm, disk };
    const key = r.kind === 'log' ? logKey(ref, r.generation, r.sequence) : r.kind === 'chunk' ? chunkKey(ref, r.generation, r.index) : 'manifest';
    return { url: `store:${key}`, method: 'PUT', headers: {}, expiresAt: new Date(Date.now() + 9e5).toISOString(), key, maxSize: 2 ** 32 };
  }
  async upload(grant: Grant, body: Readable, size: number): Promise<void> { await this.store.put(grant.key, body, { contentLength: size }); }
  async commitLog(): Promise<'accepted'> { return 'accepted'; }
  async commitChunk(): Promise<'accepted'> { return 'accepted'; }
  async completeInitial(): Promise<'accepted'> { return 'accepted'; }
  async digests(): Promise<never> { throw new Error('not in this bench'); }
}

const [mode, stateDir, diskPath, storeDir] = process.argv.slice(2) as [string, string, string, string];
const state = new AgentState(stateDir);
await state.init();
await mkdir(storeDir, { recursive: true });
const keys = await generateKeyPair();
const ctx: EngineContext = { state, transport: new StoreTransport(new FileStore(storeDir)), tenant: 'bench', recipient: keys.publicKey, logger: silentLogger, now: () => new Date() };
const config: VmConfig = {
  version: 1, name: 'bench', disks: [{ id: 'disk0', path: diskPath }], frequencyMs: 300_000, history: 0, appConsistentEveryMs: null, preSnapshot: null,
  postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null, paused: false, createdAt: new Date().toISOString(),
};
await state.writeConfig(config);
const book = await ProgressBook.load(state, 'bench');
const disk = await openDisk(diskPath, { readOnly: true });
const t0 = process.hrtime.bigint();
let result: Record<string, number>;
if (mode === 'initial') {
  await book.update((p) => {
    p.registered = true;
    p.disks.disk0 = { generation: 0, nextSequence: 1, virtualSize: disk.virtualSize, resyncReason: null, inflight: [], initial: { state: 'pending', mode: 'full', generation: 0, virtualSize: 0, chunkSize: 16 << 20, chunksDone: '', bytesTotal: 0, bytesDone: 0, bytesSent: 0 } };
  });
  await startBase(ctx, book, 'disk0', disk, 'full', 0);
  const sent = await runBase(ctx, book, config, 'disk0', disk);
  result = { bytes: disk.virtualSize, sentBytes: sent };
} else {
  const r = await diskCycle(ctx, book, config, 'disk0', disk, 'crash');
  result = { changedBytes: r.changedBytes, sentBytes: r.sentBytes };
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
await disk.close();
process.stdout.write(`${JSON.stringify({ ...result, seconds })}\n`);
