/**
 * The hyperv failover driver (docs/failover-drivers.md): a failed-over VM is a Hyper-V VM on a Windows
 * Server host, built by PowerShell this driver writes (hyperv-scripts.ts) and a HypervRunner runs.
 *
 * Disks: Hyper-V reads VHDX chains itself, so nothing is exported. Per disk our own writer makes a
 * differencing child of the point's frozen layer on the replica storage (shared/disk createChildDisk),
 * which the VM boots from and writes to; the frozen point below is never written, and replication
 * goes on beside it. Commit keeps the child (see commit()).
 *
 * Network: each NIC plan (service/failover/network resolveNicPlan) becomes an adapter with the NIC's
 * static MAC on the switch its DR network maps to, and Hyper-V's failover TCP/IP settings
 * (Set-VMNetworkAdapterFailoverConfiguration), which integration services apply inside the guest.
 *
 * State: `hyperv.json` in the failover's work directory on the failover host (the checked plan, the
 * children's local paths), so every step is idempotent and a restarted host takes the VM up again.
 * Failure: bad input is LifeboatError('invalid_argument') naming the field, before any script runs; a
 * script the host fails is LifeboatError('unavailable') `hyperv host H: <step> VM: <the host's message>`.
 */
import { connect } from 'node:net';
import { copyFile, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, join, relative, resolve, sep } from 'node:path';
import { deflateSync } from 'node:zlib';
import type { Logger } from 'pino';
import { createChildDisk } from '../../../shared/disk/index.js';
import { ErrInvalidArgument, LifeboatError } from '../../../shared/errors.js';
import { netmaskOf } from '../network/address.js';
import type { NicPlan } from '../network/mappings.js';
import { parseAllowEntry, type PublicIpRule } from '../network/nat.js';
import { dnsNameReason } from '../network/names.js';
import { checkCidr, checkInt, checkIp, checkName, checkWindowsPath, hypervMac, IdPattern, psQuote, SwitchNamePattern, VmNamePattern } from './hyperv-ps.js';
import { commitScript, type HypervNatMapping, type HypervNicPlan, type HypervVmPlan, prepareScript, publicIpsScript, removeScript, screenshotScript, startScript, statusScript, stopScript } from './hyperv-scripts.js';
import { exists, readJson, sleep, writeJsonAtomic } from './qemu-files.js';
import type { HypervRunner } from '../../../shared/hyperv/runner.js';
import type { FailoverDisk, FailoverDriver, PrepareInput, ReadyProbe, ReadyResult, VmStatus } from './types.js';

export interface HypervDriverConfig {
  runner: HypervRunner;
  /** A directory on the replica storage (local path) for the children and seed copies: `<childDir>/<failover id>/`. */
  childDir: string;
  /** Each local directory of the replica storage and the same directory as the Hyper-V host names it. */
  paths: { local: string; windows: string }[];
  /** DR network (or bridge) name → the Hyper-V virtual switch its NICs connect to. */
  switches: Record<string, string>;
  /** New-VM -Path: where Hyper-V keeps the VM's configuration (default: the host's default). */
  vmPath?: string;
  /** Generation 2 with Secure Boot: the template per guest OS. */
  secureBootTemplates?: { windows?: string; linux?: string; other?: string };
  /** Status polling while waiting for readiness (default 2 s). */
  pollMs?: number;
  /**
   * The host's NAT (New-NetNat, made by the hoster; its internal prefix is the DR network) that carries
   * public addresses as static mappings; without it public addresses are refused with the reason.
   */
  nat?: string;
  log?: Logger;
}

/** A disk of a hyperv failover: its frozen layer, by the failover host's local path (on the replica storage). */
export type HypervDisk = FailoverDisk & { layerPath: string };

