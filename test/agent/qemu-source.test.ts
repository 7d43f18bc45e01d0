/**
 * The qemu source against a real qemu-system-x86_64 under TCG (paused with -S: no OS needed), its
 * qcow2 disk written through HMP `qemu-io drive0 "write -P …"`. nbdinfo --map over the cycle's export
 * is the referee for the frozen bitmap; expected bytes come from the patterns written.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuSource, type QemuCycle } from '../../shared/qemu/source.js';
import type { Extent } from '../../shared/disk/index.js';
import { QmpClient } from '../../shared/qmp/client.js';
import { execFileP, scratchDir } from '../helpers.js';

const MiB = 1 << 20;
const KiB = 1024;
const Size = 16 * MiB;
const G = 64 * KiB;

let dir: Awaited<ReturnType<typeof scratchDir>>;
let qemu: ChildProcess;
let qmp: QmpClient;
let source: QemuSource;
/** What the disk holds now, kept by the test from the patterns it writes. */
const model = Buffer.alloc(Size);

async function write(pattern: number, offset: number, length: number): Promise<void> {
  const out = await qmp.hmp(`qemu-io drive0 "write -P 0x${pattern.toString(16)} ${offset} ${length}"`);
  expect(out).not.toMatch(/error|fail|denied/i); // qemu-io prints its summary on qemu's stdout, not here
  model.fill(pattern, offset, offset + length);
}
const roundOut = (ranges: Array<[number, number]>): Array<[number, number]> =>
  ranges.map(([o, l]) => { const s = Math.floor(o / G) * G; return [s, Math.ceil((o + l) / G) * G - s] as [number, number]; });

async function collect(cycle: QemuCycle): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of cycle.extents()) out.push(e);
  return out;
}
async function refereeDirty(bitmap: string): Promise<Array<[number, number]>> {
  const sock = join(dir.path, 'nbd.sock');
  const { stdout } = await execFileP('nbdinfo', [`--map=qemu:dirty-bitmap:${bitmap}`, '--json', `nbd+unix:///disk0?socket=${sock}`]);
  return (JSON.parse(stdout) as Array<{ offset: number; length: number; type: number }>).filter((e) => e.type === 1).map((e) => [e.offset, e.length]);
}

