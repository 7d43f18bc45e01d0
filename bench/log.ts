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
import { ByteReader } from '../shared/crypto/byte-reader.js';
import { DefaultZstdLevel, LogReader, completeHeader, encodeLog, readLogFile, writeLogFile, type LogSource } from '../shared/log/index.js';
import { cpuSeconds } from './crypto.js';
import { giveWholePooled, pooledFileChunks } from '../shared/buffer-pool.js';
import { mbps, runCommand, syntheticDisk, timeIt, type Benchmark, type BenchRow } from './lib.js';

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

/** CPU seconds (user + system, all threads) and wall seconds of one zstd command. */
async function zstdTimed(args: string[]): Promise<Timing> {
  const { stderr } = await runCommand('/usr/bin/time', ['-f', 'cpu %U %S %e', 'zstd', ...args]);
  const m = /cpu ([\d.]+) ([\d.]+) ([\d.]+)\s*$/.exec(stderr);
  if (!m) throw new Error(`cannot read zstd's CPU time from: ${stderr.slice(-200)}`);
  return { cpu: Number(m[1]) + Number(m[2]), wall: Number(m[3]) };
}

interface Timing { cpu: number; wall: number }
interface Round { ours: Timing; peer: Timing }

/** CPU seconds (user + system, all threads of this process) and wall seconds of fn. */
async function timed(fn: () => Promise<unknown>): Promise<Timing> {
  let cpu = 0;
  const wall = await timeIt(async () => { cpu = await cpuSeconds(fn); });
  return { cpu, wall };
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2; };

/** n rounds of ours, the peer run right before and after each (its timing in a round: the mean of the two). */
async function interleaved(n: number, ours: (round: number) => Promise<Timing>, peer: () => Promise<Timing>): Promise<Round[]> {
  const rounds: Round[] = [];
  let before = await peer();
  for (let r = 0; r < n; r++) {
    const t = await ours(r);
    const after = await peer();
    rounds.push({ ours: t, peer: { cpu: (before.cpu + after.cpu) / 2, wall: (before.wall + after.wall) / 2 } });
    before = after;
  }
  return rounds;
}

/**
 * Compression throughput: our writer (encodeLog: reading the disk chunk by chunk, the content
 * digest, zstd per 1 MiB chunk, the records) beside `zstd -<level> --single-thread` (the command's
 * cheapest mode per CPU second: -T1 hands the input to a worker thread, which costs it about 15 %
 * more CPU) on the same file, both reading it from the page cache and both discarding their
 * output: writing it to a local file is neither compression nor what the agent does with a log, and
 * its kernel cost swings with the machine's dirty and cached pages by more than the two compressors
 * differ (one 1.7 GB write measured 0.4 to 2.9 CPU s here). Reading: LogReader over the log file
 * (chunk headers, zstd, digest) beside `zstd -d` of the command's file. The command runs right
 * before and after each of ours; rows report the medians over the rounds of ours, of the command
 * (the mean of its runs before and after) and of the per-round ratio.
 */
async function zstdRows(ctx: Parameters<Benchmark['run']>[0], work: string): Promise<BenchRow[]> {
  const disk = await syntheticDisk(ctx, ctx.quick ? 256 : 4096);
  const size = (await stat(disk)).size;
  const level = DefaultZstdLevel;
  const rounds = ctx.quick ? 1 : 3;
  const handle = await open(disk, 'r');
  const source = (): LogSource => ({ extents: [{ offset: 0, length: size, kind: 'data' }], read: async (o, b) => { await handle.read(b, 0, b.length, o); } });
  const header = completeHeader({ ...identity, virtualSize: size, compression: 'zstd' });

  // Untimed: both outputs as files, for their sizes and the read rows; this also warms the page
  // cache and the JIT.
  const zst = join(work, 'disk.zst');
  await zstdTimed([`-${level}`, '--single-thread', '-q', '-f', disk, '-o', zst]);
  const plainPath = join(work, 'disk.hrl');
  const out = await open(plainPath, 'w');
  let plainBytes = 0;
  // Each block is written before the next is asked for, so blocks are recycled (as the sealed path
  // recycles its one frame buffer) instead of allocating a fresh 1 MiB per block.
  for await (const b of encodeLog(header, source(), { level, reuseBuffers: true })) { plainBytes += b.length; await out.write(b); }
  await out.close();

  const compressed = await interleaved(rounds, async (r) => {
    let discarded = 0;
    const t = await timed(async () => {
      for await (const b of encodeLog(header, source(), { level, reuseBuffers: true })) discarded += b.length;
    });
    if (discarded !== plainBytes) throw new Error(`round ${r} encoded ${discarded} bytes, the file has ${plainBytes}`);
    return t;
  }, () => zstdTimed([`-${level}`, '--single-thread', '-q', '-f', disk, '-o', '/dev/null']));
  await handle.close();

  const read = await interleaved(rounds, async (r) => {
    let data = 0;
    const t = await timed(async () => {
      // Read as readLogFile reads: 1 MiB chunks into pooled buffers handed back once read (a fresh
      // buffer per read, as createReadStream gives, costs a full collection of the bench's large heap
      // every few dozen MiB and halved the figure).
      const reader = await LogReader.open(new ByteReader(pooledFileChunks(await open(plainPath, 'r'), MiB), giveWholePooled));
      for await (const item of reader.items()) if (item.kind === 'data') data += item.length;
    });
    if (data !== size) throw new Error(`round ${r} read ${data} data bytes of ${size}`);
    return t;
  }, () => zstdTimed(['-d', '--single-thread', '-q', '-f', zst, '-o', '/dev/null']));

  const zstdBytes = (await stat(zst)).size;
  const times = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
  const rate = (bytes: number) => `${(bytes / MiB).toFixed(0)} MiB (${times(size, bytes)})`;
  const row = (name: string, results: Round[], of: keyof Timing, goal: number | undefined): BenchRow => {
    const ours = median(results.map((r) => size / r.ours[of]));
    const peer = median(results.map((r) => size / r.peer[of]));
    const each = results.map((r) => r.peer[of] / r.ours[of]);
    const rounds = each.length > 1 ? ` (rounds ${each.map((x) => x.toFixed(2)).join(' ')})` : '';
    return {
      name, ours: mbps(ours, 1), peer: mbps(peer, 1), ratio: times(median(each), 1),
      goal: goal === undefined ? `info; ours/peer${rounds}` : `>= ${goal / 1e6} MB/s; ours/peer${rounds}`, ok: goal === undefined ? undefined : ours >= goal,
    };
  };
  const what = `synthetic ${size / MiB} MiB`;
  return [
    row(`log write zstd -${level}, ${what} (per CPU s)`, compressed, 'cpu', 500e6),
    row(`log write zstd -${level}, ${what} (wall)`, compressed, 'wall', undefined),
    { name: 'log size vs zstd file (compression ratio)', ours: rate(plainBytes), peer: rate(zstdBytes), ratio: times(plainBytes, zstdBytes), goal: 'info', ok: undefined },
    row(`log read zstd, ${what} (per CPU s)`, read, 'cpu', undefined),
    row(`log read zstd, ${what} (wall)`, read, 'wall', undefined),
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