/** What prepare needs beyond the common input: the kind, the layers, and each NIC's resolved plan. */
export interface HypervPrepareInput extends PrepareInput {
  kind: 'test' | 'production';
  disks: HypervDisk[];
  /** By MAC, in the order of `nics`. */
  nicPlans: NicPlan[];
  /** The tenant's name of the VM, shown in the Hyper-V VM's notes (any text; quoted). */
  vm: string;
}

interface HypervState {
  failoverId: string;
  plan: HypervVmPlan;
  children: string[];
  seeds: string[];
  notes: string[];
  /** The public addresses whose NAT mappings this failover holds on the host now. */
  publicIps?: string[];
}

/** Static mappings per failover at most: WinNAT has one per port, so a wide range is refused. */
export const MaxNatMappings = 256;

const StateFile = 'hyperv.json';
const RunFile = 'hyperv-run.json';
const StoppedFile = 'stopped';
const MinMemoryMiB = 32;
const MaxMemoryMiB = 12 * 1024 * 1024;
const MaxCpus = 240;
const ScreenWidth = 640;
const ScreenHeight = 480;
const DefaultSecureBoot = { windows: 'MicrosoftWindows', linux: 'MicrosoftUEFICertificateAuthority', other: 'MicrosoftUEFICertificateAuthority' };

export class HypervDriver implements FailoverDriver {
  readonly kind = 'hyperv';
  /** Commit keeps the child disks on the point's layer (docs/failover-drivers.md): the point stays pinned. */
  readonly commitKeepsPoint = true;

  constructor(private readonly config: HypervDriverConfig) {
    for (const [net, sw] of Object.entries(config.switches)) checkName(sw, SwitchNamePattern, `hyperv switches.${net}`);
    for (const p of config.paths) checkWindowsPath(p.windows, 'hyperv paths.windows');
    if (config.vmPath !== undefined) checkWindowsPath(config.vmPath, 'hyperv vmPath');
    if (config.nat !== undefined) checkName(config.nat, SwitchNamePattern, 'hyperv nat');
  }

  /**
   * Checks every value, makes the children and seed copies, then builds the VM on the host. Idempotent:
   * existing children are kept, and the host's script leaves a finished VM alone.
   */
  async prepare(input: PrepareInput): Promise<void> {
    const inp = input as HypervPrepareInput;
    const previous = await readJson<HypervState>(join(inp.workDir, StateFile));
    if (previous && previous.failoverId !== inp.failoverId) throw new LifeboatError('conflict', `${inp.workDir} belongs to failover ${previous.failoverId}, not ${inp.failoverId}`);
    const notes: string[] = [];
    const plan = this.plan(inp, notes);

    // Every path is placed and translated before anything is made, so a layer outside the shared
    // replica paths is refused with nothing left behind.
    const dir = join(this.config.childDir, inp.failoverId);
    const children = inp.disks.map((d, i) => join(dir, `${checkName(d.id, IdPattern, `disks[${i}].id`)}.vhdx`));
    const seeds = inp.seeds.map((s, i) => join(dir, `seed${i}-${basename(s).replace(/[^A-Za-z0-9._-]/g, '_')}`));
    plan.disks = inp.disks.map((d, i) => ({ child: this.windowsPath(children[i]!, `disks[${i}]`), parent: this.windowsPath(d.layerPath, `disks[${i}].layerPath`) }));
    plan.seeds = seeds.map((s, i) => this.windowsPath(s, `seeds[${i}]`));

    await mkdir(dir, { recursive: true });
    for (const [i, d] of inp.disks.entries()) {
      const child = children[i]!;
      if (await exists(child)) continue;
      const tmp = `${child}.tmp`;
      await rm(tmp, { force: true });
      const disk = await createChildDisk(tmp, d.layerPath);
      await disk.close();
      await rename(tmp, child);
    }
    for (const [i, s] of inp.seeds.entries()) {
      if (await exists(seeds[i]!)) continue;
      await copyFile(s, `${seeds[i]!}.tmp`);
      await rename(`${seeds[i]!}.tmp`, seeds[i]!);
    }

    const state: HypervState = { failoverId: inp.failoverId, plan, children, seeds, notes };
    await mkdir(inp.workDir, { recursive: true });
    await writeJsonAtomic(join(inp.workDir, StateFile), state);
    await this.run('prepare', plan.vmName, prepareScript(plan));
    for (const n of notes) this.config.log?.info({ failover: inp.failoverId }, n);
  }

