/**
 * The failover engine end to end with a real guest: the cached Debian test guest (BIOS, extlinux,
 * cloud-init, qemu-guest-agent) is protected by the agent, replicated to the service (real
 * PostgreSQL and Redis, VHDX replicas), written offline between cycles, and failed over through the
 * API by the embedded failover host: our NBD server exports the point, the qemu driver boots the
 * disk's own bootloader from a qcow2 overlay (TCG here: KVM aborts on this machine). The guest's
 * agent is asked what the disk holds and which addresses cloud-init gave it. The real failovers get
 * their production addresses from a network mapping of the address the NIC had at the source; the
 * planned one is driven through the real agent daemon (`lifeboat-agent run`), which ships the final
 * cycle, and its disk is then checked against the source block by block: equal wherever the failed-over
 * VM has not written, as its failover dirty bitmap (read through qemu's own NBD export) says.
 *
 * Skipped only where qemu-system-x86_64 is missing (said on stderr).
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { putVmNic } from '../../service/catalog/failovers.js';
import { cachedGuest } from '../../service/guest/cache.js';
import { FailoverBitmap, QemuDriver } from '../../service/failover/drivers/qemu.js';
import type { FailoverReport } from '../../service/failover/report.js';
import { cutPoint } from '../../service/workers/cut-point.js';
import { referee } from '../helpers.js';
import { writeGuestFile } from '../guest/guest-files.js';
import { FailoverScenario, must, qemuAvailable, withGuestAgent } from './failover-harness.js';

const hasQemu = qemuAvailable('the failover e2e tests');

const MinuteMs = 60_000;
const BootMs = 15 * MinuteMs;
const Mac = '52:54:00:12:34:56';

const guest = withGuestAgent;

const agentBin = join(import.meta.dirname, '..', '..', 'bin', 'lifeboat-agent.js');

/** The addresses the guest's agent lists for the NIC with Mac, once they include every one wanted (2 min at most). */
async function guestAddresses(workDir: string, wanted: string[]): Promise<string[]> {
  return guest(workDir, async (ga) => {
    let ips: string[] = [];
    for (let i = 0; i < 60; i++) {
      const nic = (await ga.networkInterfaces()).find((n) => n['hardware-address'] === Mac);
      ips = (nic?.['ip-addresses'] ?? []).map((x) => `${x['ip-address']}/${x.prefix}`);
      if (wanted.every((w) => ips.includes(w))) break;
      await new Promise((res) => setTimeout(res, 2000));
    }
    return ips;
  });
}

/** The read-back of the report once it ran: what the guest reported against the plan. */
interface NetworkReadBack { source: string; comparison: { ok: boolean; differences: unknown[] }; plan: { mac: string; values: { field: string; value: unknown; from: string }[] }[] }

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
    // Test settings are explicit; production ones come from the tenant's mappings of the addresses the
    // NIC had at the source (192.168.10.40 → 198.51.100.40 and so on, gateways and DNS from the mappings).
    await putVmNic(s.svc.ctx.db, 'acme', 'web01', {
      mac: Mac, position: 0, model: 'virtio', reportedAddresses: ['192.168.10.40/24', '192.168.10.41/24', 'fd00:10::40/64'],
      settings: {
        test: { mode: 'static', addresses: ['192.0.2.10/24', '192.0.2.11/24', '2001:db8::10/64'], gateway4: '192.0.2.1', gateway6: '2001:db8::1', dns: ['192.0.2.53'], search: ['dr.example'] },
      },
    });
    must(await s.api('PUT', '/v1/tenants/acme/network-mappings', {
      mappings: [
        { kind: 'production', source: '192.168.10.0/24', target: '198.51.100.0/24', gateway: '198.51.100.1', dns: ['198.51.100.53'] },
        { kind: 'production', source: 'fd00:10::/64', target: '2001:db8:60::/64', gateway: '2001:db8:60::1', dns: ['2001:db8:60::53'] },
      ],
    }), 'network mappings');
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
    // The production addresses mapped from the source's, with the mappings' gateways and DNS, read back.
    const mappedIps = ['198.51.100.40/24', '198.51.100.41/24', '2001:db8:60::40/64'];
    expect(await guestAddresses(s.workDir(ready.id), mappedIps)).toEqual(expect.arrayContaining(mappedIps));
    const read = await s.waitFor(ready.id, (x) => x.steps.some((st) => st.step === 'read-back' && st.status !== 'started'), 12 * MinuteMs);
    const network = read.network as NetworkReadBack;
    expect(network.comparison.differences).toEqual([]);
    expect(network.comparison.ok).toBe(true);
    const mapped = 'mapping 192.168.10.0/24→198.51.100.0/24';
    expect(network.plan[0]!.values).toEqual(expect.arrayContaining([
      expect.objectContaining({ field: 'addresses[0]', value: '198.51.100.40/24', from: mapped }),
      expect.objectContaining({ field: 'addresses[1]', value: '198.51.100.41/24', from: mapped }),
      expect.objectContaining({ field: 'addresses[2]', value: '2001:db8:60::40/64', from: 'mapping fd00:10::/64→2001:db8:60::/64' }),
      expect.objectContaining({ field: 'gateway4', value: '198.51.100.1', from: mapped }),
      expect.objectContaining({ field: 'gateway6', value: '2001:db8:60::1', from: 'mapping fd00:10::/64→2001:db8:60::/64' }),
    ]));
    // Forward logs from the old primary (it came back) are held while the VM is failed over.
    await writeGuestFile(disk, '/root/from-old-primary', 'z\n');
    await s.replicate();
    const held = await s.svc.ctx.db.query(`SELECT * FROM logs WHERE tenant = 'acme' AND vm = 'web01' AND status = 'pending'`);
    expect(held.length).toBeGreaterThan(0);
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

  it('a planned failover ships the final cycle through the agent daemon; committed, it runs on across restarts of serve and of its host, its disk the source\'s wherever it has not written', async () => {
    // The VM's last writes at the source, not replicated yet: only the final cycle can carry them.
    await writeGuestFile(disk, '/root/marker', 'final\n');
    const daemon = agentDaemon(s.state.dir);
    let pumping = true;
    const pump = (async () => {
      while (pumping) {
        while ((await s.merger.merge()) > 0) { /* the final cycle's logs, as they arrive */ }
        await new Promise((res) => setTimeout(res, 300));
      }
    })();
    let running: FailoverReport;
    try {
      const r = await s.api('POST', '/v1/tenants/acme/vms/web01/failovers', { kind: 'planned' });
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      running = await s.waitFor(r.body.id, (x) => x.state === 'running', BootMs);
    } finally {
      pumping = false;
      await pump;
      daemon.kill('SIGTERM');
    }
    expect(running.kind).toBe('planned');
    expect(running.steps.some((x) => x.step === 'final-cycle' && x.status === 'done')).toBe(true);
    expect((await guest(s.workDir(running.id), (ga) => ga.readFile('/root/marker'))).toString()).toBe('final\n');
    const status = await agentCli(s.state.dir, ['status', '--json']);
    expect(JSON.stringify(JSON.parse(status))).toContain('"failedOver"');

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
    expect((await s.api('GET', `/v1/failovers/${running.id}`)).body.state).toBe('committed');

    // The failed-over disk, flattened, against the source: equal outside the blocks its bitmap names.
    const { flat, dirty } = await flattenWithBitmap(s, running.id);
    const expected = join(s.env.dir, 'expected.raw');
    await copyFile(disk, expected);
    const dirtyBytes = await overlay(expected, flat, dirty);
    expect(dirtyBytes).toBeGreaterThan(0);
    const allocated = execFileSync('du', ['-B1', disk]).toString().split('\t')[0]!;
    expect(dirtyBytes).toBeLessThan(Number(allocated) / 4);
    expect(() => execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', disk, flat])).toThrow();
    await referee('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', expected, flat]);
  }, 30 * MinuteMs);
});

