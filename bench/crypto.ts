/**
 * npm run bench -- crypto: sealing and opening incompressible data with the envelope, beside OpenSSL's
 * own AES-256-GCM (`openssl speed -evp aes-256-gcm`, 1 MiB blocks) in the same run. Goal: 1 GB/s or
 * more per core, and within 4x of OpenSSL.
 *
 * Throughput is per CPU second on both sides (`openssl speed` counts CPU time; ours is
 * process.cpuUsage()), so colleagues' load on the shared cores does not skew the ratio.
 */
import { randomBytes } from 'node:crypto';
import { generateKeyPair, openStream, sealStream } from '../shared/crypto/index.js';
import { readLog, writeLog } from '../shared/log/index.js';
import { memorySource } from '../shared/log/testing.js';
import { mbps, runCommand, type Benchmark, type BenchRow } from './lib.js';

/** OpenSSL's AES-256-GCM throughput on 1 MiB blocks, in bytes per second. */
async function opensslGcm(seconds: number): Promise<number> {
  const { stdout } = await runCommand('openssl', ['speed', '-evp', 'aes-256-gcm', '-bytes', '1048576', '-seconds', String(seconds)]);
  const m = /AES-256-GCM\s+([\d.]+)k/i.exec(stdout);
  if (!m) throw new Error(`cannot parse openssl speed output: ${stdout.slice(-300)}`);
  return Number(m[1]) * 1000;
}

/** CPU seconds (user + system, all threads) spent in fn. */
export async function cpuSeconds(fn: () => Promise<unknown>): Promise<number> {
  const before = process.cpuUsage();
  await fn();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1e6;
}

function row(name: string, bytes: number, seconds: number, peerBps: number): BenchRow {
  const ours = bytes / seconds;
  const ratio = peerBps / ours;
  return {
    name, ours: mbps(bytes, seconds), peer: mbps(peerBps, 1), ratio: `${ratio.toFixed(2)}x`,
    goal: '>= 1000 MB/s, OpenSSL within 4x', ok: ours >= 1e9 && ratio <= 4,
  };
}

export const cryptoBench: Benchmark = {
  name: 'crypto',
  description: 'envelope seal/open and the sealed log path (compression off) on incompressible data vs openssl speed aes-256-gcm',
  async run(ctx) {
    const total = (ctx.quick ? 256 : 2048) * 2 ** 20;
    const block = randomBytes(64 << 20);
    const pair = await generateKeyPair();
    const peer = await opensslGcm(2);

    // Warm up (JIT, allocator arenas) so the first measurement is not charged for them.
    const warmSealed: Buffer[] = [];
    for await (const b of sealStream([block], { recipient: pair.publicKey })) warmSealed.push(b);
    const warm = await openStream(warmSealed, { key: pair.privateKey });
    for await (const _ of warm.plaintext) { /* discard */ }

    // Seal: the plaintext is the same 64 MiB block over and over; the sealed bytes are discarded.
    const source = function* () { for (let at = 0; at < total; at += block.length) yield block; };
    const sealSeconds = await cpuSeconds(async () => { for await (const _ of sealStream(source(), { recipient: pair.publicKey })) { /* discard */ } });

    // Open: seal 256 MiB once (kept in memory), then open it repeatedly.
    const sealed: Buffer[] = [];
    for await (const b of sealStream([block, block, block, block], { recipient: pair.publicKey })) sealed.push(b);
    const rounds = Math.max(1, Math.round(total / (256 << 20)));
    const openSeconds = await cpuSeconds(async () => {
      for (let i = 0; i < rounds; i++) {
        const opened = await openStream(sealed, { key: pair.privateKey });
        for await (const _ of opened.plaintext) { /* discard */ }
      }
    });
    // The whole log path with compression off: extents read from memory, digest, packing, sealing.
    const identity = { tenant: 'bench', vm: 'vm', disk: 'disk', generation: 1, sequence: 1, virtualSize: block.length, compression: 'none' as const };
    const whole = [{ offset: 0, length: block.length, kind: 'data' as const }];
    const logSealed: Buffer[] = [];
    const logWriteSeconds = await cpuSeconds(async () => {
      for (let i = 0; i < rounds * 4; i++) {
        const { sealed: out } = writeLog(identity, memorySource(block, whole), { recipient: pair.publicKey });
        for await (const b of out) if (i === 0) logSealed.push(b);
      }
    });
    const logReadSeconds = await cpuSeconds(async () => {
      for (let i = 0; i < rounds * 4; i++) {
        const reader = await readLog(logSealed, { key: pair.privateKey });
        for await (const _ of reader.items()) { /* discard */ }
      }
    });
    return [
      row('envelope seal, incompressible (per CPU s)', total, sealSeconds, peer),
      row('envelope open, incompressible (per CPU s)', rounds * (256 << 20), openSeconds, peer),
      row('sealed log write, compression none (per CPU s)', rounds * 4 * block.length, logWriteSeconds, peer),
      row('sealed log read, compression none (per CPU s)', rounds * 4 * block.length, logReadSeconds, peer),
    ];
  },
};
