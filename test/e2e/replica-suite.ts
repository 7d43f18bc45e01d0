/**
 * The tests every object store runs (scenario.ts sets the store up): the whole path, base and cycles,
 * each ending with the exported latest point compared with the source by `qemu-img compare`, and the
 * agent killed (SIGKILL) in the middle of a cycle's scan, as a log goes out, in the middle of a log's
 * upload and of a base chunk's upload, and after the service recorded a commit (a log's, a base's)
 * but before the agent heard it, a later run losing nothing; last, the periodic verification against
 * the service's block digests.
 */
import { expect, it } from 'vitest';
import type { TestContext } from 'vitest';
import type { InflightObject } from '../../agent/state/schema.js';
import { chunkKey, logKey } from '../../shared/objectstore/keys.js';
import { MiB, onFile, whenTrue } from './scenario.js';
import type { Scenario } from './scenario.js';

const KiB = 1024;
/** Each test spawns the agent several times and merges: room for a 2-core machine shared with others. */
const TimeoutMs = 120_000;
/** Slow enough that an upload of 1 MiB takes 8 s: a kill 1 s after it started lands in the middle. */
const SlowLink = 128 * KiB;

/**
 * Kills `lifeboat-agent run --once` once an object of at least minSize bytes has been in flight for a
 * second (sealed, recorded, its upload under way on the slow link) and returns that object.
 */
async function killMidUpload(s: Scenario, vm: string, disk: string, kind: InflightObject['kind'], minSize: number): Promise<InflightObject> {
  let seen: { o: InflightObject; at: number } | undefined;
  const run = await s.runAgent(whenTrue(async () => {
    const o = (await s.progress(vm)).disks[disk]?.inflight.find((x) => x.kind === kind && x.size >= minSize);
    if (!o) return false;
    seen ??= { o, at: performance.now() };
    return performance.now() - seen.at >= 1000;
  }));
  expect(run.killed, `the run ended first: ${run.code} ${run.stderr}`).toBe(true);
  // Not yet whole in the store: the kill cut the upload.
  const ref = { tenant: 'acme', vm, disk };
  const key = kind === 'log' ? logKey(ref, seen!.o.generation, seen!.o.number) : chunkKey(ref, seen!.o.generation, seen!.o.number);
  const store = await s.openStore();
  try {
    const head = await store.head(key).catch(() => undefined);
    expect(head === undefined || head.size < seen!.o.size, `${key} is whole in the store`).toBe(true);
  } finally {
    await store.close();
  }
  return seen!.o;
}

async function setBandwidth(s: Scenario, vm: string, bandwidthBytesPerSec: number | null): Promise<void> {
  await s.state.writeConfig({ ...(await s.state.readConfig(vm)), bandwidthBytesPerSec });
}

