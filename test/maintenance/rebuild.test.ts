/**
 * Catalog rebuild: two VMs (one of two disks) replicate with cycles and recovery points through the
 * agent endpoint, one log is committed and not yet merged; the catalog then loses every VM row
 * (tenants, servers and keys stay, as a restored backup brings them) and is rebuilt from the state
 * files and the object store. The rebuilt catalog names the same disks, applied sequences and points;
 * the pending log merges; the agent goes on at its next sequence with no new base; every point
 * exports equal (qemu-img compare) to its export before the loss and to the agent's disk at its cycle.
 * A second rebuild through the CLI leaves the VMs as they are. Real Redis, PostgreSQL, VHDX.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listVms } from '../../service/catalog/vms.js';
import { rebuildCatalog } from '../../service/maintenance/rebuild.js';
import { Pointer } from '../../service/workers/points-job.js';
import { referee, runBin } from '../helpers.js';
import { SimAgent, scribble } from '../service/agent-sim.js';
import type { MergeHarness } from '../service/helpers.js';
import { PgUrl, enrolledAgent, mergeHarness, operator } from '../service/helpers.js';

const MiB = 1 << 20;
const Hour = 3_600_000;
const t0 = Date.parse('2026-01-01T00:00:00.000Z');
const capturedMs = (c: number) => Date.parse('2026-12-01T00:00:00.000Z') + c * 30_000;

interface Vm { agent: SimAgent; disks: string[]; sources: Map<string, Buffer>; seq: Map<string, number>; refs: Map<number, Map<string, Buffer>> }

let h: MergeHarness;
let pointer: Pointer;
const vms = new Map<string, Vm>();
let cycle = 0;

/** One agent cycle of every VM: each disk written and its log committed. */
async function agentCycle(): Promise<number> {
  cycle++;
  for (const vm of vms.values()) {
    vm.agent.cycle = { id: cycle, capturedMs: capturedMs(cycle) };
    for (const d of vm.disks) {
      const source = vm.sources.get(d)!;
      const seq = vm.seq.get(d)! + 1;
      vm.seq.set(d, seq);
      await vm.agent.commitLog(d, seq, await vm.agent.sealed(d, 1, seq, source, scribble(source, [[((cycle + seq) % 4) * MiB, 96 * 1024]])));
    }
    vm.refs.set(cycle, new Map([...vm.sources].map(([d, s]) => [d, Buffer.from(s)])));
  }
  return cycle;
}

async function exportTo(vm: string, disk: string, point: number | string, out: string): Promise<void> {
  const r = await operator(h.svc, 'POST', `/v1/tenants/acme/vms/${vm}/exports`, { disk, point: String(point), format: 'raw', path: out });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
}

const diskRows = () => h.svc.ctx.db.query<Record<string, unknown>>(`SELECT vm, id, virtual_size, replica_dir, generation, base_complete, applied_sequence, applied_cycle, state
  FROM disks WHERE tenant = 'acme' ORDER BY vm, id`);
const pointRows = () => h.svc.ctx.db.query<{ id: number; vm: string; layer: string; cycle: number; consistency: string; createdAt: Date }>(
  `SELECT id, vm, layer, cycle, consistency, created_at AS "createdAt" FROM recovery_points WHERE tenant = 'acme' ORDER BY vm, created_at`);

beforeAll(async () => {
  h = await mergeHarness();
  const id = await enrolledAgent(h.svc, 'acme', '*', 'hv1.acme.example');
  for (const [name, disks] of [['web', ['d0', 'd1']], ['db', ['d0']]] as const) {
    const agent = new SimAgent(h.svc, id, name);
    await agent.register(disks.map((d) => ({ id: d, virtualSize: 4 * MiB })), { history: 4 });
    vms.set(name, { agent, disks: [...disks], sources: new Map(disks.map((d) => [d, Buffer.alloc(4 * MiB)])), seq: new Map(disks.map((d) => [d, 0])), refs: new Map() });
  }
  pointer = new Pointer(h.svc.ctx, h.redis, h.lockPrefix);
  cycle = 1;
  for (const vm of vms.values()) {
    vm.agent.cycle = { id: 1, capturedMs: capturedMs(1) };
    for (const [d, source] of vm.sources) await vm.agent.commitBase(d, 1, 'full', source, [scribble(source, [[0, MiB]])]);
    vm.refs.set(1, new Map([...vm.sources].map(([d, s]) => [d, Buffer.from(s)])));
  }
  await h.merger.merge();
});
afterAll(async () => {
  await h?.close();
});