  async start(workDir: string): Promise<void> {
    const st = await this.state(workDir);
    await rm(join(workDir, StoppedFile), { force: true });
    if (!(await exists(join(workDir, RunFile)))) await writeJsonAtomic(join(workDir, RunFile), { startedAt: Date.now() });
    await this.run('start', st.plan.vmName, startScript(st.plan));
  }

  async status(workDir: string): Promise<VmStatus> {
    const st = await this.state(workDir);
    const r = await this.run<{ exists: boolean; ours?: boolean; state?: string; heartbeat?: string; status?: string }>('status', st.plan.vmName, statusScript(st.plan));
    return mapVmStatus(r, await exists(join(workDir, StoppedFile)), this.config.runner.host);
  }

  /** Ready at the first probe that answers: guest-agent is Hyper-V's heartbeat (integration services) being OK; tcp connects from here. */
  async waitReady(workDir: string, probes: ReadyProbe[], timeoutMs: number): Promise<ReadyResult> {
    const st = await this.state(workDir);
    const run = await readJson<{ startedAt: number }>(join(workDir, RunFile));
    const from = run?.startedAt ?? Date.now();
    const deadline = Date.now() + timeoutMs;
    const pollMs = this.config.pollMs ?? 2_000;
    const result = (ready: boolean, detail: string): ReadyResult => ({ ready, detail, elapsedMs: Date.now() - from });
    for (;;) {
      const r = await this.run<{ exists: boolean; ours?: boolean; state?: string; heartbeat?: string; status?: string }>('status', st.plan.vmName, statusScript(st.plan));
      const vm = mapVmStatus(r, false, this.config.runner.host);
      if (vm.state === 'stopped' || vm.state === 'failed') return result(false, vm.reason ?? `the VM is ${vm.state}`);
      for (const p of probes) {
        if (p.kind === 'guest-agent' && vm.state === 'running' && r.heartbeat?.startsWith('Ok')) return result(true, `hyper-v heartbeat ${r.heartbeat}`);
        if (p.kind === 'tcp' && (await tcpOpen(p.host, p.port))) return result(true, `tcp ${p.host}:${p.port}`);
      }
      if (Date.now() + pollMs > deadline) {
        const unsupported = probes.some((p) => p.kind === 'console') ? '; a console probe is not available on Hyper-V' : '';
        return result(false, `no probe answered within ${timeoutMs} ms (${probes.map((p) => p.kind).join(', ') || 'no probes'}; heartbeat ${r.heartbeat ?? 'unknown'})${unsupported}`);
      }
      await sleep(pollMs);
    }
  }

  /** Hyper-V's thumbnail of the screen (640×480, RGB565), as a PNG. */
  async screenshot(workDir: string): Promise<Buffer> {
    const st = await this.state(workDir);
    const r = await this.run<{ width: number; height: number; rgb565: string }>('screenshot', st.plan.vmName, screenshotScript(st.plan, ScreenWidth, ScreenHeight));
    return rgb565ToPng(Buffer.from(r.rgb565, 'base64'), r.width, r.height);
  }

