/**
 * npm run demo: the disk tools on embedded defaults, in a temporary directory. Creates a VHDX,
 * writes a pattern, makes a differencing child and writes into it, flattens the chain to raw and
 * to VHD, merges the child into its parent, and checks every result against the content it
 * expects. Exit 0 when all holds; otherwise one line saying what failed, and exit 1.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { userMessage } from '../../shared/errors.js';
import { createChildDisk, createDisk, openDisk } from '../../shared/disk/index.js';
import { compareDisks, flatten, mergeChild } from '../../shared/disk/ops/index.js';
import { formatBytes } from '../../shared/units.js';

const MiB = 1024 * 1024;
const Size = 64 * MiB;
const step = (text: string) => process.stdout.write(`• ${text}\n`);

/** Fails the demo with one line unless path reads exactly as expected (a raw file of it). */
async function expectSame(path: string, expectedPath: string, what: string): Promise<void> {
  const [a, b] = await Promise.all([openDisk(path, { readOnly: true }), openDisk(expectedPath, { readOnly: true })]);
  try {
    const r = await compareDisks(a, b);
    if (!r.identical) throw new Error(`${what} differs from the expected content at offset ${r.offset}`);
    step(`  ${what}: identical to the expected content`);
  } finally {
    await a.close();
    await b.close();
  }
}

async function demo(dir: string): Promise<void> {
  const expected = Buffer.alloc(Size);
  const put = (off: number, data: Buffer) => { data.copy(expected, off); return data; };

  const basePath = join(dir, 'base.vhdx');
  const base = await createDisk(basePath, 'vhdx', { virtualSize: Size });
  step(`created ${basePath}: dynamic VHDX, ${formatBytes(Size)}, block size ${formatBytes(base.blockSize ?? 0)}`);
  await base.write(0, put(0, Buffer.alloc(3 * MiB, 0xa5)));
  await base.write(40 * MiB + 12, put(40 * MiB + 12, Buffer.from('written into the base layer')));
  const baseInfo = await base.info();
  await base.close();
  step(`wrote 3 MiB of 0xA5 at 0 and a line of text at 40 MiB + 12 (file now ${formatBytes(baseInfo.allocatedBytes)} on disk)`);

  const childPath = join(dir, 'child.vhdx');
  const child = await createChildDisk(childPath, basePath);
  step(`created ${childPath}: differencing child of base.vhdx`);
  await child.write(MiB, put(MiB, Buffer.alloc(512 * 1024, 0x3c)));
  await child.zero(2 * MiB, 256 * 1024);
  expected.fill(0, 2 * MiB, 2 * MiB + 256 * 1024);
  await child.write(Size - 4096, put(Size - 4096, Buffer.alloc(4096, 0x7e)));
  const info = await child.info();
  await child.close();
  step(`wrote 512 KiB of 0x3C at 1 MiB, zeroed 256 KiB at 2 MiB, wrote 4 KiB at the end (parent chain: ${info.parentChain.join(' <- ')})`);

  const expectedPath = join(dir, 'expected.raw');
  await writeFile(expectedPath, expected);
  const flatRaw = join(dir, 'flat.raw');
  await flatten(childPath, flatRaw, { format: 'raw' });
  step(`flattened the chain into ${flatRaw}`);
  await expectSame(flatRaw, expectedPath, 'flat.raw');
  const flatVhd = join(dir, 'flat.vhd');
  await flatten(childPath, flatVhd, { format: 'vhd' });
  step(`converted the chain into ${flatVhd} (dynamic VHD)`);
  await expectSame(flatVhd, expectedPath, 'flat.vhd');

  await mergeChild(childPath);
  step('merged child.vhdx into base.vhdx');
  await expectSame(basePath, expectedPath, 'base.vhdx after the merge');
  await expectSame(childPath, expectedPath, 'child.vhdx after the merge');
}

const dir = await mkdtemp(join(tmpdir(), 'lifeboat-demo-'));
try {
  step(`working in ${dir}`);
  await demo(dir);
  step('all checks passed');
} catch (err) {
  const msg = userMessage(err) ?? (err instanceof Error ? err.message : String(err));
  process.stderr.write(`disk demo: ${msg}\n`);
  process.exitCode = 1;
} finally {
  await rm(dir, { recursive: true, force: true });
}