/** `lifeboat-agent run` on the scenario's agent state (its own process): it answers the command channel. */
function agentDaemon(stateDir: string): ChildProcess {
  const child = spawn(process.execPath, [agentBin, 'run', '--state-dir', stateDir], { stdio: ['ignore', 'ignore', 'inherit'] });
  return child;
}

function agentCli(stateDir: string, args: string[]): Promise<string> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [agentBin, ...args, '--state-dir', stateDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => (code === 0 ? res(out) : rej(new Error(`lifeboat-agent ${args.join(' ')}: ${code} ${err}`))));
  });
}

/**
 * Pauses the failover's VM, exports its first disk through qemu's own NBD server with a frozen copy of
 * the failover bitmap (qemu exports only a disabled bitmap read-only), flattens the disk with qemu-img
 * and lists the bitmap's dirty extents with nbdinfo; then removes the export and lets the VM run on.
 */
async function flattenWithBitmap(s: FailoverScenario, id: string): Promise<{ flat: string; dirty: { offset: number; length: number }[] }> {
  const driver = s.svc.failoverHost!.runtime.driver;
  if (!(driver instanceof QemuDriver)) throw new Error('the failover host does not run the qemu driver');
  const qmp = await driver.qmp(s.workDir(id));
  const sock = join(s.hostDir, 'cmp.sock');
  const flat = join(s.env.dir, 'flat.raw');
  const frozen = 'cmp';
  await qmp.execute('stop');
  try {
    await qmp.execute('block-dirty-bitmap-add', { node: 'ov0', name: frozen, disabled: true });
    await qmp.execute('block-dirty-bitmap-merge', { node: 'ov0', target: frozen, bitmaps: [FailoverBitmap] });
    await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: sock } } });
    await qmp.execute('block-export-add', { type: 'nbd', id: frozen, 'node-name': 'ov0', name: 'ov0', writable: false, bitmaps: [frozen] });
    const uri = `nbd+unix:///ov0?socket=${sock}`;
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, flat]);
    const map = JSON.parse(execFileSync('nbdinfo', ['--json', `--map=qemu:dirty-bitmap:${frozen}`, uri]).toString()) as { offset: number; length: number; type: number }[];
    return { flat, dirty: map.filter((e) => (e.type & 1) !== 0) };
  } finally {
    await qmp.execute('block-export-del', { id: frozen }).catch(() => undefined);
    await qmp.execute('nbd-server-stop').catch(() => undefined);
    await qmp.execute('block-dirty-bitmap-remove', { node: 'ov0', name: frozen }).catch(() => undefined);
    await qmp.execute('cont');
  }
}

/** Copies the extents from src over dst (same offsets); returns the bytes copied. */
async function overlay(dst: string, src: string, extents: { offset: number; length: number }[]): Promise<number> {
  const [from, to] = [await open(src, 'r'), await open(dst, 'r+')];
  const buf = Buffer.alloc(4 << 20);
  let total = 0;
  try {
    for (const e of extents) {
      for (let at = e.offset; at < e.offset + e.length;) {
        const n = Math.min(buf.length, e.offset + e.length - at);
        const { bytesRead } = await from.read(buf, 0, n, at);
        await to.write(buf, 0, bytesRead, at);
        at += n;
        total += n;
      }
    }
  } finally {
    await from.close();
    await to.close();
  }
  return total;
}
