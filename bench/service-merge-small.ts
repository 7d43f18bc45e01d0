/**
 * npm run bench -- merge-small: how many small logs one worker process applies per second, the
 * load bench's question without the agent endpoint, TLS and BullMQ in the way. VMs with a dynamic
 * VHDX replica each commit one small log (64 KiB of random data) through the real service; then
 * Merger.mergeDisk (the worker's own entry: lock, stage, verify, apply, flush, state, catalog) runs
 * over every disk with 1, 8 and 32 disks at once. The peer is the rate 1,000 VMs on a 30 s cycle
 * need (33.3 logs/s); a worker should clear it with room to spare (goal: 1.5× at its default
 * concurrency of 8). Also reported: catalog queries per log, counted by wrapping ctx.db.query.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { PublicJwk } from '../shared/crypto/keys.js';
import { writeLog } from '../shared/log/index.js';
import { collect } from '../shared/log/testing.js';
import { Merger } from '../service/workers/merger.js';
import type { DiskRef } from '../service/queue.js';
import { enrolledAgent, httpsJson, testEnv, TestRedisUrl, testService } from '../test/service/helpers.js';
import type { TlsIdentity } from '../test/service/helpers.js';
import type { Benchmark, BenchRow } from './lib.js';

const MiB = 1 << 20;
const DiskBytes = 64 * MiB;
const LogBytes = 64 * 1024;
const Needed = 1000 / 30;
const Concurrencies = [1, 8, 32];

type Agent = TlsIdentity & { tenant: string; replicaKey: PublicJwk };

/** Seals, uploads and commits one log (or base chunk) of vm's disk d0 through the agent endpoint. */
async function ship(agentUrl: string, caPem: string, agent: Agent, vm: string, kind: 'chunk' | 'log', sequence: number): Promise<void> {
  const call = async (method: string, path: string, body: unknown) => {
    const r = await httpsJson(`${agentUrl}${path}`, { method, caPem, identity: agent, body });
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as Record<string, unknown>;
  };
  const offset = (sequence * LogBytes) % DiskBytes;
  const init = { tenant: agent.tenant, vm, disk: 'd0', generation: 1, sequence, virtualSize: DiskBytes, kind: kind === 'chunk' ? 'full' as const : 'incremental' as const };
  const bytes = await collect(writeLog(init, { extents: [{ offset, length: LogBytes, kind: 'data' }], read: async (_o, b) => { randomBytes(b.length).copy(b); } }, { recipient: agent.replicaKey }).sealed);
  const grant = await call('POST', `/v1/vms/${vm}/disks/d0/grants`, kind === 'chunk' ? { kind, generation: 1, index: sequence } : { kind, generation: 1, sequence });
  const up = await httpsJson(String(grant.url), { method: 'PUT', rawBody: bytes, caPem });
  if (up.status !== 200) throw new Error(`upload: ${up.status}`);
  const common = { key: String(grant.key), size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), createdAt: new Date().toISOString() };
  if (kind === 'chunk') {
    await call('POST', `/v1/vms/${vm}/disks/d0/chunks`, { generation: 1, index: sequence, ...common });
    await call('POST', `/v1/vms/${vm}/disks/d0/initial`, { generation: 1, mode: 'full', chunkCount: 1, consistency: 'crash', createdAt: common.createdAt });
  } else {
    await call('POST', `/v1/vms/${vm}/disks/d0/commits`, { generation: 1, sequence, ...common, consistency: 'crash' });
  }
}

/** Runs fn over items with at most `width` at once. */
async function pool<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

async function run(ctx: { quick: boolean }): Promise<BenchRow[]> {
  const vms = Array.from({ length: ctx.quick ? 60 : 300 }, (_, i) => `vm${i}`);
  const env = await testEnv((c) => {
    c.replicaFormat = 'vhdx';
  });
  const prefix = `lbbench-${randomBytes(4).toString('hex')}`;
  const redis = new Redis(TestRedisUrl, { maxRetriesPerRequest: null });
  const svc = await testService(env);
  try {
    const agent = await enrolledAgent(svc, 'bench', '*', 'hv1.bench.test');
    const caPem = svc.ctx.ca.certPem;
    const merger = new Merger(svc.ctx, redis, prefix);
    const refs: DiskRef[] = vms.map((vm) => ({ tenant: 'bench', vm, disk: 'd0' }));
    process.stderr.write(`bench: merge-small: ${vms.length} VMs with a VHDX replica each\n`);
    await pool(vms, 8, async (vm) => {
      const r = await httpsJson(`${svc.agentUrl}/v1/vms/${vm}`, { method: 'PUT', caPem, identity: agent, body: { disks: [{ id: 'd0', virtualSize: DiskBytes, format: 'raw' }], frequency: '30s', history: 0, appConsistentEvery: 0, compression: 'zstd' } });
      if (r.status !== 201) throw new Error(`register ${vm}: ${r.status}`);
      await ship(svc.agentUrl, caPem, agent, vm, 'chunk', 0);
    });
    await pool(refs, 8, async (ref) => {
      await merger.mergeDisk(ref);
    });
    let queries = 0;
    const db = svc.ctx.db;
    const query = db.query.bind(db);
    db.query = (<T>(sql: string, params?: unknown[]) => {
      queries++;
      return query<T>(sql, params);
    }) as typeof db.query;
    const rows: BenchRow[] = [];
    for (const [round, width] of Concurrencies.entries()) {
      await pool(vms, 8, (vm) => ship(svc.agentUrl, caPem, agent, vm, 'log', round + 1));
      queries = 0;
      let applied = 0;
      let missed = 0;
      const t0 = process.hrtime.bigint();
      await pool(refs, width, async (ref) => {
        const r = await merger.mergeDisk(ref);
        if (r?.applied !== 1 && ++missed <= 3) process.stderr.write(`bench: merge-small: ${ref.vm} not applied: ${JSON.stringify(r ?? 'locked')}\n`);
        applied += r?.applied ?? 0;
      });
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const rate = applied / seconds;
      const all = applied === vms.length;
      const goal = `${width === 8 ? '≥ 1.50, ' : ''}${applied}/${vms.length} applied`;
      rows.push({
        name: `merge-small: ${width} disk${width === 1 ? '' : 's'} at once, logs/s`,
        ours: `${rate.toFixed(1)}/s`, peer: `needed ${Needed.toFixed(1)}/s`, ratio: (rate / Needed).toFixed(2), goal, ok: !all ? false : width === 8 ? rate / Needed >= 1.5 : undefined,
      });
      process.stderr.write(`bench: merge-small: ${width} at once: ${(seconds / applied * width * 1000).toFixed(0)} ms per log per slot, ${(queries / applied).toFixed(1)} catalog queries per log\n`);
    }
    return rows;
  } finally {
    await svc.stop();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    await env.cleanup();
  }
}

export const mergeSmallBench: Benchmark = {
  name: 'merge-small',
  description: 'small logs applied per second by one worker process (Merger.mergeDisk at 1, 8, 32 disks at once) against the 33.3/s of 1,000 VMs on a 30 s cycle',
  run,
};