  /**
   * Commit keeps the child and does not merge it. The VM reads its chain straight from the replica
   * storage, with no process of ours in between, so it already owns its disks as far as Hyper-V is
   * concerned; merging the child down would write into the point's frozen layer, which later points
   * (and other failovers' children) read. The child's BAT stays the record of what the VM wrote since
   * failover, which reverse replication ships. The host must therefore keep the point's chain (not
   * merge it away by pruning) while a committed hyperv failover lives: see docs/failover-drivers.md.
   * This step checks the VM still runs from the children and records the commit.
   */
  async commit(workDir: string): Promise<void> {
    const st = await this.state(workDir);
    const r = await this.run<{ state: string; disks: string[] | string | null }>('commit', st.plan.vmName, commitScript(st.plan));
    const disks = r.disks === null ? [] : Array.isArray(r.disks) ? r.disks : [r.disks];
    // Windows paths compare without regard to case.
    const missing = st.plan.disks.map((d) => d.child).filter((w) => !disks.some((d) => d.toLowerCase() === w.toLowerCase()));
    if (missing.length) throw new LifeboatError('conflict', `hyperv host ${this.config.runner.host}: VM ${st.plan.vmName} no longer uses ${missing.join(', ')}`);
    await writeFile(join(workDir, 'committed'), `${new Date().toISOString()}\n`);
  }

  async stop(workDir: string, options: { graceful?: boolean; timeoutMs?: number } = {}): Promise<void> {
    const st = await this.state(workDir).catch(() => undefined);
    if (!st) return;
    await writeFile(join(workDir, StoppedFile), '');
    const graceful = options.graceful ? { timeoutSec: Math.max(1, Math.round((options.timeoutMs ?? 60_000) / 1000)) } : undefined;
    await this.run('stop', st.plan.vmName, stopScript(st.plan, graceful));
  }

  /** Removes the VM on the host, then the children and seed copies here. Idempotent. */
  async cleanup(workDir: string): Promise<void> {
    const st = await readJson<HypervState>(join(workDir, StateFile));
    if (!st) return;
    await this.run('cleanup', st.plan.vmName, removeScript(st.plan));
    await rm(join(this.config.childDir, st.failoverId), { recursive: true, force: true });
    for (const f of [StateFile, RunFile, 'committed']) await rm(join(workDir, f), { force: true });
  }

  /**
   * Public addresses as static mappings of the host's NAT (WinNAT): per allowed TCP or UDP port, the
   * public address and port to the DR address and the same port. What WinNAT cannot carry is left out
   * and named: IPv6 (WinNAT is IPv4 only), icmp, an outbound-only mapping (WinNAT picks the source
   * address of the VM's own connections), ports past MaxNatMappings. Mappings of this failover's
   * addresses (now and before) are replaced as a whole; an empty list removes them.
   */
  async publicIps(workDir: string, rules: readonly (PublicIpRule & { mac: string | null })[]): Promise<string[]> {
    const st = await readJson<HypervState>(join(workDir, StateFile));
    if (!st) {
      if (rules.length === 0) return [];
      throw new LifeboatError('not_found', `${workDir}: no hyperv failover was prepared here`);
    }
    const host = this.config.runner.host;
    const nat = this.config.nat;
    if (nat === undefined) {
      if (rules.length === 0 && !st.publicIps?.length) return [];
      throw new LifeboatError('unsupported', `hyperv host ${host}: no NAT is configured (failover.hyperv.nat: the name of a New-NetNat whose internal prefix is the DR network), so public addresses cannot be applied`);
    }
    const notes: string[] = [];
    const mappings: HypervNatMapping[] = [];
    const addresses: string[] = [];
    rules.forEach((r, i) => {
      if (r.address.includes(':')) { notes.push(`public address ${r.address}: the Hyper-V host's NAT (WinNAT) is IPv4 only; not applied`); return; }
      const external = checkIp(r.address, 4, `publicIps[${i}].address`);
      const internal = checkIp(r.drAddress, 4, `publicIps[${i}].drAddress`);
      addresses.push(external);
      if (r.allow.length === 0) notes.push(`public address ${external}: outbound only; WinNAT chooses the source address of the VM's own connections, so nothing is mapped`);
      r.allow.forEach((text, j) => {
        const e = parseAllowEntry(text, `publicIps[${i}].allow[${j}]`);
        if (e.proto === 'icmp') { notes.push(`public address ${external}: icmp is not carried by WinNAT static mappings (TCP and UDP only); not applied`); return; }
        const count = e.to - e.from + 1;
        if (mappings.length + count > MaxNatMappings) { notes.push(`public address ${external}: ${text} would pass ${MaxNatMappings} static mappings (one per port); not applied`); return; }
        for (let port = e.from; port <= e.to; port++) mappings.push({ protocol: e.proto === 'tcp' ? 'TCP' : 'UDP', external, internal, port });
      });
    });
    if (st.plan.kind === 'test' && mappings.length > 0) notes.push('the NICs of a test failover are on its run\'s Private switch, which the NAT does not reach');
    const all = [...new Set([...(st.publicIps ?? []), ...addresses])];
    await this.run('public-ips', st.plan.vmName, publicIpsScript(st.plan, nat, all, mappings));
    await writeJsonAtomic(join(workDir, StateFile), { ...st, publicIps: addresses });
    return notes;
  }

