/**
 * FAKE SERVICE for agent tests: implements AgentTransport in-process over a real file object store
 * and applies committed logs to raw replica files with the real log reader, so a test can compare the
 * replica with the source. It checks what the agent must get right (keys, sizes, digests, sequence
 * order within a generation, bases before logs) but none of the service's own duties (auth, queues,
 * recovery points): those are tested against the real service.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { PrivateJwk } from '../../shared/crypto/keys.js';
import { LifeboatError } from '../../shared/errors.js';
import { readLog } from '../../shared/log/index.js';
import type { ObjectStore } from '../../shared/objectstore/index.js';
import { chunkKey, logKey } from '../../shared/objectstore/keys.js';
import type {
  AgentTransport, BlockDigests, CommitStatus, DiskStatus, Grant, GrantRequest, ObjectCommit, VmRegistration, VmStatus,
} from '../../agent/transport/types.js';

interface Disk {
  id: string;
  virtualSize: number;
  generation: number;
  baseComplete: boolean;
  applied: number;
  chunks: Map<number, ObjectCommit>;
  logs: Map<number, ObjectCommit>;
  resyncReason: string | null;
}

export class LocalService implements AgentTransport {
  readonly vms = new Map<string, Map<string, Disk>>();
  /** Set to make every call fail as an unreachable service would. */
  down = false;
  calls: string[] = [];

  constructor(readonly store: ObjectStore, readonly tenant: string, readonly key: PrivateJwk, readonly replicaDir: string) {}

  replicaPath(vm: string, disk: string): string {
    return join(this.replicaDir, `${vm}-${disk}.raw`);
  }

  private check(op: string): void {
    this.calls.push(op);
    if (this.down) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
  }

  private disk(vm: string, disk: string): Disk {
    const d = this.vms.get(vm)?.get(disk);
    if (!d) throw new Error(`fake service: unknown disk ${vm}/${disk}`);
    return d;
  }

  async registerVm(vm: string, r: VmRegistration): Promise<VmStatus> {
    this.check('register');
    const disks = this.vms.get(vm) ?? new Map<string, Disk>();
    for (const d of r.disks) {
      const old = disks.get(d.id);
      if (old && d.virtualSize < old.virtualSize) throw new Error('fake service: disk shrunk');
      disks.set(d.id, old ? { ...old, virtualSize: d.virtualSize } : { id: d.id, virtualSize: d.virtualSize, generation: 0, baseComplete: false, applied: 0, chunks: new Map(), logs: new Map(), resyncReason: null });
      const fh = await open(this.replicaPath(vm, d.id), 'a');
      if ((await fh.stat()).size < d.virtualSize) await fh.truncate(d.virtualSize);
      await fh.close();
    }
    this.vms.set(vm, disks);
    return this.vmStatus(vm);
  }

  async unregisterVm(vm: string): Promise<void> {
    this.check('unregister');
    this.vms.delete(vm);
  }

  async vmStatus(vm: string): Promise<VmStatus> {
    this.check('status');
    const disks: DiskStatus[] = [...(this.vms.get(vm)?.values() ?? [])].map((d) => ({
      id: d.id, virtualSize: d.virtualSize, state: d.resyncReason ? 'resync_required' : d.baseComplete ? 'replicating' : 'initial_required', resyncReason: d.resyncReason,
      generation: d.generation, baseComplete: d.baseComplete, appliedSequence: d.applied, nextSequence: d.applied + 1, pendingLogs: 0, pendingBytes: 0,
      expect: { action: d.baseComplete ? 'logs' : 'initial', generation: d.generation, nextSequence: d.applied + 1 },
    }));
    return { vm, state: 'replicating', health: 'normal', lastAppliedAt: null, disks };
  }

  async grant(vm: string, disk: string, r: GrantRequest): Promise<Grant> {
    this.check('grant');
    const ref = { tenant: this.tenant, vm, disk };
    const key = r.kind === 'log' ? logKey(ref, r.generation, r.sequence) : r.kind === 'chunk' ? chunkKey(ref, r.generation, r.index) : 'manifest';
    return { url: `local:${key}`, method: 'PUT', headers: {}, expiresAt: new Date(Date.now() + 900_000).toISOString(), key, maxSize: 4 * 2 ** 30 };
  }

  async upload(grant: Grant, body: Readable, size: number): Promise<void> {
    this.check('upload');
    await this.store.put(grant.key, body, { contentLength: size });
  }

  private async verify(c: ObjectCommit): Promise<void> {
    // As the protocol says: 422 corrupt (object_missing, size_mismatch) when the object is not there as committed.
    const info = await this.store.head(c.key).catch(() => undefined);
    if (!info) throw new LifeboatError('corrupt', `fake service: ${c.key} does not exist`);
    if (info.size !== c.size) throw new LifeboatError('corrupt', `fake service: ${c.key} is ${info.size} bytes, commit says ${c.size}`);
    const hash = createHash('sha256');
    for await (const b of await this.store.get(c.key)) hash.update(b as Buffer);
    if (hash.digest('hex') !== c.sha256) throw new Error(`fake service: ${c.key} digest differs from its commit`);
  }

  async commitChunk(vm: string, disk: string, c: ObjectCommit & { index: number }): Promise<CommitStatus> {
    this.check('commitChunk');
    await this.verify(c);
    const d = this.disk(vm, disk);
    if (d.chunks.has(c.index) && c.generation === d.generation + 1) return 'duplicate';
    if (c.generation <= d.generation) throw new Error('fake service: stale generation');
    d.chunks.set(c.index, c);
    return 'accepted';
  }

  async completeInitial(vm: string, disk: string, body: { generation: number; mode: 'full' | 'delta'; chunkCount: number }): Promise<CommitStatus> {
    this.check('completeInitial');
    const d = this.disk(vm, disk);
    for (let i = 0; i < body.chunkCount; i++) if (!d.chunks.has(i)) throw new Error(`fake service: chunk ${i} missing`);
    if (body.mode === 'full') {
      const fh = await open(this.replicaPath(vm, disk), 'r+');
      await fh.truncate(0);
      await fh.truncate(d.virtualSize);
      await fh.close();
    }
    for (let i = 0; i < body.chunkCount; i++) await this.apply(vm, disk, d.chunks.get(i)!.key, { generation: body.generation, sequence: i });
    d.generation = body.generation;
    d.baseComplete = true;
    d.applied = 0;
    d.chunks.clear();
    d.resyncReason = null;
    await this.applyReady(vm, d);
    return 'accepted';
  }

  async commitLog(vm: string, disk: string, c: ObjectCommit & { sequence: number }): Promise<CommitStatus> {
    this.check('commitLog');
    await this.verify(c);
    const d = this.disk(vm, disk);
    if (c.generation === d.generation && c.sequence <= d.applied) return 'duplicate';
    const prior = d.logs.get(c.sequence);
    if (prior && prior.generation === c.generation) return prior.sha256 === c.sha256 ? 'duplicate' : Promise.reject(new Error('fake service: commit differs'));
    d.logs.set(c.sequence, c);
    await this.applyReady(vm, d);
    return 'accepted';
  }

  /** Applies logs of the current generation strictly in sequence, as the merge worker does. */
  private async applyReady(vm: string, d: Disk): Promise<void> {
    for (;;) {
      const next = d.logs.get(d.applied + 1);
      if (!d.baseComplete || !next || next.generation !== d.generation) return;
      await this.apply(vm, d.id, next.key, { generation: d.generation, sequence: d.applied + 1 });
      d.logs.delete(d.applied + 1);
      d.applied++;
    }
  }

  private async apply(vm: string, disk: string, key: string, expect: { generation: number; sequence: number }): Promise<void> {
    const reader = await readLog(await this.store.get(key), { key: this.key, expect: { tenant: this.tenant, vm, disk, ...expect } });
    const fh = await open(this.replicaPath(vm, disk), 'r+');
    try {
      if ((await fh.stat()).size < reader.header.virtualSize) await fh.truncate(reader.header.virtualSize);
      for await (const item of reader.items()) {
        if (item.kind === 'data') await fh.write(item.data, 0, item.length, item.offset);
        else await fh.write(Buffer.alloc(item.length), 0, item.length, item.offset);
      }
    } finally {
      await fh.close();
    }
  }

  async digests(vm: string, disk: string, q: { blockSize: number; offset: number; length: number }): Promise<BlockDigests> {
    this.check('digests');
    const d = this.disk(vm, disk);
    const fh = await open(this.replicaPath(vm, disk), 'r');
    const blocks: { index: number; sha256: string }[] = [];
    const end = Math.min(q.offset + q.length, d.virtualSize);
    const buf = Buffer.alloc(q.blockSize);
    for (let o = q.offset; o < end; o += q.blockSize) {
      const n = Math.min(q.blockSize, end - o);
      const b = buf.subarray(0, n);
      b.fill(0);
      await fh.read(b, 0, n, o);
      if (!b.every((x) => x === 0)) blocks.push({ index: o / q.blockSize, sha256: createHash('sha256').update(b).digest('hex') });
    }
    await fh.close();
    return { generation: d.generation, appliedSequence: d.applied, virtualSize: d.virtualSize, blockSize: q.blockSize, offset: q.offset, length: end - q.offset, algorithm: 'sha256', blocks };
  }
}