beforeAll(async () => {
  dir = await scratchDir('lifeboat-qemusrc-');
  const disk = join(dir.path, 'disk.qcow2');
  await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', disk, String(Size)]);
  await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir.path, 'disk1.qcow2'), String(Size)]);
  const sock = join(dir.path, 'vm.qmp');
  qemu = spawn('qemu-system-x86_64', ['-S', '-nodefaults', '-display', 'none', '-accel', 'tcg', '-m', '32',
    '-drive', `file=${disk},format=qcow2,if=none,id=drive0,node-name=disk0`, '-device', 'virtio-blk-pci,drive=drive0',
    '-drive', `file=${join(dir.path, 'disk1.qcow2')},format=qcow2,if=none,id=drive1,node-name=disk1`, '-device', 'virtio-blk-pci,drive=drive1',
    '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
  const deadline = Date.now() + 15_000;
  while (!existsSync(sock)) {
    if (qemu.exitCode !== null || Date.now() > deadline) throw new Error('qemu did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  qmp = await QmpClient.connect(sock);
  source = new QemuSource({ qmp, node: 'disk0', workDir: dir.path });
}, 30_000);

afterAll(async () => {
  await qmp?.close();
  if (qemu && qemu.exitCode === null) { qemu.kill('SIGKILL'); await new Promise((r) => qemu.once('exit', r)); }
  await dir?.remove();
});

describe('qemu source against a running qemu', () => {
  const figures: string[] = [];
  afterAll(() => { console.log(`qemu source figures:\n${figures.join('\n')}`); });

  it('a cycle ships exactly the granules written since protect, as they were at its instant', async () => {
    await write(0x0a, 0, 256 * KiB); // before protect: not shipped
    await source.protect();
    await source.protect(); // idempotent
    expect((await source.bitmaps()).map((b) => b.name)).toEqual(['lifeboat-0']);
    const writes: Array<[number, number]> = [[MiB, 4 * KiB], [5 * MiB + 100 * KiB, 200 * KiB]];
    for (const [o, l] of writes) await write(0x11, o, l);

    const cycle = await source.begin();
    try {
      expect(cycle.bitmapLost).toBe(false);
      expect(cycle.granularity).toBe(G);
      const atInstant = Buffer.from(model);
      // The guest writes again during the cycle, over a shipped range and elsewhere.
      await write(0x33, MiB, 4 * KiB);
      await write(0x34, 9 * MiB, 8 * KiB);
      const extents = await collect(cycle);
      const expected = roundOut(writes);
      expect(extents.map((e) => [e.offset, e.length])).toEqual(expected);
      expect(await refereeDirty('lifeboat-0')).toEqual(expected);
      for (const e of extents) expect((await cycle.read(e.offset, e.length)).equals(atInstant.subarray(e.offset, e.offset + e.length))).toBe(true);
      const written = writes.reduce((s, [, l]) => s + l, 0);
      expect(cycle.readBytes).toBe(cycle.changedBytes);
      figures.push(`cycle 1: written ${written} B, changed (granules) ${cycle.changedBytes} B, read ${cycle.readBytes} B of a ${Size} B disk`);
      await cycle.commit();
    } finally { await cycle.end(); }
    const left = await source.bitmaps();
    expect(left.map((b) => [b.name, b.recording])).toEqual([['lifeboat-1', true]]);
    // The view is gone: no export, no job, no overlay node.
    expect(await qmp.execute('query-block-exports')).toEqual([]);
    expect(await qmp.execute('query-block-jobs')).toEqual([]);
    expect(existsSync(join(dir.path, 'lifeboat-view-disk0.qcow2'))).toBe(false);
  });

  it('after commit the next cycle ships only the newer writes (those during the last cycle included); abandon keeps them', async () => {
    await write(0x44, 8 * MiB, 64 * KiB);
    const cycle = await source.begin();
    const expected = roundOut([[MiB, 4 * KiB], [8 * MiB, 64 * KiB], [9 * MiB, 8 * KiB]]);
    try {
      const extents = await collect(cycle);
      expect(extents.map((e) => [e.offset, e.length])).toEqual(expected);
      expect(await refereeDirty('lifeboat-1')).toEqual(expected);
      expect((await cycle.read(MiB, 4 * KiB)).equals(Buffer.alloc(4 * KiB, 0x33))).toBe(true);
      for (const e of extents) expect((await cycle.read(e.offset, e.length)).equals(model.subarray(e.offset, e.offset + e.length))).toBe(true);
      figures.push(`cycle 2: changed ${cycle.changedBytes} B, read ${cycle.readBytes} B`);
    } finally { await cycle.abandon(); await cycle.abandon(); }
    expect((await source.bitmaps()).map((b) => [b.name, b.recording])).toEqual([['lifeboat-2', true]]);

    await write(0x55, 12 * MiB + 4 * KiB, 4 * KiB);
    const next = await source.begin();
    try {
      const union = roundOut([[MiB, 4 * KiB], [8 * MiB, 64 * KiB], [9 * MiB, 8 * KiB], [12 * MiB + 4 * KiB, 4 * KiB]]);
      const extents = await collect(next);
      expect(extents.map((e) => [e.offset, e.length])).toEqual(union);
      for (const e of extents) expect((await next.read(e.offset, e.length)).equals(model.subarray(e.offset, e.offset + e.length))).toBe(true);
      figures.push(`cycle 3 (after abandon): changed ${next.changedBytes} B, read ${next.readBytes} B`);
      await next.commit();
    } finally { await next.end(); }
  });

  it('a lost bitmap is reported: the cycle is a resync over the allocated ranges, and tracking starts again', async () => {
    // As after a qemu restart without the bitmap.
    for (const b of await source.bitmaps()) await qmp.execute('block-dirty-bitmap-remove', { node: 'disk0', name: b.name });
    expect(await source.liveBitmap()).toBeUndefined();
    const cycle = await source.begin();
    try {
      expect(cycle.bitmapLost).toBe(true);
      const extents = await collect(cycle);
      const data = extents.filter((e) => e.kind === 'data');
      for (const [o, l] of [[0, 256 * KiB], [MiB, 4 * KiB], [12 * MiB + 4 * KiB, 4 * KiB]] as Array<[number, number]>) {
        expect(data.some((e) => e.offset <= o && e.offset + e.length >= o + l)).toBe(true);
      }
      for (const e of data) expect((await cycle.read(e.offset, e.length)).equals(model.subarray(e.offset, e.offset + e.length))).toBe(true);
      figures.push(`lost bitmap resync: read ${cycle.readBytes} B (allocated), extents ${extents.length}`);
      await cycle.commit();
    } finally { await cycle.end(); }
    const live = await source.liveBitmap();
    expect(live?.recording).toBe(true);
    await write(0x66, 15 * MiB, 4 * KiB);
    const after = await source.begin();
    try {
      expect((await collect(after)).map((e) => [e.offset, e.length])).toEqual(roundOut([[15 * MiB, 4 * KiB]]));
      await after.commit();
    } finally { await after.end(); }
  });

  it('recover() after a cycle left open merges its frozen bitmap back and removes the view', async () => {
    await write(0x77, 2 * MiB, 4 * KiB);
    const cycle = await source.begin(); // as if the agent died here
    void cycle;
    await source.recover();
    expect(await qmp.execute('query-block-exports')).toEqual([]);
    const bitmaps = await source.bitmaps();
    expect(bitmaps).toHaveLength(1);
    expect(bitmaps[0]!.recording).toBe(true);
    const next = await source.begin();
    try {
      expect((await collect(next)).map((e) => [e.offset, e.length])).toEqual(roundOut([[2 * MiB, 4 * KiB]]));
      await next.commit();
    } finally { await next.end(); }
  });

  it('two disks of one VM run their cycles at once through qemu\'s one NBD server', async () => {
    const second = new QemuSource({ qmp, node: 'disk1', workDir: dir.path });
    await second.protect();
    await qmp.hmp('qemu-io drive1 "write -P 0x99 7M 4k"');
    await write(0x98, 3 * MiB, 4 * KiB);
    const [a, b] = await Promise.all([source.begin(), second.begin()]);
    try {
      expect((await collect(a)).map((e) => [e.offset, e.length])).toEqual(roundOut([[3 * MiB, 4 * KiB]]));
      expect((await collect(b)).map((e) => [e.offset, e.length])).toEqual(roundOut([[7 * MiB, 4 * KiB]]));
      expect((await b.read(7 * MiB, 4 * KiB)).equals(Buffer.alloc(4 * KiB, 0x99))).toBe(true);
      await a.commit();
      // disk1's export still works after disk0's view ended.
      expect((await b.read(7 * MiB, 4 * KiB)).equals(Buffer.alloc(4 * KiB, 0x99))).toBe(true);
      await b.commit();
    } finally { await a.end(); await b.end(); }
    expect(await qmp.execute('query-block-exports')).toEqual([]);
    expect(existsSync(join(dir.path, 'nbd.sock'))).toBe(false);
  });

  it('an unknown node is one clear error', async () => {
    const other = new QemuSource({ qmp, node: 'nope', workDir: dir.path });
    await expect(other.begin()).rejects.toThrow(/no block node 'nope'/);
  });
});
