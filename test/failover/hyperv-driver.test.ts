/**
 * The hyperv failover driver without a Windows host: FakeHypervHost, a recording runner (a fake, since
 * no Hyper-V host runs here), checks every script the driver hands it against the golden files in
 * golden/hyperv/ (UPDATE_GOLDEN=1 rewrites them) and answers as a host would, failures included.
 * Real parts: our VHDX writer makes the children, read back through openDisk and flattened; qemu-img
 * compares the flattened disk with the expected bytes; a real SSH runner process (ssh replaced by a
 * fake program) shows the encoded command.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChildDisk, createDisk, openDisk } from '../../shared/disk/index.js';
import { flatten } from '../../shared/disk/ops/index.js';
import { isLifeboatError } from '../../shared/errors.js';
import { HypervDriver, type HypervDriverConfig, type HypervPrepareInput } from '../../service/failover/drivers/hyperv.js';
import { psQuote, scriptStep } from '../../service/failover/drivers/hyperv-ps.js';
import { encodePowerShell, type HypervRunner, type RunResult, SshHypervRunner } from '../../shared/hyperv/runner.js';
import { resolveNicPlan } from '../../service/failover/network/mappings.js';
import { parseNicSettings } from '../../service/failover/network/settings.js';
import { referee, scratchDir } from '../helpers.js';
import { decodePng } from './qemu-helpers.js';

const GoldenDir = join(dirname(fileURLToPath(import.meta.url)), 'golden', 'hyperv');
const update = process.env.UPDATE_GOLDEN === '1';
const MiB = 1024 * 1024;

type Answer = Partial<RunResult> & { json?: unknown };

/**
 * A fake Hyper-V host: records each script, compares it with `<scenario>/<nn>-<step>.ps1`, and answers
 * from the queue given per step (or `{}` as JSON).
 */
class FakeHypervHost implements HypervRunner {
  readonly host = 'hv-fake.test';
  readonly scripts: string[] = [];
  private readonly answers = new Map<string, Answer[]>();

  constructor(private readonly scenario: string | undefined) {}

  answer(step: string, ...answers: Answer[]): this {
    this.answers.set(step, [...(this.answers.get(step) ?? []), ...answers]);
    return this;
  }

  async run(script: string): Promise<RunResult> {
    this.scripts.push(script);
    const step = scriptStep(script) ?? 'unknown';
    if (this.scenario) {
      const file = join(GoldenDir, this.scenario, `${String(this.scripts.length).padStart(2, '0')}-${step}.ps1`);
      if (update) {
        await mkdir(dirname(file), { recursive: true });
        await writeFile(file, script);
      } else {
        expect(script, `golden ${file}`).toBe(await readFile(file, 'utf8'));
      }
    }
    const queue = this.answers.get(step) ?? [];
    const a = queue.length > 1 ? queue.shift()! : (queue[0] ?? {});
    return { exitCode: a.exitCode ?? 0, stdout: a.stdout ?? `${JSON.stringify(a.json ?? {})}\r\n`, stderr: a.stderr ?? '' };
  }

  steps(): string[] {
    return this.scripts.map((s) => scriptStep(s) ?? '?');
  }
}

/** The end of a PowerShell single-quoted literal starting at `at`, and its value, by PowerShell's rule (independent of psQuote). */
function readPsLiteral(text: string, at: number): { value: string; end: number } {
  const quotes = "'\u2018\u2019\u201a\u201b";
  if (!quotes.includes(text[at]!)) throw new Error('not a literal');
  let value = '';
  for (let i = at + 1; i < text.length; i++) {
    if (quotes.includes(text[i]!)) {
      if (i + 1 < text.length && quotes.includes(text[i + 1]!)) { value += text[i]; i++; continue; }
      return { value, end: i + 1 };
    }
    value += text[i];
  }
  throw new Error('unterminated literal');
}

