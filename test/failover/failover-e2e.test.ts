/**
 * The failover engine end to end with a real guest: the cached Debian test guest (BIOS, extlinux,
 * cloud-init, qemu-guest-agent) is protected by the agent, replicated to the service (real
 * PostgreSQL and Redis, VHDX replicas), written offline between cycles, and failed over through the
 * API by the embedded failover host: our NBD server exports the point, the qemu driver boots the
 * disk's own bootloader from a qcow2 overlay (TCG here: KVM aborts on this machine). The guest's
 * agent is asked what the disk holds and which addresses cloud-init gave it.
 *
 * Skipped only where qemu-system-x86_64 is missing (said on stderr).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { putVmNic } from '../../service/catalog/failovers.js';
import { cachedGuest } from '../../service/guest/cache.js';
import { cutPoint } from '../../service/workers/cut-point.js';
import { writeGuestFile } from '../guest/guest-files.js';
import { FailoverScenario, qemuAvailable, withGuestAgent } from './failover-harness.js';

const hasQemu = qemuAvailable('the failover e2e tests');

const MinuteMs = 60_000;
const BootMs = 15 * MinuteMs;
const Mac = '52:54:00:12:34:56';

const guest = withGuestAgent;

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe.skipIf(!hasQemu)('failover of a real guest', () => {
  let s: FailoverScenario;
  let disk: string;
  let firstPoint: number;

  beforeAll(async () => {
    const image = await cachedGuest({ firmware: 'bios', format: 'raw', cloudInit: true });
    s = await FailoverScenario.start();
    disk = join(s.env.dir, 'web01.raw');
    execFileSync('cp', ['--sparse=always', image, disk]);
    await writeGuestFile(disk, '/root/marker', 'one\n');
    await s.protect('web01', [disk]);
    await s.replicate();
    await putVmNic(s.svc.ctx.db, 'acme', 'web01', {
      mac: Mac, position: 0, model: 'virtio', reportedAddresses: [],
      settings: {
        test: { mode: 'static', addresses: ['192.0.2.10/24', '192.0.2.11/24', '2001:db8::10/64'], gateway4: '192.0.2.1', gateway6: '2001:db8::1', dns: ['192.0.2.53'], search: ['dr.example'] },
        production: { mode: 'static', addresses: ['198.51.100.10/24'], gateway4: '198.51.100.1', dns: ['198.51.100.53'], search: [] },
      },
    });
    firstPoint = (await cutPoint(s.svc.ctx, s.svc.failoverHost!.runtime.redis, { tenant: 'acme', vm: 'web01', timeoutMs: 60_000, lockPrefix: s.svc.failoverHost!.runtime.lockPrefix })).id;
    await writeGuestFile(disk, '/root/marker', 'two\n');
    await s.replicate();
  }, 20 * MinuteMs);

  afterAll(async () => {
    // A committed failover lives on until failback: end its VM here.
    if (s) {
      const rt = s.svc.failoverHost!.runtime;
      for (const id of await readdir(join(s.hostDir, 'vms')).catch(() => [] as string[])) {
        await rt.driver.stop(join(s.hostDir, 'vms', id)).catch(() => undefined);
        await rt.driver.cleanup(join(s.hostDir, 'vms', id)).catch(() => undefined);
      }
      await s.stop();
    }
  }, 5 * MinuteMs);

  it('runs two test failovers of one VM side by side from the latest cycle while replication goes on, each with its own network; stopping them leaves nothing', async () => {
    const a = await s.api('POST', '/v1/tenants/acme/vms/web01/failovers', { kind: 'test', point: 'latest' });
    expect(a.status, JSON.stringify(a.body)).toBe(202);
    const b = await s.api('POST', '/v1/tenants/acme/vms/web01/failovers', { kind: 'test', point: 'latest' });
    expect(b.status, JSON.stringify(b.body)).toBe(202);
    // Replication goes on underneath: a new cycle is applied while both boot.
    await writeGuestFile(disk, '/root/during', 'x\n');
    await s.replicate();
    const applied = await s.svc.ctx.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM logs WHERE tenant = 'acme' AND vm = 'web01' AND status = 'applied'`);
    expect(applied[0]!.n).toBeGreaterThanOrEqual(2);

    const ra = await s.waitFor(a.body.id, (r) => r.state === 'ready', BootMs);
    const rb = await s.waitFor(b.body.id, (r) => r.state === 'ready', BootMs);
    for (const r of [ra, rb]) {
      expect(r.kind).toBe('test');
      expect(r.point.id).not.toBeNull();
      expect(r.rpoSeconds).not.toBeNull();
      expect(r.rtoSeconds).toBeGreaterThan(0);
      expect(r.steps.map((x) => `${x.step}:${x.status}`)).toEqual(expect.arrayContaining(['prepare:done', 'start:done', 'wait-ready:done']));
      expect(r.screenshot).not.toBeNull();
      const png = await fetch(`${s.svc.apiUrl}${r.screenshot!.path}`, { headers: { authorization: `Bearer ${(await readFile(s.svc.ctx.config.adminTokenFile, 'utf8')).trim()}` } });
      expect(png.headers.get('content-type')).toBe('image/png');
      expect(Buffer.from(await png.arrayBuffer()).subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
      // The guest's own disk, at the point's cycle.
      expect((await guest(s.workDir(r.id), (ga) => ga.readFile('/root/marker'))).toString()).toBe('two\n');
      // cloud-init applied the test settings to the NIC matched by MAC.
      const nics = await guest(s.workDir(r.id), async (ga) => {
        for (let i = 0; i < 60; i++) {
          const list = await ga.networkInterfaces();
          const nic = list.find((n) => n['hardware-address'] === Mac);
          const ips = (nic?.['ip-addresses'] ?? []).map((x) => `${x['ip-address']}/${x.prefix}`);
          if (ips.includes('192.0.2.10/24') && ips.includes('2001:db8::10/64')) return ips;
          await new Promise((res) => setTimeout(res, 2000));
        }
        return (await ga.networkInterfaces()).flatMap((n) => (n['ip-addresses'] ?? []).map((x) => `${x['ip-address']}/${x.prefix}`));
      });
      expect(nics).toEqual(expect.arrayContaining(['192.0.2.10/24', '192.0.2.11/24', '2001:db8::10/64']));
      // The report holds the plan beside what the guest reported, with no difference.
      const read = await s.waitFor(r.id, (x) => x.steps.some((st) => st.step === 'read-back' && st.status !== 'started'), 12 * MinuteMs);
      const network = read.network as { source: string; comparison: { ok: boolean; differences: unknown[] }; plan: { mac: string; values: { field: string; from: string }[] }[] };
      expect(network.source).toBe('console');
      expect(network.comparison.differences).toEqual([]);
      expect(network.comparison.ok).toBe(true);
      expect(network.plan[0]!.values).toEqual(expect.arrayContaining([expect.objectContaining({ field: 'gateway4', from: 'explicit' })]));
    }
    // Each run its own network: the two VMs' NICs are on different isolated segments.
    const netdev = async (id: string) => {
      const pid = Number((await readFile(join(s.workDir(id), 'qemu.pid'), 'utf8')).trim());
      return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').find((x) => x.includes('mcast=')) ?? '';
    };
    const [na, nb] = [await netdev(ra.id), await netdev(rb.id)];
    expect(na).toMatch(/mcast=/);
    expect(na).not.toBe(nb);

    const pids = await Promise.all([ra.id, rb.id].map(async (id) => Number((await readFile(join(s.workDir(id), 'qemu.pid'), 'utf8')).trim())));
    for (const r of [ra, rb]) expect((await s.api('POST', `/v1/tenants/acme/failovers/${r.id}/stop`, {})).status).toBe(202);
    for (const r of [ra, rb]) {
      const done = await s.waitFor(r.id, (x) => x.endedAt !== null, 2 * MinuteMs);
      expect(done.state).toBe('stopped');
    }
    for (const pid of pids) expect(alive(pid)).toBe(false);
    for (const r of [ra, rb]) expect(existsSync(s.workDir(r.id))).toBe(false);
    expect(await s.svc.ctx.db.query('SELECT * FROM point_pins')).toEqual([]);
  }, 40 * MinuteMs);

  it('an unplanned failover from an older point shows the old content; revert returns the VM to replicating', async () => {
    const r = await s.api('POST', '/v1/tenants/acme/vms/web01/failovers', { kind: 'unplanned', point: String(firstPoint) });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    // One real failover of a VM at a time.
    const again = await s.api('POST', '/v1/tenants/acme/vms/web01/failovers', { kind: 'unplanned', point: 'latest' });
    expect(again.status).toBe(409);
    const ready = await s.waitFor(r.body.id, (x) => x.state === 'running', BootMs);
    expect(ready.point.id).toBe(firstPoint);
    expect((await guest(s.workDir(ready.id), (ga) => ga.readFile('/root/marker'))).toString()).toBe('one\n');
    // A test failover's verbs do not apply to a real one, and the reverse.
    expect((await s.api('POST', `/v1/failovers/${ready.id}/stop`, {})).status).toBe(409);
    expect((await s.api('POST', `/v1/failovers/${ready.id}/revert`, {})).status).toBe(202);
    const done = await s.waitFor(ready.id, (x) => x.endedAt !== null, 2 * MinuteMs);
    expect(done.state).toBe('reverted');
    // Replicating again: a new cycle is applied.
    await writeGuestFile(disk, '/root/after-revert', 'y\n');
    await s.replicate();
    const disks = await s.svc.ctx.db.query<{ state: string }>(`SELECT state FROM disks WHERE tenant = 'acme' AND vm = 'web01'`);
    expect(disks.map((d) => d.state)).toEqual(['replicating']);
    expect(await s.svc.ctx.db.query(`SELECT * FROM logs WHERE tenant = 'acme' AND vm = 'web01' AND status = 'pending'`)).toEqual([]);
  }, 30 * MinuteMs);

  it('a committed failover keeps running across a restart of serve and of its failover host', async () => {
    const r = await s.api('POST', '/v1/tenants/acme/vms/web01/failovers', { kind: 'unplanned', point: 'latest' });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const running = await s.waitFor(r.body.id, (x) => x.state === 'running', BootMs);
    expect((await s.api('POST', `/v1/failovers/${running.id}/commit`, {})).status).toBe(202);
    const committed = await s.waitFor(running.id, (x) => x.state === 'committed', 10 * MinuteMs);
    expect(committed.steps.some((x) => x.step === 'commit' && x.status === 'done')).toBe(true);
    expect(await s.svc.ctx.db.query('SELECT * FROM point_pins')).toEqual([]);
    const pid = Number((await readFile(join(s.workDir(running.id), 'qemu.pid'), 'utf8')).trim());
    await s.restart();
    expect(alive(pid)).toBe(true);
    // The guest writes after the restart, and reads back what it wrote.
    await guest(s.workDir(running.id), (ga) => ga.exec('/bin/sh', ['-c', 'echo after-restart > /root/written && sync']));
    expect((await guest(s.workDir(running.id), (ga) => ga.readFile('/root/written'))).toString()).toBe('after-restart\n');
    await s.svc.failoverHost!.tick();
    const after = await s.api('GET', `/v1/failovers/${running.id}`);
    expect(after.body.state).toBe('committed');
    // Forward logs from the old primary are held while the VM is failed over.
    await writeGuestFile(disk, '/root/from-old-primary', 'z\n');
    await s.replicate();
    const pending = await s.svc.ctx.db.query(`SELECT * FROM logs WHERE tenant = 'acme' AND vm = 'web01' AND status = 'pending'`);
    expect(pending.length).toBeGreaterThan(0);
  }, 30 * MinuteMs);
});
