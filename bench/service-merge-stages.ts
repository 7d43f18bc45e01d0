/**
 * npm run bench -- merge-stages: where the merge path's time goes, each stage timed alone over one
 * sealed log of random (incompressible) data, beside `dd … conv=fsync` of the same bytes in the same
 * run: verify only (read, decrypt, decompress, nothing written), stageLog with everything staged
 * (verify + SHA-256 + staging, the path of blocks the top layer holds and a log rewrites in part),
 * applyStaged of that into a fresh dynamic VHDX with flush, the worker's path for whole or new
 * blocks (stageLog writing fresh VHDX blocks directly as the log streams, publish, flush), a single
 * pass that writes the items with ordinary writes and no checks before them (what one write of the
 * data reaches), and a plain file written with fsync from Node (the write floor without the VHDX).
 * Rounds interleave every stage with dd, so drift on a noisy machine shows in the dd figures.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { ReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair } from '../shared/crypto/index.js';
import type { PrivateJwk } from '../shared/crypto/keys.js';
import { createDisk } from '../shared/disk/index.js';
import { readLog, writeLogFile } from '../shared/log/index.js';
import { applyStaged, discardStaged, stageLog } from '../shared/log/stage.js';
import type { StagedLog } from '../shared/log/stage.js';
import { mbps, runCommand, timeIt, type Benchmark, type BenchRow } from './lib.js';

const MiB = 1 << 20;
const identity = { tenant: 'bench', vm: 'vm', disk: 'disk', generation: 1, sequence: 1 };

async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: MiB }) as AsyncIterable<Buffer>) h.update(chunk);
  return h.digest('hex');
}

/** Writes `bytes` of random data in 1 MiB pieces to path and fsyncs it (Node's own write floor). */
async function plainWrite(path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    const piece = randomBytes(MiB);
    for (let at = 0; at < bytes; at += MiB) await fh.write(piece, 0, MiB, at);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function verifyOnly(object: () => ReadStream, key: PrivateJwk): Promise<number> {
  return timeIt(async () => {
    const reader = await readLog(object() as AsyncIterable<Buffer>, { key, expect: identity });
    for await (const item of reader.items()) void item;
    if (!reader.trailer) throw new Error('log without trailer');
  });
}

/** applyStaged into a fresh dynamic VHDX, flushed. */
async function applyTimed(dir: string, bytes: number, staged: StagedLog): Promise<number> {
  return timeIt(async () => {
    const replica = await createDisk(join(dir, 'replica.vhdx'), 'vhdx', { virtualSize: bytes });
    try {
      await applyStaged(staged, replica);
      await replica.flush();
    } finally {
      await replica.close();
    }
  });
}

/** The worker's path for blocks the layer does not hold: fresh writes while verifying, publish, flush. */
async function direct(dir: string, bytes: number, object: () => ReadStream, key: PrivateJwk, sha256: string, size: number): Promise<number> {
  await rm(join(dir, 'replica.vhdx'), { force: true });
  return timeIt(async () => {
    const replica = await createDisk(join(dir, 'replica.vhdx'), 'vhdx', { virtualSize: bytes });
    try {
      const staged = await stageLog({ object: object(), key, expect: identity, sha256, size, direct: () => replica.freshWrites!() }, join(dir, 'direct.staged'));
      await applyStaged(staged, replica);
      await discardStaged(staged);
      await replica.flush();
    } finally {
      await replica.close();
    }
  });
}

/** The verified items written straight into a fresh VHDX as they are released, flushed. */
async function singlePass(dir: string, bytes: number, object: () => ReadStream, key: PrivateJwk): Promise<number> {
  await rm(join(dir, 'replica.vhdx'), { force: true });
  return timeIt(async () => {
    const replica = await createDisk(join(dir, 'replica.vhdx'), 'vhdx', { virtualSize: bytes });
    try {
      const reader = await readLog(object() as AsyncIterable<Buffer>, { key, expect: identity });
      for await (const item of reader.items()) {
        if (item.kind === 'data') await replica.write(item.offset, item.data);
        else await replica.zero(item.offset, item.length);
      }
      await replica.flush();
    } finally {
      await replica.close();
    }
  });
}

export const mergeStagesBench: Benchmark = {
  name: 'merge-stages',
  description: 'the merge path stage by stage (verify, staging, apply into VHDX) beside dd conv=fsync',
  async run(ctx) {
    const sizeMiB = ctx.quick ? 256 : 2048;
    const bytes = sizeMiB * MiB;
    const dir = await mkdtemp(join(ctx.workDir, 'merge-stages-'));
    try {
      const keys = await generateKeyPair();
      const logPath = join(dir, 'log.hrl');
      const source = { extents: [{ offset: 0, length: bytes, kind: 'data' as const }], read: async (_o: number, b: Buffer) => { randomBytes(b.length).copy(b); } };
      await writeLogFile(logPath, { ...identity, virtualSize: bytes }, source, { recipient: keys.publicKey });
      const { size } = await stat(logPath);
      const sha256 = await fileSha256(logPath);
      const object = () => createReadStream(logPath, { highWaterMark: MiB });
      const dd = async () => (await runCommand('dd', ['if=/dev/zero', `of=${join(dir, 'dd.out')}`, 'bs=1M', `count=${sizeMiB}`, 'conv=fsync', 'status=none'])).seconds;

      let staged: StagedLog | undefined;
      const stages = { dd, verify: () => verifyOnly(object, keys.privateKey), stage: () => timeIt(async () => { staged = await stageLog({ object: object(), key: keys.privateKey, expect: identity, sha256, size }, join(dir, 'staged')); }), apply: () => applyTimed(dir, bytes, staged!), direct: () => direct(dir, bytes, object, keys.privateKey, sha256, size), single: () => singlePass(dir, bytes, object, keys.privateKey), plain: () => timeIt(() => plainWrite(join(dir, 'plain.out'), bytes)) };
      // Rounds interleave every stage with dd; medians tame a machine shared with other work.
      const rounds = ctx.quick ? 3 : 2;
      const times: Record<keyof typeof stages, number[]> = { dd: [], verify: [], stage: [], apply: [], direct: [], single: [], plain: [] };
      for (let r = 0; r < rounds; r++) {
        for (const name of Object.keys(stages) as (keyof typeof stages)[]) times[name].push(await stages[name]());
        if (staged) await discardStaged(staged); // releases its share of the in-memory staging budget
        await Promise.all(['dd.out', 'staged', 'replica.vhdx', 'plain.out'].map((f) => rm(join(dir, f), { force: true })));
      }
      const median = (xs: number[]) => {
        const s = [...xs].sort((a, b) => a - b);
        const mid = s.length >> 1;
        return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
      };
      const ddSeconds = median(times.dd);
      const row = (name: string, seconds: number, goal = '-'): BenchRow => {
        const ratio = ddSeconds / seconds;
        return { name: `merge ${sizeMiB} MiB: ${name}`, ours: mbps(bytes, seconds), peer: `dd ${mbps(bytes, ddSeconds)}`, ratio: ratio.toFixed(2), goal, ok: goal === '-' ? undefined : ratio >= 0.8 };
      };
      process.stderr.write(`bench: merge-stages: ${rounds} rounds, dd ${times.dd.map((s) => mbps(bytes, s)).join(', ')}; worker path ${times.direct.map((s) => mbps(bytes, s)).join(', ')}\n`);
      const stagedPath = median(times.stage.map((s, i) => s + times.apply[i]!));
      return [
        row('verify only (read, decrypt, decompress)', median(times.verify)),
        row('stageLog, all staged (verify + SHA-256 + staging)', median(times.stage)),
        row('applyStaged into VHDX + flush', median(times.apply)),
        row('stage + apply (blocks written in part)', stagedPath),
        row('fresh VHDX blocks while verifying (worker)', median(times.direct), '≥ 0.80'),
        row('single pass into VHDX (no staging)', median(times.single)),
        row('plain file write + fsync (Node)', median(times.plain)),
      ];
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
};
