/**
 * Recovery points as layers of the VHDX chain, driven by an injected clock (no sleeping): one per hour
 * for a VM with history N, each reading as the disk did when it was made, pruned after N hours by
 * merging its layer into the base, while the latest keeps replicating on top.
 */
import { copyFile, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Merger } from '../../service/workers/merger.js';
import { Pointer } from '../../service/workers/points-job.js';
import { mergeChild } from '../../shared/disk/ops/merge.js';
import { listVms } from '../../service/catalog/vms.js';
import { listEvents } from '../../service/catalog/webhooks.js';
import { readWholeImage, referee, TestRedisUrl } from '../helpers.js';
import { SimAgent, scribble } from './agent-sim.js';
import type { TestEnv } from './helpers.js';
import { enrolledAgent, operator, testEnv, testService } from './helpers.js';

const MiB = 1 << 20;
const Hour = 3_600_000;
const t0 = Date.parse('2026-11-25T00:00:00.000Z');
let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let agent: SimAgent;
let redis: Redis;
let merger: Merger;
let pointer: Pointer;
const source = Buffer.alloc(4 * MiB);
let seq = 0;

async function cycle(consistency: 'crash' | 'application' = 'crash'): Promise<void> {
  seq++;
  const bytes = await agent.sealed('d0', 1, seq, source, scribble(source, [[(seq % 4) * MiB, 256 * 1024]]));
  const obj = await agent.upload('d0', { kind: 'log', generation: 1, sequence: seq }, bytes);
  expect((await agent.call('POST', '/v1/vms/web/disks/d0/commits', { generation: 1, sequence: seq, ...obj, consistency })).status).toBe(202);
  await merger.merge();
}

const dir = () => join(env.config.replicaRoot, 'acme', 'web', 'd0');
const state = async () => JSON.parse(await readFile(join(dir(), 'state.json'), 'utf8')) as { layers: string[]; points: { name: string; layer: string; consistency: string }[] };

function contentAt(layer: string): Promise<Buffer> {
  return readWholeImage(join(dir(), layer));
}

beforeAll(async () => {
  env = await testEnv((c) => {
    c.replicaFormat = 'vhdx';
  });
  svc = await testService(env);
  agent = new SimAgent(svc, await enrolledAgent(svc, 'acme', '*', 'hv1.acme.example'), 'web');
  const r = await agent.call('PUT', '/v1/vms/web', { disks: [{ id: 'd0', virtualSize: 4 * MiB, format: 'vhdx' }], frequency: '5m', history: 2, appConsistentEvery: 1, compression: 'lz4' });
  expect(r.status).toBe(201);
  redis = new Redis(TestRedisUrl, { maxRetriesPerRequest: null });
  merger = new Merger(svc.ctx, redis, `lbtest-${env.schema}`);
  pointer = new Pointer(svc.ctx, redis, `lbtest-${env.schema}`);
  await agent.commitBase('d0', 1, 'full', source, [scribble(source, [[0, MiB]])]);
  await merger.merge();
});
afterAll(async () => {
  redis?.disconnect();
  await svc?.stop();
  await env?.cleanup();
});