/** Registers the tests on a scenario; they build on one another (one VM, web01) and run in order. */
export function replicaTests(use: (ctx: TestContext) => Scenario): void {
  let disk = '';
  /** Every disk of web01 by id, as the tests add them. */
  const sources = new Map<string, string>();

  it('replicates a VHDX made by qemu-img: the exported latest point equals the source after the base and after a cycle', async (ctx) => {
    const s = use(ctx);
    disk = await s.newDisk('web01', '96M', 'write -P 0x5a 1M 3M', 'write -P 0x21 50M 2M');
    sources.set('disk0', disk);
    await s.protect('web01', [disk]);
    await s.runOnce();
    // The base (the 8 MiB slots holding data, at 1 MiB and 50 MiB; the holes are no chunks), then the
    // first log (the changes made while the base went out) in the same pass.
    expect((await s.progress('web01')).disks.disk0).toMatchObject({ generation: 1, nextSequence: 2, inflight: [], initial: { state: 'done', bytesDone: 16 * MiB } });
    await s.expectReplicaEqualsSource('web01', 'disk0', disk);

    await s.write(disk, 'write -P 0x77 10M 192k', 'write -z 50M 64k');
    await s.writeRandom(disk, 70 * MiB, 64 * KiB);
    const [cycle] = await s.runOnce();
    expect(cycle!.stats!.changedBytes).toBe(320 * KiB);
    await s.expectReplicaEqualsSource('web01', 'disk0', disk);
    const keys = await s.keys('web01', 'disk0');
    expect(keys.filter((k) => k.endsWith('.chunk'))).toHaveLength(2); // the slots holding data, not all 12
    expect(keys.filter((k) => k.endsWith('.hrl'))).toHaveLength(2);
  }, TimeoutMs);

  it('loses nothing when the agent is killed mid-scan or as a log goes out', async (ctx) => {
    const s = use(ctx);
    const vmDir = s.state.vmDir('web01');
    const kills: boolean[] = [];
    await s.write(disk, 'write -P 0x31 20M 1M');
    kills.push((await s.runAgent(onFile(vmDir, /\.map\.pending\.tmp$/))).killed); // during the cycle's scan
    await s.write(disk, 'write -P 0x32 30M 64k');
    kills.push((await s.runAgent(onFile(`${vmDir}/spool`, /\.hrl$/))).killed); // the log being sealed
    await s.write(disk, 'write -P 0x33 70M 2M');
    kills.push((await s.runAgent(onFile(vmDir, /^progress\.json$/))).killed); // its first progress write: the log in flight
    expect(kills).toEqual([true, true, true]);
    await s.runOnce();
    await s.expectReplicaEqualsSource('web01', 'disk0', disk);
  }, TimeoutMs);

  it('loses nothing when the agent is killed in the middle of a log\'s upload', async (ctx) => {
    const s = use(ctx);
    await setBandwidth(s, 'web01', SlowLink);
    await s.writeRandom(disk, 60 * MiB, MiB);
    const cut = await killMidUpload(s, 'web01', 'disk0', 'log', 512 * KiB);
    expect((await s.progress('web01')).disks.disk0!.inflight).toContainEqual(cut);
    await setBandwidth(s, 'web01', null);
    await s.write(disk, 'write -P 0x34 61M 64k');
    await s.runOnce();
    expect((await s.progress('web01')).disks.disk0!.inflight).toEqual([]);
    await s.expectReplicaEqualsSource('web01', 'disk0', disk);
  }, TimeoutMs);

  it('loses nothing when the agent is killed in the middle of a new disk\'s base, during a chunk\'s upload', async (ctx) => {
    const s = use(ctx);
    const disk1 = await s.newDisk('web01-data', '80M', 'write -P 0x44 0 8M', 'write -P 0x45 48M 24M');
    await s.writeRandom(disk1, 20 * MiB, MiB);
    const config = await s.state.readConfig('web01');
    await s.state.writeConfig({ ...config, disks: [...config.disks, { id: 'disk1', path: disk1 }], bandwidthBytesPerSec: SlowLink });
    sources.set('disk1', disk1);
    await killMidUpload(s, 'web01', 'disk1', 'chunk', 512 * KiB);
    expect((await s.progress('web01')).disks.disk1!.initial.state).toBe('running');
    await setBandwidth(s, 'web01', null);
    await s.write(disk1, 'write -P 0x46 2M 64k', 'write -P 0x47 21M 64k');
    await s.runOnce();
    expect((await s.progress('web01')).disks.disk1).toMatchObject({ inflight: [], initial: { state: 'done' } });
    await s.expectReplicaEqualsSource('web01', 'disk1', disk1);
    await s.expectReplicaEqualsSource('web01', 'disk0', disk);
  }, TimeoutMs);

  it('loses nothing when the agent is killed after the service recorded its commit, before the answer came', async (ctx) => {
    const s = use(ctx);
    // A log: the agent still holds it in flight and ships it again, which the service takes as a duplicate.
    await s.write(disk, 'write -P 0x35 40M 128k');
    const before = (await s.progress('web01')).disks.disk0!;
    expect((await s.runAgent(s.onCommit())).killed).toBe(true);
    expect((await s.progress('web01')).disks.disk0!.inflight).toEqual([expect.objectContaining({ kind: 'log', number: before.nextSequence })]);
    await s.write(disk, 'write -P 0x36 41M 64k');
    await s.runOnce();
    expect((await s.progress('web01')).disks.disk0).toMatchObject({ inflight: [], nextSequence: before.nextSequence + 2 });
    await s.expectReplicaEqualsSource('web01', 'disk0', disk);

    // A base: every chunk committed, the completion recorded but unheard; the next run completes it again.
    const disk2 = await s.newDisk('web01-logs', '16M', 'write -P 0x48 3M 1M');
    const config = await s.state.readConfig('web01');
    await s.state.writeConfig({ ...config, disks: [...config.disks, { id: 'disk2', path: disk2 }] });
    sources.set('disk2', disk2);
    expect((await s.runAgent(s.onCommit())).killed).toBe(true);
    expect((await s.progress('web01')).disks.disk2!.initial).toMatchObject({ state: 'running', bytesDone: 8 * MiB, bytesTotal: 8 * MiB });
    await s.write(disk2, 'write -P 0x49 9M 64k');
    await s.runOnce();
    expect((await s.progress('web01')).disks.disk2).toMatchObject({ inflight: [], initial: { state: 'done' } });
    await s.expectReplicaEqualsSource('web01', 'disk2', disk2);
  }, TimeoutMs);

  it('verifies the replica against the service\'s block digests: a delta base of a new generation sends only what differs', async (ctx) => {
    const s = use(ctx);
    await s.merger.merge(); // verification waits until the service has applied everything
    await s.write(disk, 'write -P 0x37 12M 64k');
    const before = await s.progress('web01');
    await s.runOnce({ verifyEveryMs: 0 });
    const after = await s.progress('web01');
    for (const [id, d] of Object.entries(after.disks)) {
      expect(d.initial, id).toMatchObject({ mode: 'delta', state: 'done', generation: before.disks[id]!.generation + 1 });
      expect(d.initial.bytesSent, id).toBeLessThan(MiB); // at most the changed 1 MiB block, compressed
    }
    for (const [id, source] of sources) await s.expectReplicaEqualsSource('web01', id, source);
  }, TimeoutMs);
}
