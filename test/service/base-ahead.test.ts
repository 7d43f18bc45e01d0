/**
 * A full base's chunks written into its new layer while the rest arrive (service/workers/base-ahead.ts),
 * driven through the agent protocol and Merger.merge(): nothing of the replica's state moves before
 * the base is complete, the completed base goes on from the chunks written ahead, a record that lags
 * the layer (a killed run) or a layer without its record starts from where they say, and a tampered
 * chunk or a delta base is never written ahead. Each replica is compared with the agent's disk.
 */
import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Merger } from '../../service/workers/merger.js';
import { openDisk } from '../../shared/disk/index.js';
import { SimAgent, scribble } from './agent-sim.js';
import type { MergeHarness } from './helpers.js';
import { enrolledAgent, mergeHarness } from './helpers.js';

const MiB = 1 << 20;
const Size = 4 * MiB;
let h: MergeHarness | undefined;
let svc: MergeHarness['svc'];
let agent: SimAgent;
let merger: Merger;

beforeAll(async () => {
  h = await mergeHarness();
  ({ svc, merger } = h);
  agent = new SimAgent(svc, await enrolledAgent(svc, 'acme', '*.acme.example', 'hv1.acme.example'), 'app');
  await agent.register(['d0', 'd1', 'd2', 'd3', 'd4'].map((id) => ({ id, virtualSize: Size })));
});
afterAll(async () => {
  await h?.close();
});

const dirOf = (disk: string) => join(svc.ctx.config.replicaRoot, 'acme', 'app', disk);
const record = async (disk: string, generation: number) => JSON.parse(await readFile(join(dirOf(disk), `base-g${generation}.vhdx.ahead`), 'utf8')) as { chunks: number };
const files = async (disk: string) => (await readdir(dirOf(disk))).filter((f) => f.startsWith('base-g')).sort();

/** Six overlapping chunks over a fresh source (a later chunk must win, as in chunk order). */
function plan(source: Buffer) {
  return Array.from({ length: 6 }, (_, i) => scribble(source, [[i * (MiB / 2), MiB]]));
}

