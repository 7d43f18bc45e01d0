/**
 * npm run bench -- merge: the merge worker's path for one log — stream the sealed log, verify and
 * stage it (service/workers/stage.ts), apply it into a dynamic VHDX replica and flush — beside
 * `dd … conv=fsync` writing the same number of bytes, in the same run. Goal: 80% of dd's rate or more.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Extent } from '../shared/disk/types.js';
import { createDisk } from '../shared/disk/index.js';
import { generateKeyPair } from '../shared/crypto/index.js';
import { writeLogFile } from '../shared/log/index.js';
import { applyStaged, stageLog } from '../service/workers/stage.js';
import { mbps, runCommand, syntheticDisk, timeIt, type Benchmark } from './lib.js';

const MiB = 1 << 20;
const identity = { tenant: 'bench', vm: 'vm', disk: 'disk', generation: 1, sequence: 1 };

export const mergeBench: Benchmark = {
  name: 'merge',
  description: 'stage + verify + apply a sealed log into a VHDX replica with fsync, beside dd conv=fsync',
  async run(ctx) {
    const sizeMiB = ctx.quick ? 128 : 1024;
    const diskPath = await syntheticDisk(ctx, Math.max(sizeMiB, 1024));
    const dir = await mkdtemp(join(ctx.workDir, 'merge-'));
    try {
      const keys = await generateKeyPair();
      const handle = await open(diskPath, 'r');
      const extents: Extent[] = [{ offset: 0, length: sizeMiB * MiB, kind: 'data' }];
      const logPath = join(dir, 'log.hrl');
      await writeLogFile(logPath, { ...identity, virtualSize: sizeMiB * MiB }, { extents, read: async (o, b) => { await handle.read(b, 0, b.length, o); } }, { recipient: keys.publicKey });
      await handle.close();
      const { size } = await stat(logPath);
      const { createHash } = await import('node:crypto');
      const sha256 = await new Promise<string>((resolve, reject) => {
        const h = createHash('sha256');
        createReadStream(logPath).on('data', (d) => h.update(d)).on('end', () => resolve(h.digest('hex'))).on('error', reject);
      });

      let stageSeconds = 0;
      const ours = await timeIt(async () => {
        let staged: Awaited<ReturnType<typeof stageLog>> | undefined;
        stageSeconds = await timeIt(async () => {
          staged = await stageLog({ object: createReadStream(logPath, { highWaterMark: MiB }), key: keys.privateKey, expect: identity, sha256, size }, join(dir, 'staged'));
        });
        const replica = await createDisk(join(dir, 'replica.vhdx'), 'vhdx', { virtualSize: sizeMiB * MiB });
        try {
          await applyStaged(staged!, replica);
          await replica.flush();
        } finally {
          await replica.close();
        }
      });
      process.stderr.write(`bench: merge: staging (fetch, verify, decrypt, decompress, write staging file) ${(stageSeconds / ours * 100).toFixed(0)}% of the time\n`);
      const dd = await runCommand('dd', ['if=/dev/zero', `of=${join(dir, 'dd.out')}`, 'bs=1M', `count=${sizeMiB}`, 'conv=fsync', 'status=none']);
      const bytes = sizeMiB * MiB;
      const ratio = (bytes / ours) / (bytes / dd.seconds);
      return [{ name: `merge ${sizeMiB} MiB log into VHDX (fsync)`, ours: mbps(bytes, ours), peer: `dd ${mbps(bytes, dd.seconds)}`, ratio: ratio.toFixed(2), goal: '≥ 0.80', ok: ratio >= 0.8 }];
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
};