describe('hyperv driver against a fake Hyper-V host', () => {
  let dir: Awaited<ReturnType<typeof scratchDir>>;
  let replica: string;
  let layer0: string;
  let layer1: string;
  let expected0: Buffer;

  beforeAll(async () => {
    dir = await scratchDir('lifeboat-hyperv-');
    replica = join(dir.path, 'replica');
    const disks = join(replica, 'tenants', 't1', 'vms', 'web1', 'disks');
    await mkdir(join(disks, 'd0'), { recursive: true });
    await mkdir(join(disks, 'd1'), { recursive: true });
    // d0: base with a pattern ← point layer (frozen) with its own writes; d1: a lone base.
    expected0 = Buffer.alloc(8 * MiB);
    const base = await createDisk(join(disks, 'd0', 'base.vhdx'), 'vhdx', { virtualSize: 8 * MiB, blockSize: MiB });
    const a = Buffer.alloc(2 * MiB, 0x11);
    await base.write(MiB, a);
    a.copy(expected0, MiB);
    await base.close();
    layer0 = join(disks, 'd0', 'point-0001.vhdx');
    const point = await createChildDisk(layer0, join(disks, 'd0', 'base.vhdx'));
    const b = Buffer.alloc(512 * 1024, 0x22);
    await point.write(2 * MiB + 4096, b);
    b.copy(expected0, 2 * MiB + 4096);
    await point.close();
    layer1 = join(disks, 'd1', 'base.vhdx');
    await (await createDisk(layer1, 'vhdx', { virtualSize: 4 * MiB })).close();
  });
  afterAll(async () => dir?.remove());

  function config(runner: HypervRunner, extra: Partial<HypervDriverConfig> = {}): HypervDriverConfig {
    return { runner, childDir: join(replica, 'failover'), paths: [{ local: replica, windows: 'D:\\Replica' }], switches: { 'dr-prod': 'DR Production', 'dr-test': 'DR-Test' }, pollMs: 1, ...extra };
  }

  async function input(id: string, kind: 'test' | 'production', extra: Partial<HypervPrepareInput> = {}): Promise<HypervPrepareInput> {
    const workDir = join(dir.path, 'host', id);
    await mkdir(workDir, { recursive: true });
    const seed = join(workDir, 'cidata.iso');
    await writeFile(seed, 'seed');
    const settings = [
      parseNicSettings({ mac: '00:15:5d:00:00:01', [kind]: { mode: 'static', addresses: ['10.50.10.7/24', '10.50.10.8/24', '2001:db8:50::7/64'], gateway4: '10.50.10.1', gateway6: '2001:db8:50::1', dns: ['10.50.10.2', '10.50.10.3', '10.50.10.4', '2001:db8:50::2'], search: ['dr.example'] } }),
      parseNicSettings({ mac: '00-15-5D-00-00-02', [kind]: { mode: 'dhcp' } }),
    ];
    return {
      failoverId: id, workDir, name: `lifeboat-${id}-web1`, vm: 'web1', kind,
      hardware: { firmware: kind === 'test' ? 'uefi' : 'bios', secureBoot: kind === 'test', cpus: 2, memoryMiB: 2048, guestOs: 'windows' },
      disks: [
        { id: 'd0', bus: 'scsi', virtualSize: 8 * MiB, nbd: { socket: '', exportName: '' }, layerPath: layer0 },
        { id: 'd1', bus: 'scsi', virtualSize: 4 * MiB, nbd: { socket: '', exportName: '' }, layerPath: layer1 },
      ],
      nics: [
        { mac: '00:15:5d:00:00:01', model: 'e1000', attachment: { kind: 'bridge', bridge: kind === 'test' ? 'dr-test' : 'dr-prod', ...(kind === 'production' ? { vlan: 120 } : {}) } },
        { mac: '00:15:5d:00:00:02', model: 'e1000', attachment: kind === 'test' ? { kind: 'isolated', runId: id, group: 'test' } : { kind: 'bridge', bridge: 'dr-prod' } },
      ],
      nicPlans: resolveNicPlan(settings, [], kind),
      seeds: [seed],
      vmGenerationId: '8f2a1c3e-1b2d-4c5e-9f00-112233445566',
      ...extra,
    };
  }

  it('runs a test failover (prepare, start, wait-ready, screenshot, stop, cleanup) as the golden scripts say', async () => {
    const host = new FakeHypervHost('test-failover')
      .answer('prepare', { json: { created: true, state: 'Off' } })
      .answer('start', { json: { state: 'Running' } })
      .answer('status',
        { json: { exists: true, ours: true, state: 'Running', heartbeat: 'NoContact', status: 'Operating normally', uptimeSeconds: 3 } },
        { json: { exists: true, ours: true, state: 'Running', heartbeat: 'OkApplicationsHealthy', status: 'Operating normally', uptimeSeconds: 9 } })
      .answer('screenshot', { json: { width: 4, height: 2, rgb565: Buffer.from(new Uint16Array([0xf800, 0x07e0, 0x001f, 0xffff, 0, 0, 0, 0]).buffer).toString('base64') } })
      .answer('stop', { json: { state: 'Off' } })
      .answer('cleanup', { json: { removed: true } });
    const driver = new HypervDriver(config(host));
    const inp = await input('fo-test-1', 'test');
    await driver.prepare(inp);
    await driver.prepare(inp); // idempotent: children kept, the host's script finds its VM
    await driver.start(inp.workDir);
    const ready = await driver.waitReady(inp.workDir, [{ kind: 'guest-agent' }], 10_000);
    expect(ready).toMatchObject({ ready: true, detail: 'hyper-v heartbeat OkApplicationsHealthy' });
    const png = decodePng(await driver.screenshot(inp.workDir));
    expect([png.width, png.height]).toEqual([4, 2]);
    // Each row starts with its filter byte (0), then red, green, blue, white.
    expect([...png.pixels.subarray(0, 13)]).toEqual([0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]);
    expect(await driver.notes(inp.workDir)).toEqual([
      "nic 00:15:5d:00:00:01: Hyper-V's failover settings take one address per family; not injected: 10.50.10.8/24",
      "nic 00:15:5d:00:00:01: Hyper-V's failover settings take two DNS servers per family; not injected: 10.50.10.4",
      "nic 00:15:5d:00:00:01: Hyper-V's failover settings have no search domains; not injected: dr.example",
    ]);
    await driver.stop(inp.workDir);
    await driver.cleanup(inp.workDir);
    await driver.cleanup(inp.workDir); // nothing left: no script, no error
    expect(host.steps()).toEqual(['prepare', 'prepare', 'start', 'status', 'status', 'screenshot', 'stop', 'cleanup']);
    const prepare = host.scripts[0]!;
    expect(prepare).toContain('New-VM -Name $name -Generation 2 -MemoryStartupBytes 2147483648 -NoVHD');
    expect(prepare).toContain("Set-VMNetworkAdapterFailoverConfiguration -VMName $name -VMNetworkAdapterName 'dr0' -IPv4Address '10.50.10.7' -IPv4SubnetMask '255.255.255.0' -IPv4DefaultGateway '10.50.10.1' -IPv4PreferredDNSServer '10.50.10.2' -IPv4AlternateDNSServer '10.50.10.3' -IPv6Address '2001:db8:50::7' -IPv6SubnetPrefixLength 64 -IPv6DefaultGateway '2001:db8:50::1' -IPv6PreferredDNSServer '2001:db8:50::2' -TestReplicaSwitchName 'DR-Test'");
    expect(prepare).toContain("Set-VMNetworkAdapter -VMName $name -Name 'dr1' -StaticMacAddress '00155D000002'");
    expect(prepare).toContain("New-VMSwitch -Name 'lifeboat-fo-test-1-test' -SwitchType Private");
    await expect(readFile(join(replica, 'failover', 'fo-test-1', 'd0.vhdx'))).rejects.toThrow(/ENOENT/);
  });

  it('runs a real failover (generation 1, VLAN, commit keeps the children) as the golden scripts say', async () => {
    const host = new FakeHypervHost('real-failover')
      .answer('prepare', { json: { created: true, state: 'Off' } })
      .answer('start', { json: { state: 'Running' } })
      .answer('status', { json: { exists: true, ours: true, state: 'Running', heartbeat: 'OkApplicationsUnknown', status: 'Operating normally', uptimeSeconds: 60 } })
      .answer('commit', { json: { state: 'Running', disks: ['D:\\Replica\\failover\\fo-real-1\\d0.vhdx', 'D:\\Replica\\failover\\fo-real-1\\d1.vhdx'] } });
    const driver = new HypervDriver(config(host));
    const inp = await input('fo-real-1', 'production');
    await driver.prepare(inp);
    await driver.start(inp.workDir);
    expect(await driver.status(inp.workDir)).toEqual({ state: 'running', reason: 'heartbeat OkApplicationsUnknown' });
    await driver.commit(inp.workDir);
    expect(host.steps()).toEqual(['prepare', 'start', 'status', 'commit']);
    const prepare = host.scripts[0]!;
    expect(prepare).toContain('-Generation 1 ');
    expect(prepare).toContain("Add-VMHardDiskDrive -VM $vm -ControllerType IDE -ControllerNumber 0 -ControllerLocation 1 -Path 'D:\\Replica\\failover\\fo-real-1\\d1.vhdx'");
    expect(prepare).toContain("Set-VMNetworkAdapterVlan -VMName $name -VMNetworkAdapterName 'dr0' -Access -VlanId 120");
    expect(prepare).toContain("Connect-VMNetworkAdapter -VMName $name -Name 'dr0' -SwitchName 'DR Production'");
    expect(prepare).not.toContain('TestReplicaSwitchName');
    expect(prepare).toContain("Set-VMNetworkAdapterFailoverConfiguration -VMName $name -VMNetworkAdapterName 'dr1' -ClearFailoverIPv4Settings -ClearFailoverIPv6Settings");

    // Commit refuses when the VM no longer runs from the children.
    const lost = new HypervDriver(config(new FakeHypervHost(undefined).answer('commit', { json: { state: 'Running', disks: 'D:\\Elsewhere\\x.vhdx' } })));
    await expect(lost.commit(inp.workDir)).rejects.toThrow(/no longer uses D:\\Replica\\failover\\fo-real-1\\d0\.vhdx/);
  });

  it('makes each child a differencing VHDX of the point\'s layer, reading the point\'s bytes (our reader, flattened, compared by qemu-img)', async () => {
    const host = new FakeHypervHost(undefined).answer('prepare', { json: { created: true } });
    const inp = await input('fo-chain', 'test');
    await new HypervDriver(config(host)).prepare(inp);
    const child = join(replica, 'failover', 'fo-chain', 'd0.vhdx');
    const disk = await openDisk(child, { readOnly: true });
    const info = await disk.info();
    await disk.close();
    expect(info.format).toBe('vhdx');
    expect(info.subformat).toBe('differencing');
    expect(info.parentChain).toEqual([layer0, join(dirname(layer0), 'base.vhdx')]);
    // qemu cannot open VHDX differencing disks: flatten with our reader and let qemu-img compare the bytes.
    await expect(referee('qemu-img', ['info', child])).rejects.toThrow();
    const flat = join(dir.path, 'flat-d0.raw');
    await flatten(child, flat, { format: 'raw' });
    const want = join(dir.path, 'want-d0.raw');
    await writeFile(want, expected0);
    await referee('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', flat, want]);
    // The prepare script relinks the child in Windows' own terms.
    expect(host.scripts[0]).toContain("Set-VHD -Path 'D:\\Replica\\failover\\fo-chain\\d0.vhdx' -ParentPath 'D:\\Replica\\tenants\\t1\\vms\\web1\\disks\\d0\\point-0001.vhdx'");
  });

  it('maps Get-VM answers (Off, Running with heartbeats, Saved, critical, missing, not ours) to VmStatus', async () => {
    const cases: [unknown, unknown][] = [
      [{ exists: true, ours: true, state: 'Off', heartbeat: '' }, { state: 'stopped', reason: 'the guest is off' }],
      [{ exists: true, ours: true, state: 'Running', heartbeat: 'NoContact' }, { state: 'running', reason: 'heartbeat NoContact' }],
      [{ exists: true, ours: true, state: 'Running', heartbeat: 'OkApplicationsHealthy' }, { state: 'running', reason: 'heartbeat OkApplicationsHealthy' }],
      [{ exists: true, ours: true, state: 'Saved' }, { state: 'paused', reason: 'Hyper-V reports Saved' }],
      [{ exists: true, ours: true, state: 'RunningCritical', status: 'Cannot connect to virtual machine configuration storage' }, { state: 'failed', reason: 'Hyper-V reports RunningCritical: Cannot connect to virtual machine configuration storage' }],
      [{ exists: false }, { state: 'failed', reason: 'the VM is gone from hyperv host hv-fake.test' }],
      [{ exists: true, ours: false, state: 'Running' }, { state: 'failed', reason: "the VM of that name on hyperv host hv-fake.test is not this failover's" }],
    ];
    const host = new FakeHypervHost(undefined).answer('prepare', {}).answer('status', ...cases.map(([json]) => ({ json })), {});
    const driver = new HypervDriver(config(host));
    const inp = await input('fo-status', 'test');
    await driver.prepare(inp);
    for (const [, want] of cases) expect(await driver.status(inp.workDir)).toEqual(want);
  });

  it('waits for the heartbeat: not ready when it never comes, or when the VM turns off', async () => {
    const host = new FakeHypervHost(undefined).answer('prepare', {}).answer('start', {})
      .answer('status', { json: { exists: true, ours: true, state: 'Running', heartbeat: 'NoContact' } });
    const driver = new HypervDriver(config(host));
    const inp = await input('fo-ready', 'test');
    await driver.prepare(inp);
    await driver.start(inp.workDir);
    const r = await driver.waitReady(inp.workDir, [{ kind: 'guest-agent' }, { kind: 'console', pattern: 'login:' }], 30);
    expect(r).toMatchObject({ ready: false, detail: 'no probe answered within 30 ms (guest-agent, console; heartbeat NoContact); a console probe is not available on Hyper-V' });
    const off = new FakeHypervHost(undefined).answer('status', { json: { exists: true, ours: true, state: 'Off', heartbeat: '' } });
    expect(await new HypervDriver(config(off)).waitReady(inp.workDir, [{ kind: 'guest-agent' }], 5_000)).toMatchObject({ ready: false, detail: 'the guest is off' });
  });

  it('applies a failover\'s public addresses as static mappings of the host\'s NAT, replaces them when they change, and removes them (golden scripts)', async () => {
    // Prepared and started as the real failover's goldens show; from here on the scripts are recorded.
    const vm = new FakeHypervHost(undefined).answer('prepare', { json: { created: true, state: 'Off' } }).answer('start', { json: { state: 'Running' } });
    const inp = await input('fo-pub-1', 'production');
    await new HypervDriver(config(vm)).prepare(inp);
    await new HypervDriver(config(vm)).start(inp.workDir);
    const host = new FakeHypervHost('public-ips').answer('public-ips', { json: { mappings: 5 } }, { json: { mappings: 1 } }, { json: { mappings: 0 } });
    const driver = new HypervDriver(config(host, { nat: 'lifeboat-dr' }));
    const notes = await driver.publicIps(inp.workDir, [
      { address: '203.0.113.10', drAddress: '10.50.10.7', mac: '00:15:5d:00:00:01', allow: ['tcp/80', 'tcp/443', 'udp/5000-5002', 'icmp'] },
      { address: '203.0.113.11', drAddress: '10.50.10.8', mac: '00:15:5d:00:00:01', allow: [] },
      { address: '2001:db8:f::10', drAddress: '2001:db8:50::7', mac: '00:15:5d:00:00:01', allow: ['tcp/80'] },
    ]);
    expect(notes).toEqual([
      'public address 203.0.113.10: icmp is not carried by WinNAT static mappings (TCP and UDP only); not applied',
      'public address 203.0.113.11: outbound only; WinNAT chooses the source address of the VM\'s own connections, so nothing is mapped',
      'public address 2001:db8:f::10: the Hyper-V host\'s NAT (WinNAT) is IPv4 only; not applied',
    ]);
    const first = host.scripts[0]!;
    expect(first).toContain("$ours = @('203.0.113.10', '203.0.113.11')");
    expect(first).toContain("Add-NetNatStaticMapping -NatName $nat -Protocol TCP -ExternalIPAddress '203.0.113.10' -ExternalPort 443 -InternalIPAddress '10.50.10.7' -InternalPort 443 | Out-Null");
    expect(first.match(/Add-NetNatStaticMapping .* -Protocol UDP /g)).toHaveLength(3);
    // A change replaces the set: the address no longer mapped is among those whose mappings go.
    expect(await driver.publicIps(inp.workDir, [{ address: '203.0.113.10', drAddress: '10.50.10.7', mac: null, allow: ['tcp/22'] }])).toEqual([]);
    expect(host.scripts[1]!).toContain("$ours = @('203.0.113.10', '203.0.113.11')");
    expect(host.scripts[1]!.match(/Add-NetNatStaticMapping/g)).toHaveLength(1);
    // Removal: only the addresses held now, nothing added.
    expect(await driver.publicIps(inp.workDir, [])).toEqual([]);
    expect(host.scripts[2]!).toContain("$ours = @('203.0.113.10')");
    expect(host.scripts[2]!).not.toContain('Add-NetNatStaticMapping');
    expect(host.steps()).toEqual(['public-ips', 'public-ips', 'public-ips']);
  });

  it('refuses public addresses without a NAT, a range past the mapping limit, and surfaces the host\'s refusal', async () => {
    const plain = new FakeHypervHost(undefined).answer('prepare', { json: { created: true, state: 'Off' } });
    const inp = await input('fo-pub-2', 'test');
    await new HypervDriver(config(plain)).prepare(inp);
    const none = await new HypervDriver(config(plain)).publicIps(inp.workDir, [{ address: '203.0.113.10', drAddress: '10.50.10.7', mac: null, allow: ['tcp/80'] }]).catch((e: unknown) => e);
    expect(isLifeboatError(none) && none.code).toBe('unsupported');
    expect((none as Error).message).toBe('hyperv host hv-fake.test: no NAT is configured (failover.hyperv.nat: the name of a New-NetNat whose internal prefix is the DR network), so public addresses cannot be applied');
    expect(plain.steps()).toEqual(['prepare']);
    const refusing = new FakeHypervHost(undefined).answer('public-ips', { exitCode: 1, stdout: '', stderr: 'NAT lifeboat-dr does not exist on this host (New-NetNat -Name lifeboat-dr -InternalIPInterfaceAddressPrefix <the DR network>)\r\n' });
    const driver = new HypervDriver(config(refusing, { nat: 'lifeboat-dr' }));
    const wide = [{ address: '203.0.113.10', drAddress: '10.50.10.7', mac: null, allow: ['tcp/1000-2000', 'tcp/80'] }];
    const err = await driver.publicIps(inp.workDir, wide).catch((e: unknown) => e);
    expect((err as Error).message).toBe('hyperv host hv-fake.test: public-ips lifeboat-fo-pub-2-web1: NAT lifeboat-dr does not exist on this host (New-NetNat -Name lifeboat-dr -InternalIPInterfaceAddressPrefix <the DR network>)');
    // The range was left out (one mapping per port would pass the limit), the single port kept.
    expect(refusing.scripts[0]!.match(/Add-NetNatStaticMapping/g)).toHaveLength(1);
    expect(() => new HypervDriver(config(refusing, { nat: "dr'; Remove-NetNat -Confirm:$false; '" }))).toThrow(/hyperv nat/);
  });

  it('surfaces a host error as a failed step with the host\'s message', async () => {
    const host = new FakeHypervHost(undefined)
      .answer('prepare', {})
      .answer('start', { exitCode: 1, stdout: '', stderr: "'lifeboat-fo-err-web1' failed to start. (Virtual machine ID 1B2C…)\r\nNot enough memory in the system to start the virtual machine lifeboat-fo-err-web1.\r\n" })
      .answer('status', { stdout: 'WARNING: something odd\r\nnot json' });
    const driver = new HypervDriver(config(host));
    const inp = await input('fo-err', 'test');
    await driver.prepare(inp);
    const err = await driver.start(inp.workDir).catch((e: unknown) => e);
    expect(isLifeboatError(err) && err.code).toBe('unavailable');
    expect((err as Error).message).toBe("hyperv host hv-fake.test: start lifeboat-fo-err-web1: 'lifeboat-fo-err-web1' failed to start. (Virtual machine ID 1B2C…) Not enough memory in the system to start the virtual machine lifeboat-fo-err-web1.");
    await expect(driver.status(inp.workDir)).rejects.toThrow('hyperv host hv-fake.test: status lifeboat-fo-err-web1: the answer is not JSON: "not json"');
  });

  describe('injection', () => {
    const nasty = ["x'; Remove-VM -Name * -Force; '", 'a$(Stop-Computer -Force)b', 'tick`$env:PATH`', 'semi;colon', 'smart\u2019; Stop-Computer; \u2018', "''''", '$null'];

    it('quotes any text as one inert single-quoted literal (checked by PowerShell\'s own literal rule)', () => {
      for (const s of nasty) {
        const lit = psQuote(s);
        const read = readPsLiteral(`${lit} trailing`, 0);
        expect(read).toEqual({ value: s, end: lit.length });
      }
      expect(psQuote("x'; Remove-VM -Name * -Force; '")).toBe("'x''; Remove-VM -Name * -Force; '''");
      expect(psQuote('smart\u2019; Stop-Computer; \u2018')).toBe("'smart\u2019\u2019; Stop-Computer; \u2018\u2018'");
      for (const bad of ['a\nb', 'a\r\nb', 'nul\u0000', 'nel\u0085', 'ls\u2028']) expect(() => psQuote(bad, 'vm')).toThrow(/vm: .* holds a control character/s);
    });

    it('renders the tenant\'s VM name in the notes inert, and refuses it with a newline', async () => {
      const host = new FakeHypervHost(undefined).answer('prepare', {});
      const inp = await input('fo-inj', 'test', { vm: "web'; Remove-VM -Name * -Force; $(Stop-Computer) `whoami`" });
      await new HypervDriver(config(host)).prepare(inp);
      const line = host.scripts[0]!.split('\n').find((l) => l.trimStart().startsWith('$marker = '))!;
      expect(line).toBe("  $marker = 'lifeboat failover fo-inj: web''; Remove-VM -Name * -Force; $(Stop-Computer) `whoami`'");
      const at = line.indexOf("'");
      expect(readPsLiteral(line, at)).toEqual({ value: "lifeboat failover fo-inj: web'; Remove-VM -Name * -Force; $(Stop-Computer) `whoami`", end: line.length });
      const host2 = new FakeHypervHost(undefined);
      await expect(new HypervDriver(config(host2)).prepare(await input('fo-inj2', 'test', { vm: 'web\nStop-Computer' }))).rejects.toThrow(/vm: .* holds a control character/s);
      expect(host2.scripts).toEqual([]);
    });

    it('refuses bad VM names, switch and network names, search domains, addresses and MACs before any script runs', async () => {
      const host = new FakeHypervHost(undefined);
      const driver = new HypervDriver(config(host));
      const base = await input('fo-bad', 'test');
      const plan0 = base.nicPlans[0]!;
      const withPlan = (patch: object) => [{ ...plan0, config: { ...plan0.config, ...patch } }, base.nicPlans[1]!];
      const attempts: [Partial<HypervPrepareInput>, RegExp][] = [
        [{ name: "web'; Stop-Computer" }, /vm name: .* is not allowed/],
        [{ name: 'web$(x)' }, /vm name/],
        [{ name: 'web*' }, /vm name/],
        [{ name: 'a;b' }, /vm name/],
        [{ nics: [{ ...base.nics[0]!, attachment: { kind: 'bridge', bridge: 'prod$(Stop-Computer)' } }] }, /network "prod\$\(Stop-Computer\)" has no Hyper-V switch/],
        [{ nics: [{ ...base.nics[0]!, mac: "00:15:5d:00:00:01'" }] }, /nics\[0\]\.mac: .* is not a MAC address/],
        [{ nicPlans: withPlan({ search: ["dr.example'; Stop-Computer"] }) }, /search\[0\]: search domain .* may hold only/],
        [{ nicPlans: withPlan({ dns: ["10.0.0.2'; Stop-Computer"] }) }, /dns\[0\]/],
        [{ nicPlans: withPlan({ gateway4: '10.50.10.1`' }) }, /gateway4/],
        [{ nicPlans: withPlan({ addresses: ['10.50.10.7/24; Stop-Computer'] }) }, /addresses\[0\]/],
        [{ failoverId: "fo'x" }, /failover id/],
        [{ disks: [{ ...base.disks[0]!, layerPath: '/elsewhere/point.vhdx' }] }, /disks\[0\]\.layerPath: \/elsewhere\/point\.vhdx is under none of the replica paths/],
        [{ disks: [{ ...base.disks[0]!, id: 'd0\\..\\x' }] }, /disks\[0\]\.id/],
      ];
      for (const [patch, re] of attempts) {
        const err = await driver.prepare({ ...base, ...patch }).catch((e: unknown) => e);
        expect(isLifeboatError(err) && err.code, String(re)).toBe('invalid_argument');
        expect((err as Error).message).toMatch(re);
      }
      expect(() => new HypervDriver(config(host, { switches: { x: "DR'; Stop-Computer" } }))).toThrow(/hyperv switches\.x/);
      expect(() => new HypervDriver(config(host, { switches: { x: 'DR`n' } }))).toThrow(/hyperv switches\.x/);
      expect(host.scripts).toEqual([]);
      await expect(readFile(join(replica, 'failover', 'fo-bad'))).rejects.toThrow(/ENOENT/);
    });
  });
});