describe('a full base written ahead of its completion', () => {
  it('writes committed chunks into the new layer in order, moves nothing else, and completes from there', async () => {
    const source = Buffer.alloc(Size);
    const chunks = plan(source);
    // Chunks 0, 1 and 3 committed: only 0 and 1 follow without a gap.
    for (const i of [0, 1, 3]) await agent.commitChunk('d0', 1, 'full', i, source, chunks[i]!);
    await merger.merge();
    expect(await record('d0', 1)).toMatchObject({ generation: 1, chunks: 2 });
    expect(await agent.diskState('d0')).toMatchObject({ generation: 0, baseComplete: false });
    for (const i of [2, 4]) await agent.commitChunk('d0', 1, 'full', i, source, chunks[i]!);
    await merger.merge();
    expect(await record('d0', 1)).toMatchObject({ chunks: 5 });
    const layer = await stat(join(dirOf('d0'), 'base-g1.vhdx'));
    await agent.commitChunk('d0', 1, 'full', 5, source, chunks[5]!);
    await agent.completeBase('d0', 1, 'full', 6);
    await merger.merge();
    expect(await agent.diskState('d0')).toMatchObject({ generation: 1, baseComplete: true, state: 'replicating' });
    expect((await agent.replica('d0')).equals(source)).toBe(true);
    expect(await files('d0')).toEqual(['base-g1.vhdx']);
    // The same file went on (not made again from chunk 0).
    expect((await stat(join(dirOf('d0'), 'base-g1.vhdx'))).ino).toBe(layer.ino);
  });

  it('goes on from a record that lags the layer (a run killed after writing past it), and starts over without one', async () => {
    const source = Buffer.alloc(Size);
    const chunks = plan(source);
    for (let i = 0; i < 4; i++) await agent.commitChunk('d1', 1, 'full', i, source, chunks[i]!);
    await merger.merge();
    expect(await record('d1', 1)).toMatchObject({ chunks: 4 });
    // As if the run that wrote chunks 2 and 3 was killed before its record: they are written again.
    const path = join(dirOf('d1'), 'base-g1.vhdx.ahead');
    await writeFile(path, JSON.stringify({ ...(await record('d1', 1)), chunks: 2 }));
    const torn = await openDisk(join(dirOf('d1'), 'base-g1.vhdx'));
    await torn.write(MiB, randomBytes(MiB / 2)); // chunk 2's range, half rewritten
    await torn.flush();
    await torn.close();
    for (let i = 4; i < 6; i++) await agent.commitChunk('d1', 1, 'full', i, source, chunks[i]!);
    await agent.completeBase('d1', 1, 'full', 6);
    await merger.merge();
    expect((await agent.replica('d1')).equals(source)).toBe(true);

    // A layer left without its record (killed before its first record) is swept and the base built from chunk 0.
    const next = Buffer.alloc(Size);
    const more = plan(next);
    for (let i = 0; i < 3; i++) await agent.commitChunk('d1', 2, 'full', i, next, more[i]!);
    await merger.merge();
    await rm(join(dirOf('d1'), 'base-g2.vhdx.ahead'));
    await writeFile(join(dirOf('d1'), 'base-g2.vhdx'), 'garbage from a killed run');
    for (let i = 3; i < 6; i++) await agent.commitChunk('d1', 2, 'full', i, next, more[i]!);
    await agent.completeBase('d1', 2, 'full', 6);
    await merger.merge();
    expect(await agent.diskState('d1')).toMatchObject({ generation: 2, baseComplete: true, state: 'replicating' });
    expect((await agent.replica('d1')).equals(next)).toBe(true);
    expect(await files('d1')).toEqual(['base-g2.vhdx']);
  });

  it('drops a layer under way whose chunk fails its checks; the completed base is refused as before', async () => {
    const source = Buffer.alloc(Size);
    const chunks = plan(source);
    for (let i = 0; i < 3; i++) await agent.commitChunk('d2', 1, 'full', i, source, chunks[i]!);
    const [row] = await svc.ctx.db.query<{ key: string }>(`SELECT key FROM logs WHERE disk = 'd2' AND kind = 'chunk' AND generation = 1 AND sequence = 1`);
    const sealed = Buffer.concat(await (await svc.ctx.store.get(row!.key)).toArray() as Buffer[]);
    sealed[Math.floor(sealed.length / 2)]! ^= 0x10;
    await svc.ctx.store.put(row!.key, sealed);
    await merger.merge();
    expect(await files('d2')).toEqual([]);
    for (let i = 3; i < 6; i++) await agent.commitChunk('d2', 1, 'full', i, source, chunks[i]!);
    await agent.completeBase('d2', 1, 'full', 6);
    await merger.merge();
    const d = await agent.diskState('d2');
    expect(d.state).toBe('resync_required');
    expect(String(d.resyncReason)).toMatch(/base of generation 1 refused/);
    expect(await files('d2')).toEqual([]);
  });

  it('never writes a delta base ahead: the live replica changes only when the base is complete', async () => {
    const source = Buffer.alloc(Size);
    await agent.commitBase('d3', 1, 'full', source, [scribble(source, [[0, MiB]])]);
    await merger.merge();
    const before = Buffer.from(source);
    expect((await agent.replica('d3')).equals(before)).toBe(true);
    const delta = [scribble(source, [[0, MiB]]), scribble(source, [[2 * MiB, MiB]])];
    await agent.commitChunk('d3', 2, 'delta', 0, source, delta[0]!);
    await merger.merge();
    expect(await files('d3')).toEqual(['base-g1.vhdx']);
    expect((await agent.replica('d3')).equals(before)).toBe(true);
    await agent.commitChunk('d3', 2, 'delta', 1, source, delta[1]!);
    await agent.completeBase('d3', 2, 'delta', 2);
    await merger.merge();
    expect(await agent.diskState('d3')).toMatchObject({ generation: 2, baseComplete: true, state: 'replicating' });
    expect((await agent.replica('d3')).equals(source)).toBe(true);
  });
});
