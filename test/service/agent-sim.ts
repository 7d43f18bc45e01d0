/**
 * A simulated agent for service tests: keeps a disk in memory, seals logs to the tenant's replica key
 * with shared/log, uploads them through grants and commits them over mutual TLS, and reads replicas
 * back for comparison. Named as what it is: a stand-in for lifeboat-agent, not a fake of the service.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { readWholeImage } from '../helpers.js';
import type { Extent } from '../../shared/disk/types.js';
import type { PublicJwk } from '../../shared/crypto/keys.js';
import { writeLog } from '../../shared/log/index.js';
import type { LogKind } from '../../shared/log/index.js';
import { collect, memorySource } from '../../shared/log/testing.js';
import type { RunningService } from '../../service/runner.js';
import type { TlsIdentity } from './helpers.js';
import { httpsJson } from './helpers.js';

export type Json = Record<string, unknown> & { error?: { reason?: string; message: string } };

export class SimAgent {
  /** The VM cycle the next logs belong to (as the agent takes one per cycle); unset: version-1 logs. */
  cycle: { id: number; capturedMs: number } | undefined;

  constructor(private readonly svc: RunningService, private readonly id: TlsIdentity & { tenant: string; replicaKey: PublicJwk }, readonly vm: string) {}

  call(method: string, path: string, body?: unknown) {
    return httpsJson<Json>(`${this.svc.agentUrl}${path}`, { method, caPem: this.svc.ctx.ca.certPem, identity: this.id, ...(body === undefined ? {} : { body }) });
  }

  async register(disks: { id: string; virtualSize: number }[], options: { history?: number } = {}): Promise<void> {
    const r = await this.call('PUT', `/v1/vms/${this.vm}`, { disks: disks.map((d) => ({ ...d, format: 'raw' })), frequency: '30s', history: options.history ?? 0, appConsistentEvery: 0, compression: 'zstd' });
    expect(r.status).toBe(201);
  }

  /** A sealed log over `source` (the agent's view of the disk) holding the given extents. */
  async sealed(disk: string, generation: number, sequence: number, source: Buffer, extents: Extent[], kind: LogKind = 'incremental'): Promise<Buffer> {
    const init = { tenant: this.id.tenant, vm: this.vm, disk, generation, sequence, virtualSize: source.length, kind, ...(this.cycle ? { cycle: this.cycle.id, capturedMs: this.cycle.capturedMs } : {}) };
    return collect(writeLog(init, memorySource(source, extents), { recipient: this.id.replicaKey }).sealed);
  }

  async upload(disk: string, grant: Record<string, unknown>, bytes: Buffer) {
    const g = await this.call('POST', `/v1/vms/${this.vm}/disks/${disk}/grants`, grant);
    expect(g.status).toBe(200);
    const up = await httpsJson(String(g.body.url), { method: 'PUT', rawBody: bytes, caPem: this.svc.ctx.ca.certPem });
    expect(up.status).toBe(200);
    return { key: String(g.body.key), size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), createdAt: new Date().toISOString() };
  }

  async commitLog(disk: string, sequence: number, bytes: Buffer, generation = 1) {
    const obj = await this.upload(disk, { kind: 'log', generation, sequence }, bytes);
    const cycle = this.cycle ? { cycle: this.cycle.id, capturedAt: new Date(this.cycle.capturedMs).toISOString() } : {};
    const r = await this.call('POST', `/v1/vms/${this.vm}/disks/${disk}/commits`, { generation, sequence, ...obj, consistency: 'crash', ...cycle });
    expect(r.status).toBe(202);
    return { ...obj, status: r.body.status };
  }

  /** Ships chunks as a base of generation and completes it. */
  async commitBase(disk: string, generation: number, mode: 'full' | 'delta', source: Buffer, chunks: Extent[][]): Promise<void> {
    for (const [index, ext] of chunks.entries()) await this.commitChunk(disk, generation, mode, index, source, ext);
    await this.completeBase(disk, generation, mode, chunks.length);
  }

  /** Ships one chunk of a base of generation (sealed over source as it is now). */
  async commitChunk(disk: string, generation: number, mode: 'full' | 'delta', index: number, source: Buffer, extents: Extent[]): Promise<void> {
    const obj = await this.upload(disk, { kind: 'chunk', generation, index }, await this.sealed(disk, generation, index, source, extents, mode));
    expect((await this.call('POST', `/v1/vms/${this.vm}/disks/${disk}/chunks`, { generation, index, ...obj })).status).toBe(202);
  }

  /** Tells the service the base of generation is complete with chunkCount chunks. */
  async completeBase(disk: string, generation: number, mode: 'full' | 'delta', chunkCount: number): Promise<void> {
    const done = await this.call('POST', `/v1/vms/${this.vm}/disks/${disk}/initial`, { generation, mode, chunkCount, consistency: 'crash', createdAt: new Date().toISOString() });
    expect(done.status).toBe(202);
  }

  async diskState(disk: string): Promise<Record<string, unknown>> {
    return ((await this.call('GET', `/v1/vms/${this.vm}`)).body.disks as Record<string, unknown>[]).find((d) => d.id === disk)!;
  }

  /** The replica's current contents (top of its chain). */
  async replica(disk: string): Promise<Buffer> {
    const dir = join(this.svc.ctx.config.replicaRoot, this.id.tenant, this.vm, disk);
    const state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as { layers: string[] };
    return readWholeImage(join(dir, state.layers.at(-1)!));
  }
}

/** Random data written into the agent's disk and the extents that say so. */
export function scribble(disk: Buffer, ranges: [number, number][]): Extent[] {
  return ranges.map(([offset, length]) => {
    randomBytes(length).copy(disk, offset);
    return { offset, length, kind: 'data' as const };
  });
}
