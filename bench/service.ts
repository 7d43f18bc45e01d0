/**
 * npm run bench -- merge: the whole merge of one large log, as a worker runs it, beside
 * `dd … conv=fsync` writing the same number of bytes to the same filesystem in the same run.
 *
 * A VM with a dynamic VHDX replica gets a small full base, then logs that rewrite the whole disk
 * from the synthetic disk (40% zeros, 30% random, 30% text; zstd). Each log is sealed (in another
 * process, bench/seal-log.ts), put into the service's object store and committed through the agent
 * endpoint (not timed); then the page cache
 * is synced and Merger.mergeDisk is timed: lock, fetch from the object store, SHA-256 of the object,
 * envelope and .hrl checks, decrypt, decompress, writes into the replica, fsync, state.json, catalog.
 * A VM's first log writes blocks the top layer does not hold yet; its second rewrites blocks it holds.
 * dd runs right before and right after each merge and the merge is compared with the mean of the
 * two (the shared machine's write rate swings several-fold within a minute; a dd straight after the
 * setup's writes is slower still, so one uncounted dd runs first); three VMs give three
 * rounds of each (one with --quick), reported as medians, with the merge's CPU seconds (every thread
 * of the process) per GiB. Goal: each merge at 80% of dd's rate or more. The row also gives the
 * merge against the faster of each round's two dd runs (dd's rate with its page-cache memory warm),
 * which the goal does not use. Last, the merge's device I/O is timed alone: the sealed log read through
 * O_DIRECT while its non-zero data's worth of bytes is written through O_DIRECT, nothing else done,
 * the floor under any merge of that log on this machine.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import type { PublicJwk } from '../shared/crypto/keys.js';
import { alignedBuffers, openThrough } from '../shared/direct-io.js';
import { writeLog } from '../shared/log/index.js';
import { collect } from '../shared/log/testing.js';
import { Merger } from '../service/workers/merger.js';
import { enrolledAgent, httpsJson, testEnv, TestRedisUrl, testService } from '../test/service/helpers.js';
import type { TlsIdentity } from '../test/service/helpers.js';
import { mbps, runCommand, syntheticDisk, timeIt, type Benchmark, type BenchRow } from './lib.js';

const MiB = 1 << 20;

/** Bytes of [0, bytes) of path that lie in pieces of `piece` bytes holding something other than zeros. */
async function nonZeroBytes(path: string, bytes: number, piece: number): Promise<number> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(piece);
    const zeros = Buffer.alloc(piece);
    let n = 0;
    for (let at = 0; at < bytes; at += piece) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(piece, bytes - at), at);
      if (!buf.subarray(0, bytesRead).equals(zeros.subarray(0, bytesRead))) n += bytesRead;
    }
    return n;
  } finally {
    await fh.close();
  }
}

/**
 * Reads `from` whole through the device (1 MiB reads, three ahead) while writing `bytes` to `to`
 * through it (4 MiB writes, four in flight) and syncs: the I/O a merge of that log does, timed alone.
 */
async function ioFloor(from: string, to: string, bytes: number): Promise<number> {
  const bufs = alignedBuffers(8, 4 * MiB)!;
  const src = await open(from, 'r');
  const dst = await open(to, 'w');
  const rd = await openThrough(src, 'read');
  const wr = await openThrough(dst, 'write');
  try {
    if (!rd || !wr) throw new Error('bench: merge: O_DIRECT is not available here');
    const size = (await src.stat()).size;
    await runCommand('sync', []);
    return await timeIt(async () => {
      const reads = (async () => {
        const q: Promise<unknown>[] = [];
        for (let at = 0, i = 0; at < size || q.length > 0;) {
          while (q.length < 3 && at < size) { q.push(rd.read(bufs[i++ % 3]!, 0, MiB, at)); at += MiB; }
          await q.shift();
        }
      })();
      const writes = (async () => {
        const q: Promise<unknown>[] = [];
        for (let at = 0, i = 0; at < bytes || q.length > 0;) {
          while (q.length < 4 && at < bytes) { q.push(wr.write(bufs[3 + (i++ % 4)]!, 0, 4 * MiB, at)); at += 4 * MiB; }
          await q.shift();
        }
        await wr.datasync();
      })();
      await Promise.all([reads, writes]);
    });
  } finally {
    await rd?.close();
    await wr?.close();
    await src.close();
    await dst.close();
    await rm(to, { force: true });
  }
}

