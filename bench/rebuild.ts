/**
 * npm run bench -- rebuild: `catalog rebuild` of 1,000 VMs (100 with --quick), one disk each, from
 * synthetic replica directories (a state.json with two recovery points and a top layer) and a file
 * object store holding each disk's last applied log and one pending log, sealed as agents seal them.
 * The catalog is PostgreSQL (a scratch schema of the test database) and the embedded PGlite. It has
 * no peer: the row gives the whole rebuild and the time per VM.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { generateKeyPair } from '../shared/crypto/keys.js';
import { createDisk } from '../shared/disk/index.js';
import { writeLog } from '../shared/log/index.js';
import { collect, memorySource } from '../shared/log/testing.js';
import { logKey } from '../shared/objectstore/keys.js';
import { openObjectStore } from '../shared/objectstore/index.js';
import type { CatalogConfig } from '../service/catalog/db.js';
import { openCatalog } from '../service/catalog/db.js';
import { insertTenant, upsertAuthorization } from '../service/catalog/tenants.js';
import { rebuildCatalog } from '../service/maintenance/rebuild.js';
import type { AppliedState } from '../service/replication/replica.js';
import { PgUrl as TestPgUrl } from '../test/service/helpers.js';
import type { Benchmark, BenchRow } from './lib.js';

const PgUrl = process.env.LIFEBOAT_BENCH_PG ?? TestPgUrl;
const MiB = 1 << 20;

async function makeFleet(dir: string, vms: number): Promise<{ replicaRoot: string; objects: string }> {
  const replicaRoot = join(dir, 'replicas');
  const objects = join(dir, 'objects');
  const store = await openObjectStore(`file://${objects}`);
  const key = await generateKeyPair();
  const source = Buffer.alloc(MiB, 7);
  try {
    for (let i = 0; i < vms; i++) {
      const vm = `vm${String(i).padStart(4, '0')}`;
      const disk = join(replicaRoot, 'acme', vm, 'd0');
      await mkdir(disk, { recursive: true });
      const top = await createDisk(join(disk, 'p3.vhdx'), 'vhdx', { virtualSize: 64 * MiB, type: 'dynamic' });
      await top.close();
      const points = [1, 2].map((p) => ({ name: `p${p}`, layer: `p${p}.vhdx`, createdAt: new Date(Date.UTC(2026, 0, 1, p)).toISOString(), consistency: 'crash' as const, cycle: 10 * p }));
      const state: AppliedState = { version: 1, generation: 1, baseComplete: true, appliedSequence: 20, appliedCycle: 21, state: 'replicating', resyncReason: null,
        layers: ['base.vhdx', 'p1.vhdx', 'p2.vhdx', 'p3.vhdx'], points, fence: 1, updatedAt: new Date().toISOString() };
      await writeFile(join(disk, 'state.json'), JSON.stringify(state));
      for (const sequence of [20, 21]) {
        const init = { tenant: 'acme', vm, disk: 'd0', generation: 1, sequence, virtualSize: source.length, kind: 'incremental' as const, cycle: sequence + 1, capturedMs: Date.now() };
        const sealed = await collect(writeLog(init, memorySource(source, [{ offset: 0, length: 64 * 1024, kind: 'data' }]), { recipient: key.publicKey }).sealed);
        await store.put(logKey({ tenant: 'acme', vm, disk: 'd0' }, 1, sequence), sealed);
      }
    }
  } finally {
    await store.close();
  }
  return { replicaRoot, objects };
}

async function timeRebuild(catalog: CatalogConfig, fleet: { replicaRoot: string; objects: string }, vms: number): Promise<number> {
  const db = await openCatalog(catalog);
  const store = await openObjectStore(`file://${fleet.objects}`);
  try {
    await insertTenant(db, { name: 'acme', replicaPublicJwk: { kty: 'OKP', crv: 'X25519', x: 'AA' }, replicaPrivateWrapped: 'x' });
    await upsertAuthorization(db, { tenant: 'acme', pattern: '*.acme.example', storage: '', trustGroup: 'default' });
    const report = await rebuildCatalog({ config: { replicaRoot: fleet.replicaRoot }, db, store });
    if (report.vms !== vms || report.pending !== vms || report.points !== 2 * vms) throw new Error(`rebuild made ${JSON.stringify(report)}`);
    return report.seconds;
  } finally {
    await store.close();
    await db.close();
  }
}

export const rebuildBench: Benchmark = {
  name: 'rebuild',
  description: 'catalog rebuild of 1,000 VMs (100 with --quick) from state files and the object store, PostgreSQL and PGlite',
  async run(ctx) {
    const vms = ctx.quick ? 100 : 1000;
    const dir = join(ctx.workDir, 'rebuild');
    await rm(dir, { recursive: true, force: true });
    const fleet = await makeFleet(dir, vms);
    const rows: BenchRow[] = [];
    const schema = `bench_rebuild_${process.pid}`;
    try {
      for (const [name, catalog] of [['PostgreSQL', { kind: 'postgres', url: PgUrl, schema }], ['PGlite', { kind: 'pglite', dir: join(dir, 'catalog') }]] as [string, CatalogConfig][]) {
        const s = await timeRebuild(catalog, fleet, vms);
        rows.push({ name: `catalog rebuild, ${vms} VMs, ${name}`, ours: `${s.toFixed(1)} s`, peer: '—', ratio: `${(s * 1000 / vms).toFixed(1)} ms/VM`, goal: '—', ok: undefined });
      }
    } finally {
      const client = new pg.Client({ connectionString: PgUrl });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
      await rm(dir, { recursive: true, force: true });
    }
    return rows;
  },
};
