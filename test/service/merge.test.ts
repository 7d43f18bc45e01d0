/**
 * Merging committed logs into VHDX replicas, driven through the agent protocol and Merger.merge() (no
 * timers): an initial full base, logs committed out of order applied in order, duplicates ignored,
 * a crash between state.json and the catalog recovered from state.json, and tampered or replayed
 * logs refused with nothing applied. The test keeps a reference copy of each disk to compare with.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BaseStageAhead } from '../../service/workers/base-job.js';
import type { Merger } from '../../service/workers/merger.js';
import { stageBudget } from '../../shared/log/stage.js';
import { referee } from '../helpers.js';
import { SimAgent, scribble } from './agent-sim.js';
import type { MergeHarness, TestEnv } from './helpers.js';
import { enrolledAgent, mergeHarness } from './helpers.js';

const MiB = 1 << 20;
const Size = 4 * MiB;
let h: MergeHarness | undefined;
let env: TestEnv;
let svc: MergeHarness['svc'];
let agent: SimAgent;
let merger: Merger;

beforeAll(async () => {
  h = await mergeHarness();
  ({ env, svc, merger } = h);
  agent = new SimAgent(svc, await enrolledAgent(svc, 'acme', '*.acme.example', 'hv1.acme.example'), 'db');
  await agent.register([{ id: 'disk0', virtualSize: Size }, { id: 'disk1', virtualSize: Size }]);
});
afterAll(async () => {
  await h?.close();
});

const logRows = (disk: string, above = 0) => svc.ctx.db.query<{ sequence: number; status: string }>(
  `SELECT sequence, status FROM logs WHERE disk = $1 AND kind = 'log' AND sequence > $2 ORDER BY sequence`, [disk, above]);

describe('merge', () => {
  const source = Buffer.alloc(Size); // the agent's disk0 as it evolves
  const reference: Buffer[] = []; // source after each applied sequence

  it('applies an initial full copy made of chunks as generation 1', async () => {
    const c0 = scribble(source, [[0, MiB]]);
    const c1 = scribble(source, [[2 * MiB, 512 * 1024]]);
    const early = await agent.call('POST', '/v1/vms/db/disks/disk0/initial', { generation: 1, mode: 'full', chunkCount: 1, consistency: 'crash', createdAt: new Date().toISOString() });
    expect(early.body.error?.reason).toBe('chunks_missing');
    await agent.commitBase('disk0', 1, 'full', source, [c0, c1]);
    await merger.merge();
    expect(await agent.diskState('disk0')).toMatchObject({ generation: 1, baseComplete: true, appliedSequence: 0, state: 'replicating' });
    expect((await agent.replica('disk0')).equals(source)).toBe(true);
    reference[0] = Buffer.from(source);
  });

  it('applies logs committed out of order strictly in order; a gap waits', async () => {
    const logs: Buffer[] = [];
    for (let seq = 1; seq <= 3; seq++) {
      // Overlapping writes, so applying in the wrong order gives different bytes.
      const ext = scribble(source, [[MiB / 2, MiB], [3 * MiB + seq * 4096, 4096]]);
      logs[seq] = await agent.sealed('disk0', 1, seq, source, ext);
      reference[seq] = Buffer.from(source);
    }
    await agent.commitLog('disk0', 3, logs[3]!);
    await agent.commitLog('disk0', 1, logs[1]!);
    await merger.merge();
    expect(await agent.diskState('disk0')).toMatchObject({ appliedSequence: 1, pendingLogs: 1 });
    expect((await agent.replica('disk0')).equals(reference[1]!)).toBe(true);
    await agent.commitLog('disk0', 2, logs[2]!);
    await merger.merge();
    expect(await agent.diskState('disk0')).toMatchObject({ appliedSequence: 3, pendingLogs: 0, state: 'replicating' });
    expect((await agent.replica('disk0')).equals(reference[3]!)).toBe(true);
    // qemu-img, the independent referee, reads the VHDX replica as the same bytes.
    const dir = join(env.config.replicaRoot, 'acme', 'db', 'disk0');
    const state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as { layers: string[] };
    await writeFile(join(env.dir, 'reference.raw'), reference[3]!);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', join(dir, state.layers.at(-1)!), join(env.dir, 'reference.raw')]);
  });

  it('ignores duplicates, including logs the catalog lost track of after a crash', async () => {
    const row = (await svc.ctx.db.query<{ key: string; size: number; sha256: string }>(`SELECT key, size, sha256 FROM logs WHERE disk = 'disk0' AND kind = 'log' AND sequence = 3`))[0]!;
    const dup = await agent.call('POST', '/v1/vms/db/disks/disk0/commits', { generation: 1, sequence: 3, ...row, consistency: 'crash', createdAt: new Date().toISOString() });
    expect(dup.body.status).toBe('duplicate');
    // As if the worker died after writing state.json but before updating the catalog.
    await svc.ctx.db.query(`UPDATE logs SET status = 'pending' WHERE disk = 'disk0' AND sequence IN (2, 3)`);
    await svc.ctx.db.query(`UPDATE disks SET applied_sequence = 1 WHERE id = 'disk0'`);
    await merger.merge();
    expect(await logRows('disk0')).toEqual([{ sequence: 1, status: 'applied' }, { sequence: 2, status: 'skipped' }, { sequence: 3, status: 'skipped' }]);
    expect(await agent.diskState('disk0')).toMatchObject({ appliedSequence: 3 });
    expect((await agent.replica('disk0')).equals(reference[3]!)).toBe(true);
  });

  it('refuses a tampered log: resynchronization required, nothing of it applied, later logs wait', async () => {
    const before = Buffer.from(source);
    const bytes = await agent.sealed('disk0', 1, 4, source, scribble(source, [[0, 2 * MiB]]));
    const obj = await agent.commitLog('disk0', 4, bytes);
    const flipped = Buffer.from(bytes);
    flipped[Math.floor(flipped.length * 0.75)]! ^= 0x40; // deep in the log: earlier frames verify
    await svc.ctx.store.put(obj.key, flipped);
    await agent.commitLog('disk0', 5, await agent.sealed('disk0', 1, 5, source, scribble(source, [[0, 4096]])));
    await merger.merge();
    const d = await agent.diskState('disk0');
    expect(d).toMatchObject({ state: 'resync_required', appliedSequence: 3, expect: { action: 'resync' } });
    expect(String(d.resyncReason)).toMatch(/log 1\/4/);
    expect((await agent.replica('disk0')).equals(before)).toBe(true);
    expect((await agent.call('GET', '/v1/vms/db')).body.health).toBe('critical');
    expect(await logRows('disk0', 3)).toEqual([{ sequence: 4, status: 'rejected' }, { sequence: 5, status: 'pending' }]);
  });

  it('leaves resync_required with a delta base of a new generation', async () => {
    const changed = scribble(source, [[0, 2 * MiB]]);
    await agent.commitBase('disk0', 2, 'delta', source, [changed]);
    await merger.merge();
    expect(await agent.diskState('disk0')).toMatchObject({ state: 'replicating', generation: 2, appliedSequence: 0, resyncReason: null });
    expect((await agent.replica('disk0')).equals(source)).toBe(true);
    const stale = await agent.call('POST', '/v1/vms/db/disks/disk0/grants', { kind: 'log', generation: 1, sequence: 6 });
    expect(stale.body.error?.reason).toBe('stale_generation');
  });

  it('applies a run of logs in one batch and records exactly those before a tampered one', async () => {
    let reference3 = Buffer.alloc(0);
    for (let seq = 1; seq <= 5; seq++) {
      const bytes = await agent.sealed('disk0', 2, seq, source, scribble(source, [[seq * 4096, 4096], [MiB / 2 + seq * 8192, MiB]]));
      if (seq === 3) reference3 = Buffer.from(source);
      const obj = await agent.commitLog('disk0', seq, bytes, 2);
      if (seq === 4) {
        const flipped = Buffer.from(bytes);
        flipped[Math.floor(flipped.length / 2)]! ^= 0x01;
        await svc.ctx.store.put(obj.key, flipped);
      }
    }
    await merger.merge();
    expect(await agent.diskState('disk0')).toMatchObject({ state: 'resync_required', generation: 2, appliedSequence: 3 });
    expect((await agent.replica('disk0')).equals(reference3)).toBe(true);
    const dir = join(env.config.replicaRoot, 'acme', 'db', 'disk0');
    expect(JSON.parse(await readFile(join(dir, 'state.json'), 'utf8'))).toMatchObject({ generation: 2, appliedSequence: 3, state: 'resync_required' });
    const rows = await svc.ctx.db.query<{ sequence: number; status: string }>(`SELECT sequence, status FROM logs WHERE disk = 'disk0' AND kind = 'log' AND generation = 2 ORDER BY sequence`);
    expect(rows.map((r) => [Number(r.sequence), r.status])).toEqual([[1, 'applied'], [2, 'applied'], [3, 'applied'], [4, 'rejected'], [5, 'pending']]);
  });

  it('refuses a log replayed under another sequence', async () => {
    const src1 = Buffer.alloc(Size);
    await agent.commitBase('disk1', 1, 'full', src1, [scribble(src1, [[0, 65536]])]);
    await merger.merge();
    const base = await agent.replica('disk1');
    expect(base.equals(src1)).toBe(true);
    await agent.commitLog('disk1', 1, await agent.sealed('disk1', 1, 2, src1, scribble(src1, [[MiB, 65536]]))); // sealed as 2, committed as 1
    await merger.merge();
    const d = await agent.diskState('disk1');
    expect(d.state).toBe('resync_required');
    expect(String(d.resyncReason)).toMatch(/sequence/);
    expect((await agent.replica('disk1')).equals(base)).toBe(true);
  });

  it('applies a full base of more chunks than it stages ahead, in order; a tampered chunk refuses it and releases what was staged', async () => {
    const src = Buffer.alloc(Size);
    // Overlapping chunks: the later one must win, as in chunk order.
    const chunks = Array.from({ length: BaseStageAhead + 3 }, (_, i) => scribble(src, [[i * (MiB / 2), MiB]]));
    await agent.commitBase('disk1', 2, 'full', src, chunks);
    await merger.merge();
    expect(await agent.diskState('disk1')).toMatchObject({ generation: 2, baseComplete: true, state: 'replicating' });
    expect((await agent.replica('disk1')).equals(src)).toBe(true);

    const applied = Buffer.from(src);
    const next = Buffer.from(src);
    await agent.commitBase('disk1', 3, 'full', next, Array.from({ length: BaseStageAhead + 3 }, (_, i) => scribble(next, [[i * (MiB / 2), MiB]])));
    const [row] = await svc.ctx.db.query<{ key: string }>(`SELECT key FROM logs WHERE disk = 'disk1' AND kind = 'chunk' AND generation = 3 AND sequence = 1`);
    const sealed = Buffer.concat(await (await svc.ctx.store.get(row!.key)).toArray() as Buffer[]);
    sealed[Math.floor(sealed.length / 2)]! ^= 0x10;
    await svc.ctx.store.put(row!.key, sealed);
    const budget = stageBudget.used;
    await merger.merge();
    const d = await agent.diskState('disk1');
    expect(d.state).toBe('resync_required');
    expect(String(d.resyncReason)).toMatch(/base of generation 3 refused/);
    expect((await agent.replica('disk1')).equals(applied)).toBe(true);
    expect(stageBudget.used).toBe(budget);
  });
});
