/**
 * The replication engine end to end against the fake service of local-service.ts over a real file
 * object store: initial copy, cycles, grown disks, failures and restarts, existing replicas, media,
 * application-consistency hooks. Every scenario ends by comparing the replica with the source.
 */
import { randomBytes } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../shared/crypto/keys.js';
import type { KeyPair } from '../../shared/crypto/keys.js';
import { createDisk, openDisk } from '../../shared/disk/index.js';
import { FileStore } from '../../shared/objectstore/file.js';
import type { EngineContext } from '../../agent/replicate/context.js';
import { silentLogger } from '../../agent/replicate/context.js';
import { runDaemon } from '../../agent/replicate/daemon.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { hasBit } from '../../agent/replicate/bitmap.js';
import { DefaultChunkSize, chunkSlots } from '../../agent/replicate/initial.js';
import type { VmConfig, VmProgress } from '../../agent/state/schema.js';
import { AgentState } from '../../agent/state/store.js';
import { scratchDir } from '../helpers.js';
import { LocalService } from './local-service.js';

const MiB = 1 << 20;
const B = 64 * 1024;
let dir: string;
let remove: () => Promise<void>;
let keys: KeyPair;
beforeAll(async () => {
  ({ path: dir, remove } = await scratchDir('lifeboat-agent-replicate-'));
  keys = await generateKeyPair();
});
afterAll(() => remove());

let n = 0;
async function setup(options: { size?: number; initial?: VmConfig['initial']; config?: Partial<VmConfig> } = {}) {
  const root = join(dir, `s${n++}`);
  const source = join(root, 'source.raw');
  const state = new AgentState(join(root, 'state'));
  await state.init();
  const { mkdir } = await import('node:fs/promises');
  await mkdir(join(root, 'replicas'), { recursive: true });
  const disk = await createDisk(source, 'raw', { virtualSize: options.size ?? 40 * MiB });
  await disk.write(3 * MiB, randomBytes(2 * MiB));
  await disk.write(20 * MiB + 5, randomBytes(MiB));
  await disk.close();
  const service = new LocalService(new FileStore(join(root, 'store')), 'acme', keys.privateKey, join(root, 'replicas'));
  const config: VmConfig = {
    version: 1, name: 'web01', disks: [{ id: 'disk0', path: source }], frequencyMs: 300_000, history: 0, appConsistentEveryMs: null,
    preSnapshot: null, postSnapshot: null, compression: 'zstd', initial: options.initial ?? { mode: 'network' }, startAt: null,
    bandwidthBytesPerSec: null, paused: false, createdAt: new Date().toISOString(), ...options.config,
  };
  await state.writeConfig(config);
  const ctx: EngineContext = { state, transport: service, tenant: 'acme', recipient: keys.publicKey, logger: silentLogger, now: () => new Date(), retry: { attempts: 1 }, sealThreads: 0 };
  const replicator = new Replicator(ctx);
  const write = async (offset: number, data: Buffer) => {
    const d = await openDisk(source);
    await d.write(offset, data);
    await d.close();
  };
  const replicaEqualsSource = async () => {
    const [a, b] = [await readFile(source), await readFile(service.replicaPath('web01', 'disk0'))];
    return a.length === b.length && a.equals(b);
  };
  return { root, source, state, service, replicator, write, replicaEqualsSource, ctx };
}

