/**
 * What a qemu-source cycle costs beside the scan tracker on the same disk: a 256 MiB raw disk full of
 * data in a paused qemu (TCG), 1% of it changed in scattered 4 KiB writes through HMP qemu-io. Bytes
 * read through the view must stay within 1.1x the changed bytes rounded to the bitmap's granularity;
 * the times and the copy-before-write cost to the VM's writes are printed, not asserted (two shared
 * cores make them noisy).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { QemuSource } from '../../shared/qemu/source.js';
import { ScanTracker } from '../../agent/tracker/scan.js';
import { openDisk, type Extent } from '../../shared/disk/index.js';
import { QmpClient } from '../../shared/qmp/client.js';
import { scratchDir } from '../helpers.js';

const MiB = 1 << 20;
const Size = 256 * MiB;
let dir: Awaited<ReturnType<typeof scratchDir>>;
let qemu: ChildProcess;
let qmp: QmpClient;
let disk: string;

beforeAll(async () => {
  dir = await scratchDir('lifeboat-qemucost-');
  disk = join(dir.path, 'd.raw');
  const f = await open(disk, 'w');
  for (let at = 0; at < Size; at += 8 * MiB) await f.write(randomBytes(8 * MiB), 0, 8 * MiB, at);
  await f.close();
  const sock = join(dir.path, 'vm.qmp');
  qemu = spawn('qemu-system-x86_64', ['-S', '-nodefaults', '-display', 'none', '-accel', 'tcg', '-m', '32',
    '-drive', `file=${disk},format=raw,if=none,id=drive0,node-name=disk0`, '-device', 'virtio-blk-pci,drive=drive0',
    '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
  const deadline = Date.now() + 15_000;
  while (!existsSync(sock)) {
    if (qemu.exitCode !== null || Date.now() > deadline) throw new Error('qemu did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  qmp = await QmpClient.connect(sock);
}, 60_000);

afterAll(async () => {
  await qmp?.close();
  if (qemu && qemu.exitCode === null) { qemu.kill('SIGKILL'); await new Promise((r) => qemu.once('exit', r)); }
  await dir?.remove();
});

async function timedWrites(offsets: number[], length: number, pattern: number): Promise<number> {
  const t = performance.now();
  for (const o of offsets) await qmp.hmp(`qemu-io drive0 "write -P 0x${pattern.toString(16)} ${o} ${length}"`);
  return performance.now() - t;
}

it.each([64 * 1024, 4096])('one percent scattered change, granularity %i: bytes read vs changed, cycle time beside a scan, copy-before-write cost', async (G) => {
  const source = new QemuSource({ qmp, node: 'disk0', workDir: dir.path, persistent: false, granularity: G });
  for (const b of await source.bitmaps()) await qmp.execute('block-dirty-bitmap-remove', { node: 'disk0', name: b.name });
  await source.protect();
  expect((await source.liveBitmap())?.granularity).toBe(G);
  const scan = new ScanTracker({ mapPath: join(dir.path, `map-${G}`), pendingPath: join(dir.path, `map-${G}.pending`) });
  const scanCycle = async () => {
    const image = await openDisk(disk, { readOnly: true });
    try {
      const t = performance.now();
      const c = await scan.begin(image);
      for await (const e of c.extents()) void e;
      await c.commit();
      return { ms: performance.now() - t, changed: c.changedBytes };
    } finally { await image.close(); }
  };
  await scanCycle(); // the baseline map

  // 1% of the disk in 4 KiB writes, each in its own 64 KiB block.
  const count = Math.round((Size / 100) / 4096);
  const step = Math.floor(Size / count / 65536) * 65536;
  const offsets = Array.from({ length: count }, (_, i) => i * step + ((i * 7) % 16) * 4096);
  const writeMs = await timedWrites(offsets, 4096, G === 4096 ? 0x6b : 0x5a);
  const granules = new Set(offsets.map((o) => Math.floor(o / G))).size * G;

  const t = performance.now();
  const cycle = await source.begin();
  const beginMs = performance.now() - t;
  let changed = 0;
  const extents: Extent[] = [];
  for await (const e of cycle.extents()) { changed += e.length; extents.push(e); }
  const mapMs = performance.now() - t - beginMs;
  // Reads with up to 16 in flight, as the engine's reader would keep the socket busy.
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    const buf = Buffer.alloc(G);
    while (next < extents.length) {
      const e = extents[next++]!;
      for (let at = e.offset; at < e.offset + e.length; at += G) await cycle.readInto(at, buf.subarray(0, Math.min(G, e.offset + e.length - at)));
    }
  }));
  const readMs = performance.now() - t - beginMs - mapMs;
  // The cost of the view to the VM's writes: the same writes again while the view is open (each
  // copies the old granule into the overlay first), beside the ones above without a view.
  const cbwMs = await timedWrites(offsets.slice(0, 200), 4096, 0x7c);
  const t2 = performance.now();
  await cycle.commit();
  const endMs = performance.now() - t2;
  const qemuMs = beginMs + mapMs + readMs + endMs;
  const plainMs = await timedWrites(offsets.slice(200, 400), 4096, 0x7c);

  const s = await scanCycle();
  console.log([
    `granularity ${G}: disk ${Size} B, written ${count * 4096} B in ${count} writes (${writeMs.toFixed(0)} ms through HMP)`,
    `qemu source: changed ${changed} B (granules ${granules} B), read ${cycle.readBytes} B, cycle ${qemuMs.toFixed(0)} ms (begin ${beginMs.toFixed(0)}, block status ${mapMs.toFixed(0)}, read ${readMs.toFixed(0)}, end ${endMs.toFixed(0)})`,
    `scan tracker: changed ${s.changed} B, read the disk (${Size} B), cycle ${s.ms.toFixed(0)} ms`,
    `200 writes of 4 KiB: ${cbwMs.toFixed(0)} ms with the view open, ${plainMs.toFixed(0)} ms without (ratio ${(plainMs / cbwMs).toFixed(2)})`,
  ].join('\n'));
  expect(changed).toBe(granules);
  expect(cycle.readBytes).toBeLessThanOrEqual(1.1 * granules);
  expect(cycle.readBytes).toBe(granules);
}, 180_000);