describe('catalog rebuild', () => {
  it('rebuilds VMs, disks, applied sequences, pending logs and points; replication goes on with no new base', async () => {
    // Two points per VM, an hour apart, each at a cycle every disk applied.
    for (const hour of [0, 1]) {
      await agentCycle();
      await h.merger.merge();
      for (const vm of await listVms(h.svc.ctx.db)) expect(await pointer.makePoint(vm, new Date(t0 + hour * Hour))).toBe(true);
    }
    await agentCycle();
    await h.merger.merge();
    // Committed and not merged when the catalog is lost.
    const pendingCycle = await agentCycle();

    const disksBefore = await diskRows();
    const pointsBefore = await pointRows();
    expect(pointsBefore.length).toBe(4);
    const refsDir = h.env.dir;
    const exportsBefore = new Map<string, string>();
    for (const p of pointsBefore) {
      for (const d of vms.get(p.vm)!.disks) {
        const out = join(refsDir, `before-${p.vm}-${d}-${p.layer}.raw`);
        await exportTo(p.vm, d, p.id, out);
        exportsBefore.set(`${p.vm}/${d}/${p.layer}`, out);
      }
    }

    // The loss: every VM and what hangs on it (disks, logs, bases, points).
    await h.svc.ctx.db.query(`DELETE FROM vms WHERE tenant = 'acme'`);
    expect(await listVms(h.svc.ctx.db)).toEqual([]);

    const report = await rebuildCatalog(h.svc.ctx);
    expect(report).toMatchObject({ vms: 2, disks: 3, points: 4, pending: 3, kept: 0, skipped: [] });
    expect(await diskRows()).toEqual(disksBefore);
    const pointsAfter = await pointRows();
    expect(pointsAfter.map((p) => [p.vm, p.layer, p.cycle, p.consistency, new Date(p.createdAt).getTime()]))
      .toEqual(pointsBefore.map((p) => [p.vm, p.layer, p.cycle, p.consistency, new Date(p.createdAt).getTime()]));

    // The agent registers again (as every cycle does): its settings come back, and nothing resets.
    const again = await vms.get('web')!.agent.call('PUT', '/v1/vms/web', { disks: ['d0', 'd1'].map((id) => ({ id, virtualSize: 4 * MiB, format: 'raw' })), frequency: '30s', history: 4, appConsistentEvery: 0, compression: 'zstd' });
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect((await listVms(h.svc.ctx.db)).find((v) => v.name === 'web')).toMatchObject({ serverFqdn: 'hv1.acme.example', history: 4, frequencySeconds: 30 });

    // The pending log merges, and the agent goes on at its next sequence in the same generation.
    await h.merger.merge();
    const next = await agentCycle();
    await h.merger.merge();
    for (const [name, vm] of vms) {
      for (const d of vm.disks) {
        const s = await vm.agent.diskState(d);
        expect(s, `${name}/${d}`).toMatchObject({ generation: 1, appliedSequence: vm.seq.get(d), state: 'replicating' });
        expect((await vm.agent.replica(d)).equals(vm.refs.get(next)!.get(d)!), `${name}/${d} latest`).toBe(true);
      }
    }
    expect(next).toBe(pendingCycle + 1);

    // Every point exports as before the loss (qemu-img compare), and as the agent's disk was then.
    for (const p of pointsAfter) {
      for (const d of vms.get(p.vm)!.disks) {
        const out = join(refsDir, `after-${p.vm}-${d}-${p.layer}.raw`);
        await exportTo(p.vm, d, p.id, out);
        expect(await referee('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', exportsBefore.get(`${p.vm}/${d}/${p.layer}`)!, out])).toContain('Images are identical');
        expect((await readFile(out)).equals(vms.get(p.vm)!.refs.get(p.cycle)!.get(d)!), `${p.vm}/${d} at cycle ${p.cycle}`).toBe(true);
      }
    }
  });

  it('a second rebuild through the CLI leaves the VMs as they are', async () => {
    const r = await runBin('service', ['catalog', 'rebuild', '--config', h.env.config.path, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ vms: 0, kept: 2, skipped: [] });
  });

  it('refuses a catalog without tenants in one line', async () => {
    const cfg = JSON.parse(await readFile(h.env.config.path, 'utf8')) as Record<string, unknown>;
    cfg.catalog = { kind: 'postgres', url: (cfg.catalog as { url: string }).url, schema: `${h.env.schema}_empty` };
    const path = join(dirname(h.env.config.path), 'empty.json');
    await writeFile(path, JSON.stringify(cfg));
    const r = await runBin('service', ['catalog', 'rebuild', '--config', path]);
    const client = new pg.Client({ connectionString: PgUrl });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${h.env.schema}_empty CASCADE`);
    await client.end();
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('lifeboat-service: the catalog has no tenants: restore a backup first (lifeboat-service restore), then rebuild');
  });
});
