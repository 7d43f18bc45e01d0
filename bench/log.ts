/**
 * npm run bench -- log: the change log's compression beside the `zstd` command at the same level on the
 * synthetic disk (goal 500 MB/s or more), and writing and reading a sealed 2 GiB log in a child process
 * whose peak resident memory is measured (goal within 128 MiB).
 *
 * Run directly (`node bench/log.ts write|read …` once bundled) this file is that child. The child is
 * bundled with esbuild (tsx's own dependency) and run on plain node, so the figure is our code's
 * memory; tsx's loader adds a fixed ~35 MiB, reported beside it.
 */
import { open, mkdtemp, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Extent } from '../shared/disk/types.js';
import { generateKeyPair, loadPrivateKey, loadPublicKey, saveKeyPair } from '../shared/crypto/index.js';
import { DefaultZstdLevel, LogReader, completeHeader, encodeLog, readLogFile, writeLogFile, type LogSource } from '../shared/log/index.js';
import { cpuSeconds } from './crypto.js';
import { mbps, runCommand, syntheticDisk, type Benchmark, type BenchRow } from './lib.js';

const MiB = 1 << 20;
const MaxRssBytes = 128 * MiB;
const identity = { tenant: 'bench', vm: 'vm', disk: 'disk', generation: 1, sequence: 1 };

/**
 * A source whose data extents read the synthetic disk (wrapping around it): per 8 MiB of the virtual
 * disk, 6 MiB of data, 1 MiB of zeros and 1 MiB unchanged, until dataBytes of data.
 */
async function syntheticSource(diskPath: string, dataBytes: number): Promise<{ source: LogSource; virtualSize: number; close: () => Promise<void> }> {
  const handle = await open(diskPath, 'r');
  const fileSize = (await handle.stat()).size;
  const groups = Math.ceil(dataBytes / (6 * MiB));
  function* extents(): Generator<Extent> {
    for (let g = 0; g < groups; g++) {
      yield { offset: g * 8 * MiB, length: 6 * MiB, kind: 'data' };
      yield { offset: g * 8 * MiB + 6 * MiB, length: MiB, kind: 'zero' };
    }
  }
  const read = async (offset: number, buf: Buffer) => { await handle.read(buf, 0, buf.length, offset % fileSize); };
  return { source: { extents: extents(), read }, virtualSize: groups * 8 * MiB, close: () => handle.close() };
}

/** The child: writes or reads one sealed log, printing what it did as JSON. */
async function child(args: string[]): Promise<void> {
  const [role, logPath, keyPath, diskPath, bytes] = args;
  if (role === 'write') {
    const { source, virtualSize, close } = await syntheticSource(diskPath!, Number(bytes));
    await writeLogFile(logPath!, { ...identity, virtualSize }, source, { recipient: await loadPublicKey(keyPath!) });
    await close();
  } else {
    const reader = await readLogFile(logPath!, { key: await loadPrivateKey(keyPath!), expect: identity });
    let data = 0;
    for await (const item of reader.items()) if (item.kind === 'data') data += item.length;
    process.stdout.write(`${JSON.stringify({ data, trailer: reader.trailer })}\n`);
  }
}

/** CPU seconds (user + system) of one zstd command. */
async function zstdCpuSeconds(args: string[]): Promise<number> {
  const { stderr } = await runCommand('/usr/bin/time', ['-f', 'cpu %U %S', 'zstd', ...args]);
  const m = /cpu ([\d.]+) ([\d.]+)\s*$/.exec(stderr);
  if (!m) throw new Error(`cannot read zstd's CPU time from: ${stderr.slice(-200)}`);
  return Number(m[1]) + Number(m[2]);
}