type Agent = TlsIdentity & { tenant: string; replicaKey: PublicJwk };
const sealer = fileURLToPath(new URL('./seal-log.ts', import.meta.url));

export const mergeBench: Benchmark = {
  name: 'merge',
  description: 'Merger.mergeDisk of a large log into a VHDX replica (fetch, verify, decrypt, decompress, write, fsync, state) beside dd conv=fsync',
  async run(ctx) {
    const sizeMiB = ctx.quick ? 128 : 1024;
    const bytes = sizeMiB * MiB;
    const diskPath = await syntheticDisk(ctx, Math.max(sizeMiB, 1024));
    const env = await testEnv((c) => {
      c.replicaFormat = 'vhdx';
    });
    const prefix = `lbbench-${randomBytes(4).toString('hex')}`;
    const redis = new Redis(TestRedisUrl, { maxRetriesPerRequest: null });
    const svc = await testService(env);
    try {
      const agent: Agent = await enrolledAgent(svc, 'bench', '*', 'hv1.bench.test');
      const caPem = svc.ctx.ca.certPem;
      const call = async (method: string, path: string, body: unknown) => {
        const r = await httpsJson(`${svc.agentUrl}${path}`, { method, caPem, identity: agent, body });
        if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
        return r.body as Record<string, unknown>;
      };
      const dd = async (dir: string) => {
        await runCommand('sync', []);
        const r = await runCommand('dd', ['if=/dev/zero', `of=${join(dir, 'dd.out')}`, 'bs=1M', `count=${sizeMiB}`, 'conv=fsync', 'status=none']);
        await rm(join(dir, 'dd.out'));
        return r.seconds;
      };
      const kinds = ['into new blocks', 'over held blocks'] as const;
      const results: Record<(typeof kinds)[number], { ours: number; dd: number; ddFastest: number; cpu: number }[]> = { 'into new blocks': [], 'over held blocks': [] };
      const rounds = ctx.quick ? 1 : 3;
      let lastLog: string | undefined;
      for (let round = 0; round < rounds; round++) {
        const vm = `vm${round}`;
        const ref = { tenant: 'bench', vm, disk: 'd0' };
        const merger = new Merger(svc.ctx, redis, prefix);
        await call('PUT', `/v1/vms/${vm}`, { disks: [{ id: 'd0', virtualSize: bytes, format: 'raw' }], frequency: '30s', history: 0, appConsistentEvery: 0, compression: 'zstd' });
        const init = { tenant: 'bench', vm, disk: 'd0', generation: 1, virtualSize: bytes };
        // The base: 64 KiB of data, so the replica exists and holds one block.
        const base = await collect(writeLog({ ...init, sequence: 0, kind: 'full' }, { extents: [{ offset: 0, length: 64 * 1024, kind: 'data' }], read: async (_o, b) => { randomBytes(b.length).copy(b); } }, { recipient: agent.replicaKey }).sealed);
        const grant = await call('POST', `/v1/vms/${vm}/disks/d0/grants`, { kind: 'chunk', generation: 1, index: 0 });
        await svc.ctx.store.put(String(grant.key), base);
        const createdAt = new Date().toISOString();
        await call('POST', `/v1/vms/${vm}/disks/d0/chunks`, { generation: 1, index: 0, key: String(grant.key), size: base.length, sha256: createHash('sha256').update(base).digest('hex'), createdAt });
        await call('POST', `/v1/vms/${vm}/disks/d0/initial`, { generation: 1, mode: 'full', chunkCount: 1, consistency: 'crash', createdAt });
        if ((await merger.mergeDisk(ref))?.state !== 'replicating') throw new Error('bench: merge: the base was not applied');
        const replicaDir = join(env.config.replicaRoot, 'bench', vm, 'd0');

        for (const [i, what] of kinds.entries()) {
          const sequence = i + 1;
          const logPath = join(env.dir, `log-${sequence}.hrl`);
          // Sealed in another process: its garbage is not collected inside the timed merge.
          await runCommand(process.execPath, ['--import', 'tsx', sealer, JSON.stringify({ out: logPath, source: diskPath, bytes, recipient: agent.replicaKey, header: { ...init, sequence } })]);
          const { size } = await stat(logPath);
          const h = createHash('sha256');
          for await (const c of createReadStream(logPath, { highWaterMark: MiB }) as AsyncIterable<Buffer>) h.update(c);
          const g = await call('POST', `/v1/vms/${vm}/disks/d0/grants`, { kind: 'log', generation: 1, sequence });
          await svc.ctx.store.put(String(g.key), createReadStream(logPath, { highWaterMark: MiB }));
          await call('POST', `/v1/vms/${vm}/disks/d0/commits`, { generation: 1, sequence, key: String(g.key), size, sha256: h.digest('hex'), createdAt: new Date().toISOString(), consistency: 'crash' });
          if (round === rounds - 1 && i === kinds.length - 1) lastLog = logPath;
          else await rm(logPath);
          // A first dd after the setup above (472 MiB written, read and deleted) runs at a fraction of
          // the machine's rate: the memory the deleted file's pages held has gone back to the host and
          // is faulted in afresh. That run is not counted; the next one is.
          await dd(replicaDir);
          const before = await dd(replicaDir);
          await runCommand('sync', []);
          let applied = 0;
          const cpu0 = process.cpuUsage();
          const ours = await timeIt(async () => {
            applied = (await merger.mergeDisk(ref))?.applied ?? 0;
          });
          const cpu = process.cpuUsage(cpu0);
          if (applied !== 1) throw new Error(`bench: merge: log ${sequence} of ${vm} was not applied`);
          const after = await dd(replicaDir);
          const r = { ours, dd: (before + after) / 2, ddFastest: Math.min(before, after), cpu: (cpu.user + cpu.system) / 1e6 / (bytes / 2 ** 30) };
          results[what].push(r);
          process.stderr.write(`bench: merge: round ${round + 1} log ${sequence} (${(size / MiB).toFixed(0)} MiB sealed) ${what}: ${ours.toFixed(2)} s (${r.cpu.toFixed(2)} CPU-s/GiB), dd ${before.toFixed(2)} s before, ${after.toFixed(2)} s after: ratio ${(r.dd / ours).toFixed(2)}\n`);
        }
      }
      // The floor under any merge of this log here: its device I/O alone, no CPU work between.
      if (lastLog !== undefined) {
        const written = await nonZeroBytes(diskPath, bytes, MiB);
        const floors: number[] = [];
        for (let i = 0; i < 3; i++) floors.push(await ioFloor(lastLog, join(env.dir, 'floor.out'), written));
        await rm(lastLog);
        const floor = floors.sort((a, b) => a - b)[1]!;
        process.stderr.write(`bench: merge: its I/O alone (read the sealed log through O_DIRECT while writing its ${(written / MiB).toFixed(0)} MiB of non-zero data through O_DIRECT, no other work): ${floor.toFixed(2)} s, ${mbps(bytes, floor)} of log\n`);
      }
      const median = (xs: number[]) => {
        const v = [...xs].sort((a, b) => a - b);
        const mid = v.length >> 1;
        return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
      };
      const rows: BenchRow[] = kinds.map((what) => {
        const rs = results[what];
        const ratio = median(rs.map((r) => r.dd / r.ours));
        // Shown beside the goal's ratio: the merge against the faster of each round's two dd runs.
        const fastest = median(rs.map((r) => r.ddFastest / r.ours));
        return { name: `merge ${sizeMiB} MiB log ${what} (VHDX, fsync), ${median(rs.map((r) => r.cpu)).toFixed(2)} CPU-s/GiB, ${fastest.toFixed(2)} of dd's faster run`, ours: mbps(bytes, median(rs.map((r) => r.ours))), peer: `dd ${mbps(bytes, median(rs.map((r) => r.dd)))}`, ratio: ratio.toFixed(2), goal: '≥ 0.80', ok: ratio >= 0.8 };
      });
      return rows;
    } finally {
      await svc.stop();
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
      await env.cleanup();
    }
  },
};
