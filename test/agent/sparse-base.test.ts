/**
 * The initial copy of large sparse disks costs what they hold: a 64 GiB raw file and a 64 GiB VHDX,
 * each with a few MiB of data, are read and sent as the 8 MiB slots that hold data (a raw file's
 * SEEK_DATA ranges, a VHDX's allocated blocks), not as 8,192 chunks each. Checked by what went out
 * (the chunks the service recorded, the bytes the agent sent), never by a timing; the replica, as
 * the real service merged and exported it, equals the source by qemu-img's judgement (the VHDX's
 * through a raw twin given the same writes). A write into a hole after the base is shipped by the
 * next cycle as exactly what was written (the holes' map digests are those of zeros). And a base
 * planned in one cycle but read in a later one is planned again, so it holds what was written into
 * its holes in between.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enroll } from '../../agent/enroll/enroll.js';
import { ProgressBook, silentLogger } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import { DefaultChunkSize, chunkSlots, runBase, startBase } from '../../agent/replicate/initial.js';
import type { VmConfig } from '../../agent/state/schema.js';
import { AgentState } from '../../agent/state/store.js';
import { generateKeyPair } from '../../shared/crypto/keys.js';
import { createDisk, openDisk } from '../../shared/disk/index.js';
import { FileStore } from '../../shared/objectstore/file.js';
import { referee } from '../helpers.js';
import type { MergeHarness } from '../service/helpers.js';
import { mergeHarness, operator } from '../service/helpers.js';
import { LocalService } from './local-service.js';

const KiB = 1024;
const MiB = 1 << 20;
const GiB = 2 ** 30;
const Size = 64 * GiB;

let h: MergeHarness | undefined;
beforeAll(async () => {
  h = await mergeHarness();
  await operator(h.svc, 'POST', '/v1/tenants', { name: 'acme' });
  await operator(h.svc, 'POST', '/v1/tenants/acme/authorizations', { pattern: '*.acme.test' });
});
afterAll(async () => {
  await h?.close();
});

function vmConfig(name: string, disks: string[]): VmConfig {
  return {
    version: 1, name, disks: disks.map((path, i) => ({ id: `disk${i}`, path })), frequencyMs: 30_000, history: 0, appConsistentEveryMs: null, preSnapshot: null,
    postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null, paused: false, createdAt: new Date().toISOString(),
  };
}

/** The replica, exported as a sparse raw file, compared by qemu-img with a raw file of the source's contents. */
async function expectReplicaEquals(vm: string, disk: string, source: string, name: string): Promise<void> {
  const out = join(h!.env.dir, `${name}.raw`);
  const r = await operator(h!.svc, 'POST', `/v1/tenants/acme/vms/${vm}/exports`, { disk, format: 'raw', path: out });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  await referee('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', source, out]);
}