describe('replication engine', () => {
  it('copies a disk, then ships exactly the changed blocks every cycle', async () => {
    const s = await setup();
    const [first] = await s.replicator.runOnce();
    expect(first!.outcome).toBe('ok');
    expect(await s.replicaEqualsSource()).toBe(true);
    const p0 = await s.state.readProgress('web01');
    expect(p0.disks.disk0!.initial.state).toBe('done');
    expect(p0.disks.disk0!.initial.bytesSent).toBeLessThan(4 * MiB); // 3 MiB of random data, holes skipped

    await s.write(7 * MiB + 100, randomBytes(10));
    await s.write(30 * MiB, randomBytes(3 * B));
    const [second] = await s.replicator.runOnce();
    expect(second!.stats!.changedBytes).toBe(4 * B);
    expect(second!.stats!.sentBytes).toBeGreaterThan(3 * B); // three random blocks do not compress
    expect(second!.stats!.sentBytes).toBeLessThan(4 * B * 1.1 + 4096);
    expect(await s.replicaEqualsSource()).toBe(true);

    // Nothing written: an empty log still goes out, so the recovery point advances.
    const [third] = await s.replicator.runOnce();
    expect(third!.stats!.changedBytes).toBe(0);
    expect((await s.state.readProgress('web01')).disks.disk0!.nextSequence).toBe(4);
  });

  it('replicates a disk grown while protected', async () => {
    const s = await setup();
    await s.replicator.runOnce();
    const d = await openDisk(s.source);
    await d.resize(48 * MiB);
    await d.write(45 * MiB, randomBytes(B));
    await d.close();
    const [r] = await s.replicator.runOnce();
    expect(r!.outcome).toBe('ok');
    expect(await s.replicaEqualsSource()).toBe(true);
  });

  it('a disk added to a protected VM gets its base over several cycles without holding back the other disk (daemon)', async () => {
    const s = await setup();
    await s.replicator.runOnce();
    // A 64 MiB disk of four chunks, added while protected.
    const added = join(s.root, 'added.raw');
    const d1 = await createDisk(added, 'raw', { virtualSize: 4 * DefaultChunkSize });
    for (let c = 0; c < 4; c++) await d1.write(c * DefaultChunkSize + 4096, randomBytes(MiB));
    await d1.close();
    const config = await s.state.readConfig('web01');
    await s.state.writeConfig({ ...config, disks: [...config.disks, { id: 'disk1', path: added }] });
    // A clock that moves on 100 s with every chunk: half the 300 s interval lasts two chunks.
    let t = Date.parse('2026-11-26T00:00:00Z');
    const replicator = new Replicator({ ...s.ctx, boundBases: true, parallelChunks: 1, now: () => new Date(t), onInitialProgress: () => { t += 100_000; } });
    const chunksDone = async () => {
      const bitmap = (await s.state.readProgress('web01')).disks.disk1!.initial.chunksDone;
      return [0, 1, 2, 3].filter((i) => hasBit(bitmap, i)).length;
    };

    await s.write(7 * MiB, randomBytes(B));
    const [first] = await replicator.runOnce();
    expect(first!.outcome).toBe('ok');
    expect(first!.stats!.logs).toBe(1); // disk0's log went out although disk1's base is not done
    expect(await s.replicaEqualsSource()).toBe(true);
    expect((await s.state.readProgress('web01')).disks.disk1!.initial.state).toBe('running');
    expect(await chunksDone()).toBe(2);

    t += 300_000;
    await s.write(9 * MiB, randomBytes(B));
    const [second] = await replicator.runOnce();
    // The last two chunks: the base completes, and disk1 ships its first log in the same cycle.
    expect(second!.stats!.logs).toBe(2);
    expect(await chunksDone()).toBe(4);
    expect((await s.state.readProgress('web01')).disks.disk1!.initial.state).toBe('done');
    expect(await s.replicaEqualsSource()).toBe(true);
    expect((await readFile(added)).equals(await readFile(s.service.replicaPath('web01', 'disk1')))).toBe(true);
  });

  it('leaves state untouched when the service does not answer, and the next cycle carries the changes', async () => {
    const s = await setup();
    await s.replicator.runOnce();
    const before = await readFile(join(s.state.vmDir('web01'), 'progress.json'), 'utf8');
    await s.write(MiB, randomBytes(B));
    s.service.down = true;
    const [failed] = await s.replicator.runOnce();
    expect(failed).toMatchObject({ outcome: 'failed', error: expect.stringMatching(/connection refused|ECONNREFUSED/) });
    // The replication position is untouched; only the failure is recorded, for status.
    const after = JSON.parse(await readFile(join(s.state.vmDir('web01'), 'progress.json'), 'utf8')) as VmProgress;
    const was = JSON.parse(before) as VmProgress;
    expect({ ...after, lastCycle: was.lastCycle, counts: was.counts }).toEqual(was);
    expect(after.lastCycle).toMatchObject({ outcome: 'failed', error: expect.stringMatching(/connection refused|ECONNREFUSED/) });
    expect(after.counts.failed).toBe(was.counts.failed + 1);
    s.service.down = false;
    await s.write(2 * MiB, randomBytes(B));
    const [ok] = await s.replicator.runOnce();
    expect(ok!.stats!.changedBytes).toBe(2 * B);
    expect(await s.replicaEqualsSource()).toBe(true);
  });

  it('ships a log sealed before a crash as it was, and never loses its changes', async () => {
    const s = await setup();
    await s.replicator.runOnce();
    await s.write(5 * MiB, randomBytes(B));
    // The commit never arrives (the agent dies after the upload): the log stays in flight.
    const commit = s.service.commitLog.bind(s.service);
    s.service.commitLog = async () => { throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }); };
    expect((await s.replicator.runOnce())[0]!.outcome).toBe('failed');
    const inflight = (await s.state.readProgress('web01')).disks.disk0!.inflight;
    expect(inflight).toHaveLength(1);
    const spooled = await readFile(inflight[0]!.spool);
    s.service.commitLog = commit;
    s.service.calls = [];
    const [ok] = await s.replicator.runOnce();
    expect(ok!.outcome).toBe('ok');
    // The stored object of that sequence is the spooled bytes, not a re-sealed log.
    const parts: Buffer[] = [];
    for await (const b of await s.service.store.get(`tenants/acme/vms/web01/disks/disk0/logs/${'1'.padStart(16, '0')}/${inflight[0]!.number.toString(16).padStart(16, '0')}.hrl`)) parts.push(b as Buffer);
    const stored = Buffer.concat(parts);
    expect(stored.equals(spooled)).toBe(true);
    expect(await s.replicaEqualsSource()).toBe(true);
    expect((await s.state.readProgress('web01')).disks.disk0!.inflight).toEqual([]);
  });

  it('resumes an interrupted initial copy without resending finished chunks (sealing threads)', async () => {
    const s = await setup({ size: 64 * MiB });
    s.ctx.sealThreads = 2;
    await s.write(40 * MiB, randomBytes(20 * MiB));
    s.ctx.parallelChunks = 1;
    const commitChunk = s.service.commitChunk.bind(s.service);
    let commits = 0;
    s.service.commitChunk = async (...args) => {
      if (++commits === 3) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
      return commitChunk(...args);
    };
    expect((await s.replicator.runOnce())[0]!.outcome).toBe('failed');
    const ip = (await s.state.readProgress('web01')).disks.disk0!.initial;
    expect(ip.state).toBe('running');
    expect(ip.bytesDone).toBe(2 * DefaultChunkSize);
    // The slots holding data (3 MiB, 20 MiB, 40 to 60 MiB): holes are no chunks.
    const chunks = chunkSlots(ip.virtualSize, ip.chunkSize, ip.slots).length;
    expect(chunks).toBe(5);
    s.service.calls = [];
    expect((await s.replicator.runOnce())[0]!.outcome).toBe('ok');
    // Chunk 2 (in flight) and the rest are committed; chunks 0 and 1 are not sent again.
    expect(s.service.calls.filter((c) => c === 'commitChunk')).toHaveLength(chunks - 2);
    expect(await s.replicaEqualsSource()).toBe(true);
  });

  it('seals a chunk again when the agent stopped before the chunk was stored', async () => {
    const s = await setup({ size: 64 * MiB });
    s.ctx.parallelChunks = 1;
    const upload = s.service.upload.bind(s.service);
    let uploads = 0;
    s.service.upload = async (...args) => {
      if (++uploads === 2) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
      return upload(...args);
    };
    expect((await s.replicator.runOnce())[0]!.outcome).toBe('failed');
    const p = await s.state.readProgress('web01');
    expect(p.disks.disk0!.inflight).toEqual([expect.objectContaining({ kind: 'chunk', number: 1, spool: '' })]);
    const ip = p.disks.disk0!.initial;
    s.service.calls = [];
    expect((await s.replicator.runOnce())[0]!.outcome).toBe('ok');
    // The lost chunk's commit is refused (no such object), so it is sealed and sent again with the rest.
    expect(s.service.calls.filter((c) => c === 'commitChunk')).toHaveLength(1 + chunkSlots(ip.virtualSize, ip.chunkSize, ip.slots).length - 1);
    expect(await s.replicaEqualsSource()).toBe(true);
  });

  it('with an existing replica sends only the blocks that differ', async () => {
    const s = await setup({ initial: { mode: 'existing' } });
    await s.service.registerVm('web01', { disks: [{ id: 'disk0', virtualSize: 40 * MiB, format: 'raw' }], frequency: '5m', history: 0, appConsistentEvery: 0, compression: 'zstd' });
    // The hoster holds an older copy: the source as it is, then the source moves on.
    await writeFile(s.service.replicaPath('web01', 'disk0'), await readFile(s.source));
    const d = s.service.vms.get('web01')!.get('disk0')!;
    d.baseComplete = true;
    d.generation = 1;
    await s.write(10 * MiB, randomBytes(100));
    await s.write(25 * MiB, Buffer.alloc(MiB));
    s.ctx.state = s.state;
    const [r] = await s.replicator.runOnce();
    expect(r!.outcome).toBe('ok');
    const ip = (await s.state.readProgress('web01')).disks.disk0!.initial;
    expect(ip.mode).toBe('delta');
    expect(ip.generation).toBe(2);
    expect(ip.bytesSent).toBeLessThan(2 * MiB);
    expect(await s.replicaEqualsSource()).toBe(true);
  });

  it('periodic verification repairs a block the tracker missed, sending only that block', async () => {
    const s = await setup();
    await s.replicator.runOnce();
    // A change the scan tracker cannot see (as a digest collision would hide it): the replica differs.
    const replica = s.service.replicaPath('web01', 'disk0');
    const bytes = await readFile(replica);
    randomBytes(100).copy(bytes, 12 * MiB);
    await writeFile(replica, bytes);
    expect(await s.replicaEqualsSource()).toBe(false);
    s.ctx.verifyEveryMs = 0;
    const [r] = await s.replicator.runOnce();
    expect(r!.outcome).toBe('ok');
    const p = await s.state.readProgress('web01');
    expect(p.disks.disk0!.initial).toMatchObject({ mode: 'delta', generation: 2, state: 'done' });
    expect(p.disks.disk0!.initial.bytesSent).toBeLessThan(MiB / 2); // one 1 MiB block, compressed zeros
    expect(p.lastVerifiedAt).not.toBeNull();
    expect(await s.replicaEqualsSource()).toBe(true);
  });

  it('writes the sealed chunks and a manifest to media', async () => {
    const s = await setup();
    const media = join(s.root, 'usb');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(media);
    await s.state.writeConfig({ ...(await s.state.readConfig('web01')), initial: { mode: 'media', dir: media } });
    const replicator = new Replicator(s.ctx);
    await replicator.cycle('web01');
    const base = join(media, 'lifeboat-media', 'acme', 'web01', 'disk0', '0000000000000001');
    const manifest = JSON.parse(await readFile(join(base, 'manifest.json'), 'utf8')) as { complete: boolean; chunks: unknown[]; chunkCount: number };
    expect(manifest.complete).toBe(true);
    expect(manifest.chunks).toHaveLength(manifest.chunkCount);
    // A chunk for each slot holding data (3 MiB and 20 MiB); the holes between are none.
    expect((await readdir(base)).filter((f) => f.endsWith('.chunk'))).toHaveLength(2);
    expect(s.service.calls).not.toContain('commitChunk');
    // No log goes out before the hoster imported the base: the changes stay tracked.
    expect(s.service.calls).not.toContain('commitLog');
  });

  it('runs the snapshot hooks for an application-consistent point; a failing hook gives a crash-consistent one', async () => {
    const marks = join(dir, `hooks-${n}`);
    const s = await setup({ config: { appConsistentEveryMs: 3_600_000, preSnapshot: `echo pre >> ${marks}`, postSnapshot: `echo post >> ${marks}` } });
    const [r] = await s.replicator.runOnce();
    expect(r!.stats!.consistency).toBe('application');
    expect(await readFile(marks, 'utf8')).toBe('pre\npost\n');
    // Not due again within the hour.
    expect((await s.replicator.runOnce())[0]!.stats!.consistency).toBe('crash');
    await s.state.writeConfig({ ...(await s.state.readConfig('web01')), appConsistentEveryMs: 3_600_000, preSnapshot: 'exit 3' });
    s.ctx.now = () => new Date(Date.now() + 2 * 3_600_000);
    const [failed] = await s.replicator.runOnce();
    expect(failed!.outcome).not.toBe('failed');
    expect(failed!.stats!.consistency).toBe('crash');
    expect(failed!.stats!.warnings.join()).toMatch(/pre-snapshot hook failed.*exited 3/);
    expect(await s.replicaEqualsSource()).toBe(true);
  });

  it('the daemon runs cycles as a timer around cycle() and stops when told', async () => {
    const s = await setup();
    const controller = new AbortController();
    const cycles: string[] = [];
    const logger = { ...silentLogger, info: (obj: object, msg?: string) => { if (msg === 'cycle') { cycles.push(JSON.stringify(obj)); controller.abort(); } } };
    await runDaemon(new Replicator({ ...s.ctx, logger }), { logger, signal: controller.signal });
    expect(cycles).toHaveLength(1);
    expect(await s.replicaEqualsSource()).toBe(true);
  });

  it('the daemon runs VMs independently: one held up does not hold back another', async () => {
    const s = await setup();
    const other = join(s.root, 'other.raw');
    await (await createDisk(other, 'raw', { virtualSize: 8 * MiB })).close();
    await s.state.writeConfig({ ...(await s.state.readConfig('web01')), name: 'db01', disks: [{ id: 'disk0', path: other }] });
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => { release = r; });
    const register = s.service.registerVm.bind(s.service);
    s.service.registerVm = async (vm, r) => {
      if (vm === 'db01') await gate; // db01 is stuck until web01 has finished a cycle
      return register(vm, r);
    };
    const controller = new AbortController();
    const order: string[] = [];
    const logger = { ...silentLogger, info: (obj: object, msg?: string) => {
      if (msg !== 'cycle') return;
      order.push((obj as { vm: string }).vm);
      if (order.length === 1) release();
      else controller.abort();
    } };
    await runDaemon(new Replicator({ ...s.ctx, logger }), { logger, signal: controller.signal });
    expect(order).toEqual(['web01', 'db01']);
  });

  it('skips paused VMs', async () => {
    const s = await setup({ config: { paused: true } });
    expect(await s.replicator.runOnce()).toEqual([{ vm: 'web01', outcome: 'skipped' }]);
    expect(s.service.calls).toEqual([]);
  });
});