  /** What the failover's guest gets differently from its plan (extra addresses, search domains). */
  async notes(workDir: string): Promise<string[]> {
    return (await this.state(workDir)).notes;
  }

  /** The checked plan: every value the scripts will hold, validated here before anything is made. */
  private plan(inp: HypervPrepareInput, notes: string[]): HypervVmPlan {
    if (inp.kind !== 'test' && inp.kind !== 'production') throw ErrInvalidArgument(`kind: ${JSON.stringify(inp.kind)} is neither test nor production`);
    const failoverId = checkName(inp.failoverId, IdPattern, 'failover id');
    const vmName = checkName(inp.name, VmNamePattern, 'vm name');
    if (!Array.isArray(inp.disks) || inp.disks.length === 0) throw ErrInvalidArgument(`failover ${failoverId}: the VM has no disks`);
    inp.disks.forEach((d, i) => {
      if (typeof d.layerPath !== 'string' || !d.layerPath) throw ErrInvalidArgument(`disks[${i}].layerPath: the point's layer is needed by the hyperv driver`);
    });
    const hw = inp.hardware;
    const generation = hw.firmware === 'uefi' ? 2 : 1;
    const memoryMiB = checkInt(hw.memoryMiB, MinMemoryMiB, MaxMemoryMiB, 'hardware.memoryMiB');
    if (memoryMiB % 2 !== 0) throw ErrInvalidArgument(`hardware.memoryMiB: ${memoryMiB} is not a multiple of 2 MiB (Hyper-V needs one)`);
    const templates = { ...DefaultSecureBoot, ...this.config.secureBootTemplates };
    const privateSwitches: string[] = [];
    const nics = inp.nics.map((n, i): HypervNicPlan => {
      const mac = hypervMac(n.mac, `nics[${i}].mac`);
      const plan = (inp.nicPlans ?? []).find((p) => hypervMac(p.mac, 'nic plan mac') === mac);
      const name = checkName(plan?.name ?? `dr${i}`, VmNamePattern, `nics[${i}].name`);
      let switchName: string;
      let vlan: number | undefined;
      if (n.attachment.kind === 'bridge') {
        const sw = this.config.switches[n.attachment.bridge];
        if (sw === undefined) throw ErrInvalidArgument(`nics[${i}]: network ${JSON.stringify(n.attachment.bridge)} has no Hyper-V switch on host ${this.config.runner.host}`);
        switchName = sw;
        if (n.attachment.vlan !== undefined) vlan = checkInt(n.attachment.vlan, 1, 4094, `nics[${i}].vlan`);
      } else if (n.attachment.kind === 'isolated') {
        switchName = checkName(`lifeboat-${n.attachment.runId}-${n.attachment.group}`.slice(0, 100), SwitchNamePattern, `nics[${i}] isolated network`);
        if (!privateSwitches.includes(switchName)) privateSwitches.push(switchName);
      } else {
        throw ErrInvalidArgument(`nics[${i}]: an unplugged NIC is not supported by the hyperv driver`);
      }
      const failover = plan ? failoverConfig(plan, `nics[${i}]`, notes) : undefined;
      return { name, mac, switchName, ...(vlan !== undefined ? { vlan } : {}), ...(failover ? { failover } : {}) };
    });
    const template = hw.secureBoot ? templates[hw.guestOs] : undefined;
    return {
      failoverId, vmName, kind: inp.kind, generation,
      marker: `lifeboat failover ${failoverId}: ${psSafeText(inp.vm, 'vm')}`,
      ...(generation === 2 && template ? { secureBootTemplate: template } : {}),
      memoryBytes: memoryMiB * 1024 * 1024,
      cpus: checkInt(hw.cpus, 1, MaxCpus, 'hardware.cpus'),
      ...(this.config.vmPath ? { vmPath: this.config.vmPath } : {}),
      disks: [], seeds: [], nics, privateSwitches,
    };
  }