describe('initial copy of a sparse disk', () => {
  it('reads and sends only the slots of a 64 GiB raw file and a 64 GiB VHDX that hold data; the replicas equal the sources', async () => {
    const { env, svc, merger } = h!;
    const state = new AgentState(join(env.dir, 'agent'));
    const { token } = (await operator<{ token: string }>(svc, 'POST', '/v1/tenants/acme/tokens', {})).body;
    await enroll(state, { serviceUrl: svc.agentUrl, token, serverName: 'hv01.acme.test' });

    // The raw file: data in four 8 MiB slots, one of them written zeros (allocated, so read, and sent as nothing).
    const raw = join(env.dir, 'big.raw');
    const r = await open(raw, 'w');
    await r.truncate(Size);
    await r.write(randomBytes(2 * MiB), 0, 2 * MiB, MiB);
    await r.write(randomBytes(MiB), 0, MiB, 20 * GiB + 5);
    await r.write(Buffer.alloc(4 * MiB), 0, 4 * MiB, 30 * GiB);
    await r.write(randomBytes(512 * KiB), 0, 512 * KiB, Size - 512 * KiB);
    await r.close();
    expect((await stat(raw)).blocks * 512).toBeLessThan(16 * MiB);
    // The VHDX: two of qemu's blocks allocated (each a whole number of 8 MiB slots).
    const vhdx = join(env.dir, 'big.vhdx');
    // Its twin, a sparse raw file given the same writes: qemu-img compare reads a VHDX's holes (qemu's
    // VHDX driver reports no block status), 64 GiB of them, where it skips a raw file's.
    const twin = join(env.dir, 'big-vhdx-twin.raw');
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', vhdx, '64G']);
    await referee('qemu-img', ['create', '-q', '-f', 'raw', twin, '64G']);
    const writeBoth = async (...ops: string[]) => {
      for (const [path, format] of [[vhdx, 'vhdx'], [twin, 'raw']] as const) await referee('qemu-io', ['-f', format, ...ops.flatMap((o) => ['-c', o]), path]);
    };
    await writeBoth('write -P 0x5a 3M 1M', 'write -P 0x21 40G 64k');
    const v = await openDisk(vhdx, { readOnly: true });
    const perBlock = v.blockSize! / DefaultChunkSize;
    await v.close();
    expect(Number.isInteger(perBlock)).toBe(true);
    const vhdxSlots = [0, 40 * GiB / DefaultChunkSize].flatMap((s) => Array.from({ length: perBlock }, (_, i) => s + i));

    await state.writeConfig(vmConfig('big', [raw, vhdx]));
    const replicator = new Replicator({ ...(await engineContext(state, silentLogger)), retry: { attempts: 1 } });
    expect((await replicator.runOnce())[0]).toMatchObject({ outcome: 'ok' });

    const chunks = await svc.ctx.db.query<{ disk: string; n: number }>(`SELECT disk, count(*)::int AS n FROM logs WHERE tenant = 'acme' AND vm = 'big' AND kind = 'chunk' GROUP BY disk ORDER BY disk`);
    expect(chunks).toEqual([{ disk: 'disk0', n: 4 }, { disk: 'disk1', n: vhdxSlots.length }]);
    const p = await state.readProgress('big');
    const raw0 = p.disks.disk0!.initial;
    expect(chunkSlots(raw0.virtualSize, raw0.chunkSize, raw0.slots)).toEqual([0, 20 * GiB / DefaultChunkSize, 30 * GiB / DefaultChunkSize, Size / DefaultChunkSize - 1]);
    expect(raw0).toMatchObject({ state: 'done', bytesTotal: 4 * DefaultChunkSize, bytesDone: 4 * DefaultChunkSize });
    // 3.5 MiB of random bytes and the framing; the written zeros and the holes cost nothing.
    expect(raw0.bytesSent).toBeGreaterThan(3.5 * MiB);
    expect(raw0.bytesSent).toBeLessThan(3.5 * MiB + 64 * KiB);
    const vhdx1 = p.disks.disk1!.initial;
    expect(chunkSlots(vhdx1.virtualSize, vhdx1.chunkSize, vhdx1.slots)).toEqual(vhdxSlots);
    expect(vhdx1.bytesSent).toBeLessThan(MiB + 64 * KiB);

    await merger.merge();
    await expectReplicaEquals('big', 'disk0', raw, 'raw-after-base');
    await expectReplicaEquals('big', 'disk1', twin, 'vhdx-after-base');

    // Writes into holes: the next cycle ships exactly them.
    const w = await openDisk(raw);
    await w.write(45 * GiB, randomBytes(64 * KiB));
    await w.close();
    await writeBoth('write -P 0x77 50G 128k');
    const [cycle] = await replicator.runOnce();
    expect(cycle).toMatchObject({ outcome: 'ok', stats: { logs: 2, changedBytes: 64 * KiB + 128 * KiB } });
    await merger.merge();
    await expectReplicaEquals('big', 'disk0', raw, 'raw-after-log');
    await expectReplicaEquals('big', 'disk1', twin, 'vhdx-after-log');
  }, 600_000);

  it('plans a base again when its first chunk is read in a later cycle than its plan, so it holds what was written into its holes meanwhile', async () => {
    const root = join(h!.env.dir, 'replan');
    await mkdir(join(root, 'replicas'), { recursive: true });
    const keys = await generateKeyPair();
    const service = new LocalService(new FileStore(join(root, 'store')), 'acme', keys.privateKey, join(root, 'replicas'));
    const source = join(root, 'source.raw');
    const d = await createDisk(source, 'raw', { virtualSize: 64 * MiB });
    await d.write(0, randomBytes(MiB));
    const state = new AgentState(join(root, 'state'));
    await state.init();
    const config = vmConfig('web01', [source]);
    await state.writeConfig(config);
    const ctx = { state, transport: service, tenant: 'acme', recipient: keys.publicKey, logger: silentLogger, now: () => new Date(), retry: { attempts: 1 }, sealThreads: 0 };
    await service.registerVm('web01', { disks: [{ id: 'disk0', virtualSize: 64 * MiB, format: 'raw' }], frequency: '30s', history: 0, appConsistentEvery: 0, compression: 'zstd' });
    const book = await ProgressBook.load(state, 'web01');
    book.progress.disks.disk0 = {
      generation: 0, nextSequence: 1, virtualSize: 64 * MiB, resyncReason: null, inflight: [],
      initial: { state: 'pending', mode: 'full', generation: 0, virtualSize: 0, chunkSize: DefaultChunkSize, chunksDone: '', bytesTotal: 0, bytesDone: 0, bytesSent: 0 },
    };

    await startBase(ctx, book, 'disk0', d, 'full', 0, { id: 10, capturedMs: Date.now() });
    const planned = book.progress.disks.disk0.initial;
    expect(chunkSlots(planned.virtualSize, planned.chunkSize, planned.slots)).toEqual([0]);
    // Written into a hole of the plan before any chunk was read, in the next cycle.
    await d.write(50 * MiB, randomBytes(MiB));
    await runBase(ctx, book, config, 'disk0', d, undefined, { id: 11, capturedMs: Date.now() });
    await d.close();
    const ip = (await state.readProgress('web01')).disks.disk0!.initial;
    expect(ip).toMatchObject({ state: 'done', cycle: 11 });
    expect(chunkSlots(ip.virtualSize, ip.chunkSize, ip.slots)).toEqual([0, 6]);
    expect((await readFile(service.replicaPath('web01', 'disk0'))).equals(await readFile(source))).toBe(true);
  });
});