describe('SshHypervRunner (ssh replaced by a fake program that records what it gets)', () => {
  let dir: Awaited<ReturnType<typeof scratchDir>>;
  let fakeSsh: string;
  beforeAll(async () => {
    dir = await scratchDir('lifeboat-hvssh-');
    fakeSsh = join(dir.path, 'fake-ssh');
    await writeFile(fakeSsh, `#!/usr/bin/env node
const fs = require('fs');
const stdin = fs.readFileSync(0);
fs.writeFileSync(${JSON.stringify(join(dir.path, 'seen.json'))}, JSON.stringify({ argv: process.argv.slice(2), stdin: stdin.toString('utf8') }));
if (process.env.FAKE_SSH_EXIT) { process.stderr.write('ssh: connect to host hv1 port 22: Connection refused\\n'); process.exit(Number(process.env.FAKE_SSH_EXIT)); }
process.stdout.write('{"ok":true}\\r\\n');
`);
    await chmod(fakeSsh, 0o755);
  });
  afterAll(async () => dir?.remove());

  it('sends a short script as -EncodedCommand (UTF-16LE base64) and a long one on stdin', async () => {
    const runner = new SshHypervRunner({ host: 'hv1.example', user: 'lifeboat', port: 2222, identityFile: '/etc/lifeboat/hv_key', knownHostsFile: '/etc/lifeboat/known_hosts', sshBinary: fakeSsh });
    const script = "$ErrorActionPreference = 'Stop'\nGet-VM -Name 'a''b' | ConvertTo-Json\n";
    expect(await runner.run(script)).toEqual({ exitCode: 0, stdout: '{"ok":true}\r\n', stderr: '' });
    let seen = JSON.parse(await readFile(join(dir.path, 'seen.json'), 'utf8')) as { argv: string[]; stdin: string };
    expect(seen.argv.slice(-3, -1)).toEqual(['--', 'lifeboat@hv1.example']);
    expect(seen.argv).toEqual(expect.arrayContaining(['BatchMode=yes', 'StrictHostKeyChecking=yes', 'UserKnownHostsFile=/etc/lifeboat/known_hosts', '-p', '2222', '-i', '/etc/lifeboat/hv_key']));
    const command = seen.argv.at(-1)!;
    const m = /^powershell -NoProfile -NonInteractive -EncodedCommand ([A-Za-z0-9+/=]+)$/.exec(command);
    expect(m).not.toBeNull();
    expect(Buffer.from(m![1]!, 'base64').toString('utf16le')).toBe(script);
    expect(seen.stdin).toBe('');

    const long = `${script}${'# padding\n'.repeat(600)}`;
    await runner.run(long);
    seen = JSON.parse(await readFile(join(dir.path, 'seen.json'), 'utf8')) as { argv: string[]; stdin: string };
    expect(seen.argv.at(-1)!.length).toBeLessThan(8191);
    expect(Buffer.from(seen.argv.at(-1)!.split(' ').pop()!, 'base64').toString('utf16le')).toContain('[Console]::In.ReadToEnd()');
    expect(seen.stdin).toBe(long);
    expect(encodePowerShell('a')).toBe('YQA=');
  });

  it('reports an unreachable host as unavailable, and refuses host and user names that could be ssh options', async () => {
    process.env.FAKE_SSH_EXIT = '255';
    try {
      const runner = new SshHypervRunner({ host: 'hv1', user: 'lifeboat', sshBinary: fakeSsh });
      await expect(runner.run('Get-VM')).rejects.toThrow('hyperv host hv1: ssh: ssh: connect to host hv1 port 22: Connection refused');
    } finally {
      delete process.env.FAKE_SSH_EXIT;
    }
    expect(() => new SshHypervRunner({ host: '-oProxyCommand=x', user: 'a' })).toThrow(/not a host name/);
    expect(() => new SshHypervRunner({ host: 'hv1', user: '-F/tmp/x' })).toThrow(/user/);
  });
});