  /** A local path under one of the configured replica directories, as the Hyper-V host names it. */
  private windowsPath(local: string, field: string): string {
    const abs = resolve(local);
    for (const p of this.config.paths) {
      const root = resolve(p.local);
      const rel = relative(root, abs);
      if (rel === '' || rel.startsWith('..') || rel.startsWith(sep)) continue;
      const parts = rel.split(sep);
      for (const part of parts) checkName(part, /^[A-Za-z0-9._-]{1,255}$/, `${field} (${abs})`);
      return checkWindowsPath(`${p.windows.replace(/\\+$/, '')}\\${parts.join('\\')}`, field);
    }
    throw ErrInvalidArgument(`${field}: ${abs} is under none of the replica paths the Hyper-V host shares (${this.config.paths.map((p) => p.local).join(', ') || 'none configured'})`);
  }

  private async state(workDir: string): Promise<HypervState> {
    const st = await readJson<HypervState>(join(workDir, StateFile));
    if (!st) throw new LifeboatError('not_found', `${workDir}: no hyperv failover was prepared here`);
    return st;
  }

  /** Runs one step's script; a non-zero exit or an answer that is not JSON is a failed step with the host's words. */
  private async run<T = Record<string, unknown>>(step: string, vmName: string, script: string): Promise<T> {
    const host = this.config.runner.host;
    const r = await this.config.runner.run(script);
    if (r.exitCode !== 0) {
      const message = r.stderr.trim().split(/\r?\n/).filter(Boolean).slice(0, 3).join(' ') || `exit code ${r.exitCode}`;
      throw new LifeboatError('unavailable', `hyperv host ${host}: ${step} ${vmName}: ${message}`);
    }
    const line = r.stdout.trim().split(/\r?\n/).pop() ?? '';
    try {
      return JSON.parse(line) as T;
    } catch {
      throw new LifeboatError('unavailable', `hyperv host ${host}: ${step} ${vmName}: the answer is not JSON: ${JSON.stringify(line.slice(0, 200))}`);
    }
  }
}

/** Get-VM's State and Heartbeat as a VmStatus. */
export function mapVmStatus(r: { exists: boolean; ours?: boolean; state?: string; heartbeat?: string; status?: string }, stopped: boolean, host: string): VmStatus {
  if (!r.exists) return stopped ? { state: 'stopped' } : { state: 'failed', reason: `the VM is gone from hyperv host ${host}` };
  if (r.ours === false) return { state: 'failed', reason: `the VM of that name on hyperv host ${host} is not this failover's` };
  const state = r.state ?? '';
  const heartbeat = r.heartbeat ? `heartbeat ${r.heartbeat}` : 'no heartbeat';
  if (state.endsWith('Critical')) return { state: 'failed', reason: `Hyper-V reports ${state}: ${r.status ?? ''}`.trim() };
  switch (state) {
    case 'Running': return { state: 'running', reason: heartbeat };
    case 'Off': return { state: 'stopped', reason: stopped ? 'turned off' : 'the guest is off' };
    case 'Starting': case 'Stopping': case 'Reset': return { state: 'running', reason: `Hyper-V reports ${state}` };
    default: return { state: 'paused', reason: `Hyper-V reports ${state || 'no state'}` };
  }
}

