/**
 * The real guest check: the Debian test guest (docs/guest.md) boots under TCG with our cidata seed and
 * must come up with exactly the planned network: a NIC matched by MAC with two IPv4 addresses and one
 * IPv6 address, its default routes and DNS servers (explicit settings), and a second NIC addressed
 * through a tenant's mapping from the address reported on the primary. Read back from the guest's
 * serial readiness report and from qemu-guest-agent, compared with compareIntent.
 * Networking is qemu's user mode with restrict=on: nothing leaves the machine.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGuestReady } from '../../service/guest/ready.js';
import { newInstanceId, renderNoCloudFiles } from '../../service/failover/network/cloud-init.js';
import { parseMappings, resolveNicPlan } from '../../service/failover/network/mappings.js';
import { compareIntent, parseGuestAgentInterfaces, parseGuestNetwork } from '../../service/failover/network/readback.js';
import { writeNoCloudSeed } from '../../service/failover/network/seed.js';
import { validateVmNics } from '../../service/failover/network/settings.js';
import { qgaCommand } from '../guest/qemu-boot.js';
import { guestSkipReason, testGuest } from '../guest/test-guest.js';
import { execFileP, scratchDir } from '../helpers.js';

const skip = guestSkipReason();
const ReadyTimeoutMs = 600_000;

const nics = validateVmNics([
  { mac: '52:54:00:12:34:56', production: { mode: 'static', addresses: ['192.0.2.10/24', '198.51.100.20/25', '2001:db8:10::10/64'], gateway4: '192.0.2.1', gateway6: '2001:db8:10::1', dns: ['192.0.2.53', '2001:db8:10::53'], search: ['dr.example'] } },
  { mac: '52:54:00:12:34:57' },
]);
const mappings = parseMappings([{ kind: 'production', source: '192.168.10.0/24', target: '203.0.113.0/24', dns: ['203.0.113.53'] }]);
const plans = resolveNicPlan(nics, mappings, 'production', { '52:54:00:12:34:57': ['192.168.10.77/24'] });

// Skipped only where a guest cannot be built or booted; the reason is the skip's name.
describe.skipIf(skip !== undefined)(`a real guest takes the planned network${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let scratch: Awaited<ReturnType<typeof scratchDir>>;
  let qemu: ChildProcess | undefined;
  let exited: string | undefined;
  const serialLog = () => join(scratch.path, 'serial.log');
  const qgaSocket = () => join(scratch.path, 'qga.sock');

  beforeAll(async () => {
    scratch = await scratchDir('lifeboat-netguest-');
    const guest = await testGuest({ firmware: 'bios', cloudInit: true });
    const overlay = join(scratch.path, 'overlay.qcow2');
    await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', guest.image.endsWith('.vhdx') ? 'vhdx' : 'raw', '-b', guest.image, overlay]);
    const seed = await writeNoCloudSeed(scratch.path, renderNoCloudFiles(plans, { instanceId: newInstanceId('net-guest'), hostname: 'lifeboat-guest' }));
    const args = [
      '-accel', 'tcg', '-cpu', 'max', '-m', '1024', '-smp', '1',
      '-no-user-config', '-nodefaults', '-display', 'none', '-monitor', 'none',
      '-drive', `file=${overlay},if=virtio,format=qcow2`,
      '-drive', `file=${seed},media=cdrom,format=raw,readonly=on`,
      '-netdev', 'user,id=n0,restrict=on', '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56',
      '-netdev', 'user,id=n1,restrict=on', '-device', 'virtio-net-pci,netdev=n1,mac=52:54:00:12:34:57',
      '-chardev', `socket,id=qga,path=${qgaSocket()},server=on,wait=off`,
      '-device', 'virtio-serial', '-device', 'virtserialport,chardev=qga,name=org.qemu.guest_agent.0',
      '-serial', `file:${serialLog()}`,
    ];
    let stderr = '';
    qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    qemu.stderr!.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    qemu.on('exit', (code, signal) => { exited = `qemu exited (${signal ?? code}): ${stderr.trim()}`; });
  }, 3_600_000);

  afterAll(async () => {
    if (qemu && !exited) {
      const gone = new Promise((r) => qemu!.once('exit', r));
      qemu.kill('SIGTERM');
      await Promise.race([gone, sleep(5000)]);
      if (!exited) { qemu.kill('SIGKILL'); await gone; }
    }
    await scratch?.remove();
  });

  it('shows exactly the planned addresses, default routes and DNS servers', async () => {
    const started = Date.now();
    let report: ReturnType<typeof parseGuestReady>;
    for (;;) {
      const text = await readFile(serialLog(), 'utf8').catch(() => '');
      report = parseGuestReady(text);
      if (report) break;
      if (exited) throw new Error(exited);
      if (Date.now() - started > ReadyTimeoutMs) throw new Error(`no readiness report within ${ReadyTimeoutMs} ms; console ends:\n${text.slice(-3000)}`);
      await sleep(2000);
    }
    const observed = parseGuestNetwork({ addr: report.addr, route4: report.route, route6: report.route6, resolvConf: report.resolvConf });
    const result = compareIntent(plans, observed);
    expect(result.differences, JSON.stringify(result.nics, null, 1)).toEqual([]);
    expect(result.unchecked).toEqual([]);
    // qemu's user network advertises fec0::/64: the IPv4-only NIC takes an address and a route from it
    // (the kernel's default, shown as notices); the NIC with static IPv6 does not.
    expect(result.notices).toEqual([
      'nic 52:54:00:12:34:57: fec0::5054:ff:fe12:3457/64 is on dr1; the plan gives it no IPv6 address',
      'nic 52:54:00:12:34:57: default route ::/0 via fe80::2 on dr1; the plan gives it no IPv6 gateway',
    ]);
    expect(observed.nics.find((n) => n.mac === '52:54:00:12:34:56')).toMatchObject({ name: 'dr0', addresses: ['192.0.2.10/24', '198.51.100.20/25', '2001:db8:10::10/64'] });
    expect(observed.nics.find((n) => n.mac === '52:54:00:12:34:57')).toMatchObject({ name: 'dr1', addresses: ['203.0.113.77/24', 'fec0::5054:ff:fe12:3457/64'] });
    expect(observed.routes?.filter((r) => r.to.endsWith('/0') && r.dev === 'dr0')).toEqual([
      { family: 4, to: '0.0.0.0/0', via: '192.0.2.1', dev: 'dr0' },
      { family: 6, to: '::/0', via: '2001:db8:10::1', dev: 'dr0' },
    ]);
    expect(observed.dns).toEqual(expect.arrayContaining(['192.0.2.53', '2001:db8:10::53', '203.0.113.53']));
    console.log(`network guest: readiness report ${Math.round((Date.now() - started) / 1000)} s after qemu started`);

    const agent = parseGuestAgentInterfaces(await qgaCommand(qgaSocket(), 'guest-network-get-interfaces', 30_000));
    expect(compareIntent(plans, agent).differences).toEqual([]);
  }, ReadyTimeoutMs + 120_000);
});