async function zstdRows(ctx: Parameters<Benchmark['run']>[0], work: string): Promise<BenchRow[]> {
  const disk = await syntheticDisk(ctx, ctx.quick ? 256 : 4096);
  const size = (await stat(disk)).size;
  const level = DefaultZstdLevel;
  const zst = join(work, 'disk.zst');
  const peerWrite = await zstdCpuSeconds([`-${level}`, '-T1', '-q', '-f', disk, '-o', zst]);
  const peerRead = await zstdCpuSeconds(['-d', '-T1', '-q', '-f', zst, '-o', '/dev/null']);

  const handle = await open(disk, 'r');
  const source: LogSource = { extents: [{ offset: 0, length: size, kind: 'data' }], read: async (o, b) => { await handle.read(b, 0, b.length, o); } };
  const header = completeHeader({ ...identity, virtualSize: size, compression: 'zstd' });
  let plainBytes = 0;
  const plainPath = join(work, 'disk.hrl');
  const out = await open(plainPath, 'w');
  const writeSeconds = await cpuSeconds(async () => {
    // Each block is written before the next is asked for, so blocks are recycled (as the sealed path
    // recycles its one frame buffer) instead of allocating a fresh 1 MiB per block.
    for await (const b of encodeLog(header, source, { level, reuseBuffers: true })) { plainBytes += b.length; await out.write(b); }
  });
  await out.close();
  await handle.close();
  const input = await open(plainPath, 'r');
  const readSeconds = await cpuSeconds(async () => {
    const reader = await LogReader.open(input.createReadStream({ highWaterMark: MiB }));
    for await (const _ of reader.items()) { /* discard */ }
  });
  const zstdBytes = (await stat(zst)).size;
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
  return [
    {
      name: `log write zstd -${level}, synthetic ${size / MiB} MiB (per CPU s)`, ours: mbps(size, writeSeconds), peer: mbps(size, peerWrite),
      ratio: ratio(peerWrite, writeSeconds), goal: '>= 500 MB/s', ok: size / writeSeconds >= 500e6,
    },
    {
      name: 'log size vs zstd file', ours: `${(plainBytes / MiB).toFixed(0)} MiB`, peer: `${(zstdBytes / MiB).toFixed(0)} MiB`,
      ratio: ratio(plainBytes, zstdBytes), goal: 'info', ok: undefined,
    },
    {
      name: `log read zstd, synthetic ${size / MiB} MiB (per CPU s)`, ours: mbps(size, readSeconds), peer: mbps(size, peerRead),
      ratio: ratio(peerRead, readSeconds), goal: 'info', ok: undefined,
    },
  ];
}

async function rssRows(ctx: Parameters<Benchmark['run']>[0], work: string): Promise<BenchRow[]> {
  const disk = await syntheticDisk(ctx, ctx.quick ? 256 : 4096);
  const dataBytes = ctx.quick ? 256 * MiB : 2048 * MiB;
  const { privatePath, publicPath } = await saveKeyPair(join(work, 'key'), await generateKeyPair());
  const logPath = join(work, 'big.hrl');
  const self = fileURLToPath(import.meta.url);
  const bundle = join(work, 'log-child.mjs');
  await runCommand(fileURLToPath(new URL('../node_modules/.bin/esbuild', import.meta.url)), [
    self, '--bundle', '--platform=node', '--format=esm', '--external:zstd-napi', '--external:lz4-napi', '--external:@node-rs/*', `--outfile=${bundle}`, '--log-level=warning']);
  const node = (args: string[]) => runCommand(process.execPath, [bundle, ...args]);
  const w = await node(['write', logPath, publicPath, disk, String(dataBytes)]);
  const r = await node(['read', logPath, privatePath]);
  const read = JSON.parse(r.stdout) as { data: number };
  if (read.data !== Math.ceil(dataBytes / (6 * MiB)) * 6 * MiB) throw new Error(`read back ${read.data} data bytes`);
  const rss = (k: number | undefined) => (k ?? Infinity) * 1024;
  const size = `${(dataBytes / MiB).toFixed(0)} MiB`;
  const rows: BenchRow[] = [];
  for (const [what, res] of [['write', w], ['read', r]] as const) {
    rows.push({
      name: `sealed log ${what} ${size} (peak RSS)`, ours: `${(rss(res.maxRssKiB) / MiB).toFixed(0)} MiB`, peer: `${mbps(dataBytes, res.seconds)}`,
      ratio: `${(rss(res.maxRssKiB) / MaxRssBytes).toFixed(2)}x`, goal: '<= 128 MiB', ok: rss(res.maxRssKiB) <= MaxRssBytes,
    });
  }
  const tsx = await runCommand(process.execPath, ['--import', 'tsx', '-e', '0']);
  const bare = await runCommand(process.execPath, ['-e', '0']);
  rows.push({
    name: 'tsx loader overhead (peak RSS, empty script)', ours: `${((rss(tsx.maxRssKiB) - rss(bare.maxRssKiB)) / MiB).toFixed(0)} MiB`,
    peer: `node ${(rss(bare.maxRssKiB) / MiB).toFixed(0)} MiB`, ratio: '-', goal: 'info', ok: undefined,
  });
  rows.push({ name: 'sealed log file size', ours: `${((await stat(logPath)).size / MiB).toFixed(0)} MiB`, peer: '-', ratio: '-', goal: 'info', ok: undefined });
  return rows;
}

export const logBench: Benchmark = {
  name: 'log',
  description: 'change log zstd vs the zstd command; 2 GiB sealed log write/read peak RSS (peer column: throughput)',
  async run(ctx) {
    const work = await mkdtemp(join(ctx.workDir, 'log-bench-'));
    try {
      return [...await zstdRows(ctx, work), ...await rssRows(ctx, work)];
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  },
};

if (process.argv[1] === fileURLToPath(import.meta.url)) await child(process.argv.slice(2));