describe('recovery points', () => {
  const refs = new Map<string, Buffer>();

  it('makes one point an hour, each reading as the disk did then', async () => {
    await cycle('application');
    expect(await pointer.points(new Date(t0))).toBe(1);
    refs.set(`p${t0}`, Buffer.from(source));
    await cycle();
    expect(await pointer.points(new Date(t0 + Hour / 2))).toBe(0);
    await cycle();
    expect(await pointer.points(new Date(t0 + Hour))).toBe(1);
    refs.set(`p${t0 + Hour}`, Buffer.from(source));
    await cycle();
    const s = await state();
    expect(s.layers).toEqual(['base-g1.vhdx', `p${t0}.vhdx`, `p${t0 + Hour}.vhdx`]);
    expect(s.points.map((p) => [p.name, p.layer, p.consistency])).toEqual([[`p${t0}`, 'base-g1.vhdx', 'application'], [`p${t0 + Hour}`, `p${t0}.vhdx`, 'crash']]);
    for (const p of s.points) expect((await contentAt(p.layer)).equals(refs.get(p.name)!), p.name).toBe(true);
    expect((await agent.replica('d0')).equals(source)).toBe(true);
    const listed = await operator<{ points: { id: string; consistency: string; latest: boolean }[] }>(svc, 'GET', '/v1/tenants/acme/vms/web/points');
    expect(listed.body.points.map((p) => [p.consistency, p.latest])).toEqual([['application', false], ['crash', false], ['crash', true]]);
    // Each point is an event (point.created), written with its catalog row.
    const created = (await listEvents(svc.ctx.db, { tenant: 'acme', type: 'point.created', limit: 10 })).reverse();
    expect(created.map((e) => [e.data.vm, e.data.consistency, e.createdAt.getTime()])).toEqual([['web', 'application', t0], ['web', 'crash', t0 + Hour]]);
    expect(created.map((e) => String(e.data.point))).toEqual(listed.body.points.slice(0, 2).map((p) => String(p.id)));
  });

  it('makes a due point once when two workers both saw it due', async () => {
    // The second worker checked before the first made the point; it gets the locks afterwards.
    const before = await state();
    const vm = (await listVms(svc.ctx.db)).find((v) => v.tenant === 'acme' && v.name === 'web')!;
    const second = new Pointer(svc.ctx, redis, `lbtest-${env.schema}`);
    expect(await second.makePoint(vm, new Date(t0 + Hour + 60_000))).toBe(false);
    expect(await state()).toEqual(before);
    const listed = await operator<{ points: unknown[] }>(svc, 'GET', '/v1/tenants/acme/vms/web/points');
    expect(listed.body.points).toHaveLength(3);
  });

  it('prunes points older than the history by merging their layers into the base', async () => {
    expect(await pointer.prune(new Date(t0 + 2 * Hour - 1))).toBe(0);
    expect(await pointer.prune(new Date(t0 + 2 * Hour))).toBe(1); // the oldest: its layer is the base
    expect(await pointer.points(new Date(t0 + 2 * Hour))).toBe(1);
    refs.set(`p${t0 + 2 * Hour}`, Buffer.from(source));
    await cycle();
    expect(await pointer.prune(new Date(t0 + 3 * Hour))).toBe(1); // its layer is merged into the base
    const s = await state();
    expect(s.points.map((p) => p.name)).toEqual([`p${t0 + 2 * Hour}`]);
    expect(s.layers).toEqual(['base-g1.vhdx', `p${t0 + Hour}.vhdx`, `p${t0 + 2 * Hour}.vhdx`]);
    for (const p of s.points) expect((await contentAt(p.layer)).equals(refs.get(p.name)!), p.name).toBe(true);
    expect((await agent.replica('d0')).equals(source)).toBe(true);
    await cycle();
    expect((await agent.replica('d0')).equals(source)).toBe(true);
  });

  it('exports a point and the latest as flat images', async () => {
    const listed = await operator<{ points: { id: string; latest: boolean }[] }>(svc, 'GET', '/v1/tenants/acme/vms/web/points');
    const point = listed.body.points.find((p) => !p.latest)!;
    const raw = join(env.dir, 'point.raw');
    const r = await operator(svc, 'POST', '/v1/tenants/acme/vms/web/exports', { disk: 'd0', point: point.id, format: 'raw', path: raw });
    expect(r.status).toBe(201);
    expect((await readFile(raw)).equals(refs.get(`p${t0 + 2 * Hour}`)!)).toBe(true);
    const vhdx = join(env.dir, 'latest.vhdx');
    expect((await operator(svc, 'POST', '/v1/tenants/acme/vms/web/exports', { disk: 'd0', format: 'vhdx', path: vhdx })).status).toBe(201);
    await writeFile(join(env.dir, 'source.raw'), source);
    await referee('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', vhdx, join(env.dir, 'source.raw')]);
    expect((await operator(svc, 'POST', '/v1/tenants/acme/vms/web/exports', { disk: 'd0', point: '999999', format: 'raw', path: join(env.dir, 'x.raw') })).status).toBe(404);
    expect((await operator(svc, 'POST', '/v1/tenants/acme/vms/web/exports', { disk: 'd0', format: 'raw', path: 'relative.raw' })).status).toBe(400);
  });

  it('deletes layer files that state.json does not name, left by a killed worker, at the next merge and point', async () => {
    const names = async () => (await readdir(dir())).filter((f) => f !== 'state.json').sort();
    const kept = [...(await state()).layers].sort();
    expect(await names()).toEqual(kept);
    // A point's new top made before its state.json was written, and a base being built for a newer generation.
    await copyFile(join(dir(), kept.at(-1)!), join(dir(), 'p123.vhdx'));
    await writeFile(join(dir(), 'base-g7.vhdx'), 'partial');
    await writeFile(join(dir(), 'notes.txt'), 'not a layer: left alone');
    await cycle();
    expect(await names()).toEqual([...kept, 'notes.txt'].sort());
    await copyFile(join(dir(), kept.at(-1)!), join(dir(), 'p456.vhdx'));
    expect(await pointer.points(new Date(t0 + 4 * Hour))).toBe(1);
    expect(await names()).toEqual([...(await state()).layers, 'notes.txt'].sort());
    expect((await agent.replica('d0')).equals(source)).toBe(true);
  });

  it('finishes a prune killed after it merged the point\'s layer into the base', async () => {
    const before = await state();
    const [oldest, ...rest] = before.points;
    expect(oldest!.layer).not.toBe(before.layers[0]);
    const kept = new Map(await Promise.all(rest.map(async (p) => [p.name, await contentAt(p.layer)] as const)));
    // The prune claimed the point (its catalog row is gone) and merged its layer into the base, then was killed.
    await svc.ctx.db.query('DELETE FROM recovery_points WHERE layer = $1', [oldest!.name]);
    await mergeChild(join(dir(), oldest!.layer));
    expect(await pointer.prune(new Date(t0 + 3 * Hour))).toBe(0);
    const s = await state();
    expect(s.points.map((p) => p.name)).toEqual(rest.map((p) => p.name));
    expect(s.layers).not.toContain(oldest!.layer);
    for (const p of s.points) expect((await contentAt(p.layer)).equals(kept.get(p.name)!), p.name).toBe(true);
    await cycle();
    expect((await agent.replica('d0')).equals(source)).toBe(true);
  });
});