/** Hyper-V's failover settings hold one address per family and two DNS servers each; the rest are noted. */
function failoverConfig(plan: NicPlan, field: string, notes: string[]): HypervNicPlan['failover'] {
  const cfg = plan.config;
  if (cfg.mode !== 'static') return undefined;
  const cidrs = cfg.addresses.map((a, i) => checkCidr(a, `${field}.addresses[${i}]`));
  const v4 = cidrs.filter((c) => c.family === 4);
  const v6 = cidrs.filter((c) => c.family === 6);
  const dns = cfg.dns.map((d, i) => ({ text: d, i }));
  const dns4 = dns.filter((d) => !d.text.includes(':')).map((d) => checkIp(d.text, 4, `${field}.dns[${d.i}]`));
  const dns6 = dns.filter((d) => d.text.includes(':')).map((d) => checkIp(d.text, 6, `${field}.dns[${d.i}]`));
  cfg.search.forEach((s, i) => {
    const bad = dnsNameReason(s, 'search domain');
    if (bad) throw ErrInvalidArgument(`${field}.search[${i}]: ${bad}`);
  });
  const extra = [...v4.slice(1), ...v6.slice(1)].map((c) => `${c.ip}/${c.prefix}`);
  if (extra.length) notes.push(`nic ${plan.mac}: Hyper-V's failover settings take one address per family; not injected: ${extra.join(', ')}`);
  if (dns4.length > 2 || dns6.length > 2) notes.push(`nic ${plan.mac}: Hyper-V's failover settings take two DNS servers per family; not injected: ${[...dns4.slice(2), ...dns6.slice(2)].join(', ')}`);
  if (cfg.search.length) notes.push(`nic ${plan.mac}: Hyper-V's failover settings have no search domains; not injected: ${cfg.search.join(', ')}`);
  const out: NonNullable<HypervNicPlan['failover']> = {};
  if (v4[0]) {
    out.ipv4 = { address: v4[0].ip, mask: netmaskOf(4, v4[0].prefix), dns: dns4.slice(0, 2) };
    if (cfg.gateway4) out.ipv4.gateway = checkIp(cfg.gateway4, 4, `${field}.gateway4`);
  }
  if (v6[0]) {
    out.ipv6 = { address: v6[0].ip, prefix: v6[0].prefix, dns: dns6.slice(0, 2) };
    if (cfg.gateway6) out.ipv6.gateway = checkIp(cfg.gateway6, 6, `${field}.gateway6`);
  }
  return out;
}

/** Free text that goes into a script only as a quoted literal: checked here so it fails before anything is made. */
function psSafeText(text: string, field: string): string {
  psQuote(text, field);
  return text;
}

function tcpOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolveOpen) => {
    const s = connect({ host, port, timeout: 1_000 });
    const done = (ok: boolean) => { s.destroy(); resolveOpen(ok); };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.once('timeout', () => done(false));
  });
}

/** A PNG (8-bit RGB) of an RGB565 little-endian frame. */
export function rgb565ToPng(data: Buffer, width: number, height: number): Buffer {
  if (data.length < width * height * 2) throw new LifeboatError('unavailable', `hyperv screenshot: ${data.length} bytes for ${width}x${height}`);
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    for (let x = 0; x < width; x++) {
      const v = data.readUInt16LE((y * width + x) * 2);
      const o = row + 1 + x * 3;
      raw[o] = ((v >> 11) & 0x1f) * 255 / 31;
      raw[o + 1] = ((v >> 5) & 0x3f) * 255 / 63;
      raw[o + 2] = (v & 0x1f) * 255 / 31;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = 2; // 8-bit truecolour
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

let crcTable: Uint32Array | undefined;
function crc32(buf: Buffer): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (const b of buf) c = crcTable[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
