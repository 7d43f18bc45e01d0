/**
 * The qemu failover driver (docs/failover-qemu.md): each failed-over VM is a qemu-system-x86_64
 * process of its own, started detached (its own session, pid in workDir) so it outlives the failover
 * host, booting from qcow2 overlays whose backing is the point's NBD export. Every step reads what it
 * needs from workDir (spec.json, run.json, the sockets), so a restarted host, or a new QemuDriver,
 * picks up a VM where the last one left it; every step is idempotent.
 *
 * Failures: a configuration or binary problem (qemu missing, an unknown machine type) and a qemu
 * that exits at start are one LifeboatError line with qemu's own words; QMP errors name the command.
 */
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { ErrInvalidArgument, ErrNotFound, LifeboatError } from '../../../shared/errors.js';
import { GuestAgentClient, QmpClient } from '../../../shared/qmp/client.js';
import { MaxReadbackText, parseConsoleReport } from '../network/readback.js';
import { chooseAccel, rememberKvmFailure, type AccelMode } from './qemu-accel.js';
import { qemuArgs } from './qemu-args.js';
import { flushAll, streamDisk } from './qemu-commit.js';
import { probeUntil } from './qemu-ready.js';
import { exists, livePid, logTail, RunHeader, readJson, removeFile, sleep, workFiles, writeJsonAtomic, type QemuSpec, type RunState } from './qemu-files.js';
import type { FailoverDriver, GuestNetworkReport, PrepareInput, ReadyProbe, ReadyResult, VmStatus } from './types.js';

const execFileP = promisify(execFile);

/** The persistent dirty bitmap on every overlay: the blocks the failed-over VM wrote (for failback). */
export const FailoverBitmap = 'lifeboat-fo';
export const DefaultOvmf = {
  code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
  vars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
  secureCode: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd',
  secureVars: '/usr/share/OVMF/OVMF_VARS_4M.ms.fd',
};
const DefaultMachine = { bios: 'pc', uefi: 'q35' };
const QmpStartTimeoutMs = 30_000;
const QuitTimeoutMs = 15_000;
const DefaultPowerdownTimeoutMs = 60_000;
const MaxSocketPath = 107;

export interface QemuDriverConfig {
  binary?: string;
  imgBinary?: string;
  /** Machine type per firmware (default pc for BIOS, q35 for UEFI; Secure Boot adds smm=on). */
  machine?: { bios?: string; uefi?: string };
  /** Used when the recorded hardware leaves memory or vCPUs at 0. */
  defaultMemoryMiB?: number;
  defaultCpus?: number;
  accel?: AccelMode;
  /** Where the accelerator probe's outcome is remembered (the failover host's state directory). */
  stateDir: string;
  ovmf?: Partial<typeof DefaultOvmf>;
  bridgeHelper?: string;
  reconnectDelaySec?: number;
  log?: Logger;
}

export class QemuDriver implements FailoverDriver {
  readonly kind = 'qemu';
  private readonly binary: string;
  private readonly imgBinary: string;
  private readonly machine: { bios: string; uefi: string };
  private readonly ovmf: typeof DefaultOvmf;
  private readonly conns = new Map<string, Promise<QmpClient>>();

  constructor(private readonly config: QemuDriverConfig) {
    this.binary = config.binary ?? 'qemu-system-x86_64';
    this.imgBinary = config.imgBinary ?? 'qemu-img';
    this.machine = { ...DefaultMachine, ...config.machine };
    this.ovmf = { ...DefaultOvmf, ...config.ovmf };
  }

  /** Checks the configuration against this host: binaries run, machine types exist, OVMF is there. */
  async check(): Promise<void> {
    const help = await this.run(this.binary, ['-machine', 'help'], 'qemu.binary');
    const known = new Set(help.split('\n').map((l) => l.trim().split(/\s+/)[0]).filter(Boolean));
    for (const fw of ['bios', 'uefi'] as const) {
      if (!known.has(this.machine[fw])) throw ErrInvalidArgument(`qemu.machine.${fw}: ${this.binary} has no machine type '${this.machine[fw]}'`);
    }
    await this.run(this.imgBinary, ['--version'], 'qemu.imgBinary');
  }

  async prepare(input: PrepareInput): Promise<void> {
    const workDir = input.workDir;
    if (join(workDir, workFiles.qmp).length > MaxSocketPath) throw ErrInvalidArgument(`failover work directory ${workDir}: too long for unix socket paths (at most ${MaxSocketPath - 9} characters)`);
    if (input.disks.length === 0) throw ErrInvalidArgument(`failover ${input.failoverId}: the VM has no disks`);
    const previous = await readJson<QemuSpec>(join(workDir, workFiles.spec));
    if (previous && previous.failoverId !== input.failoverId) throw new LifeboatError('conflict', `${workDir} belongs to failover ${previous.failoverId}, not ${input.failoverId}`);
    await mkdir(workDir, { recursive: true });

    // One overlay per disk, made side by side; its header names no backing file: the NBD backing is
    // given on the command line.
    for (const disk of input.disks) {
      if (!(disk.virtualSize > 0) || disk.virtualSize % 512 !== 0) throw ErrInvalidArgument(`disk ${disk.id}: virtual size ${disk.virtualSize} is not a positive multiple of 512`);
    }
    const overlays = input.disks.map((_, i) => join(workDir, workFiles.overlay(i)));
    const made = await Promise.allSettled(input.disks.map(async (disk, i) => {
      const overlay = overlays[i]!;
      if (await exists(overlay)) return;
      await this.run(this.imgBinary, ['create', '-q', '-f', 'qcow2', `${overlay}.tmp`, String(disk.virtualSize)], 'qemu.imgBinary');
      await rename(`${overlay}.tmp`, overlay);
    }));
    // Every qemu-img has ended before a failure is reported (a teardown then finds nothing being written).
    for (const r of made) if (r.status === 'rejected') throw r.reason;

    // UEFI: the VM's NVRAM (its boot entries) copied in, or OVMF's template for a first start.
    let firmware: QemuSpec['firmware'];
    if (input.hardware.firmware === 'uefi') {
      const secure = input.hardware.secureBoot;
      firmware = { code: secure ? this.ovmf.secureCode : this.ovmf.code, vars: join(workDir, workFiles.nvram) };
      if (!(await exists(firmware.code))) throw ErrNotFound(`qemu.ovmf: firmware ${firmware.code} not found (package ovmf)`);
      if (!(await exists(firmware.vars))) {
        const source = input.nvramSource ?? (secure ? this.ovmf.secureVars : this.ovmf.vars);
        await copyFile(source, `${firmware.vars}.tmp`).catch((err: unknown) => { throw new LifeboatError('not_found', `NVRAM source ${source}: ${(err as Error).message}`, { cause: err }); });
        await rename(`${firmware.vars}.tmp`, firmware.vars);
      }
    }
    const spec: QemuSpec = { ...input, overlays, ...(firmware ? { firmware } : {}) };
    await writeJsonAtomic(join(workDir, workFiles.spec), spec);
  }

  async start(workDir: string): Promise<void> {
    const spec = await this.spec(workDir);
    if (await livePid(workDir)) {
      // Running already; a host that died between launch and `cont` left it paused before its first instruction.
      const qmp = await this.qmp(workDir);
      const st = await qmp.execute<{ status: string }>('query-status');
      if (st.status === 'prelaunch') await this.bitmapsThenCont(workDir, spec, qmp);
      else if (st.status === 'shutdown') {
        // The guest powered itself off (qemu waits paused): power it on again.
        await qmp.execute('system_reset');
        await qmp.execute('cont');
      }
      return;
    }
    await this.launch(workDir, spec);
  }

  async status(workDir: string): Promise<VmStatus> {
    const pid = await livePid(workDir);
    if (pid) {
      let st: { status: string };
      try {
        st = await (await this.qmp(workDir)).execute<{ status: string }>('query-status', undefined, { timeoutMs: 5_000 });
      } catch (err) {
        return { state: 'running', pid, reason: `qemu alive, monitor unreachable: ${(err as Error).message}` };
      }
      switch (st.status) {
        case 'running': return { state: 'running', pid };
        case 'shutdown': return { state: 'stopped', pid, reason: 'the guest powered off' };
        case 'internal-error': case 'guest-panicked': case 'io-error': {
          const tail = await logTail(workDir);
          // Under KVM an internal-error is KVM's: the next start (the reconciler's) uses TCG.
          if (st.status === 'internal-error' && (this.config.accel ?? 'auto') === 'auto' && (await readJson<RunState>(join(workDir, workFiles.run)).catch(() => undefined))?.accel === 'kvm') {
            await rememberKvmFailure(this.config.stateDir, `the guest stopped in internal-error under KVM: ${tail}`, this.config.log);
          }
          return { state: 'failed', pid, reason: `qemu reports ${st.status}: ${tail || 'no message in its log'}` };
        }
        default: return { state: 'paused', pid, reason: `qemu status ${st.status}` };
      }
    }
    const run = await readJson<RunState>(join(workDir, workFiles.run)).catch(() => undefined);
    if (!run || (await exists(join(workDir, workFiles.stopped)))) return { state: 'stopped' };
    const tail = await logTail(workDir);
    if (run.accel === 'kvm' && /kvm|MSR/i.test(tail)) await rememberKvmFailure(this.config.stateDir, tail, this.config.log);
    return { state: 'failed', reason: `qemu (pid ${run.pid}) exited: ${tail || 'nothing in its log'}` };
  }

  async waitReady(workDir: string, probes: ReadyProbe[], timeoutMs: number): Promise<ReadyResult> {
    const run = await readJson<RunState>(join(workDir, workFiles.run));
    if (!run) throw new LifeboatError('conflict', `${workDir}: the VM was never started`);
    const from = run.contAt ?? Date.now();
    const deadline = Date.now() + timeoutMs;
    let done = false;
    const answered = (detail: string): ReadyResult => ({ ready: true, detail, elapsedMs: Date.now() - from });
    const loops = probes.map((p) => probeUntil(workDir, run.consoleOffset, p, () => done || Date.now() > deadline).then((d: string | undefined) => (d === undefined ? never<ReadyResult>() : answered(d))));
    const watch = (async (): Promise<ReadyResult> => {
      let tick = 0;
      while (!done) {
        const alive = await livePid(workDir);
        // KVM's failure comes two ways: qemu dead with KVM's words in its log, or qemu alive with the
        // VM stopped in internal-error (what KVM_EXIT_INTERNAL_ERROR leaves); asked every second.
        const stuck = alive !== undefined && ++tick % 4 === 0 && (await this.kvmInternalError(workDir, run));
        if (!alive || stuck) {
          if (await this.relaunchUnderTcg(workDir, run, stuck)) return { ready: false, detail: 'KVM failed the guest: qemu started again under TCG', elapsedMs: Date.now() - from };
          if (stuck) return { ready: false, detail: (await this.status(workDir)).reason ?? 'qemu reports internal-error', elapsedMs: Date.now() - from };
          return { ready: false, detail: (await this.status(workDir)).reason ?? 'qemu exited', elapsedMs: Date.now() - from };
        }
        if (Date.now() > deadline) return { ready: false, detail: `no probe answered within ${timeoutMs} ms (${probes.map((p) => p.kind).join(', ') || 'no probes'})`, elapsedMs: Date.now() - from };
        await sleep(250);
      }
      return never<ReadyResult>();
    })();
    try {
      return await Promise.race([...loops, watch]);
    } finally {
      done = true;
    }
  }

  async guestNetwork(workDir: string, timeoutMs: number): Promise<GuestNetworkReport | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = await readFile(join(workDir, workFiles.console), 'utf8').catch(() => '');
      const texts = parseConsoleReport(text.length > MaxReadbackText ? text.slice(-MaxReadbackText) : text);
      if (texts) return { source: 'console', texts };
      if (Date.now() >= deadline) break;
      await sleep(2000);
    }
    const agent = await GuestAgentClient.connect(join(workDir, workFiles.qga), { timeoutMs: 5000 }).catch(() => undefined);
    if (!agent) return undefined;
    try {
      return { source: 'guest-agent', interfaces: await agent.networkInterfaces({ timeoutMs: 10_000 }) };
    } catch {
      return undefined;
    } finally {
      agent.close();
    }
  }

  async screenshot(workDir: string): Promise<Buffer> {
    const file = join(workDir, workFiles.screenshot);
    await (await this.qmp(workDir)).execute('screendump', { filename: file, format: 'png' });
    try {
      return await readFile(file);
    } finally {
      await removeFile(file);
    }
  }

  async commit(workDir: string): Promise<void> {
    const spec = await this.spec(workDir);
    const committedPath = join(workDir, workFiles.committed);
    const committed = new Set((await readJson<number[]>(committedPath)) ?? []);
    if (spec.disks.every((_, i) => committed.has(i))) return;
    if (!(await livePid(workDir))) throw new LifeboatError('conflict', `${workDir}: commit needs the VM running (${(await this.status(workDir)).reason ?? 'stopped'})`);
    const qmp = await this.qmp(workDir);
    for (let i = 0; i < spec.disks.length; i++) {
      if (committed.has(i)) continue;
      await streamDisk(qmp, i, spec.disks[i]!.id, this.config.log);
      // On disk before it is recorded.
      await flushAll(qmp);
      // The NBD node is no longer anybody's backing: close it, so the export can be closed.
      await qmp.execute('blockdev-del', { 'node-name': `nbd${i}` }).catch(() => undefined);
      committed.add(i);
      await writeJsonAtomic(committedPath, [...committed].sort((a, b) => a - b));
    }
  }

  async stop(workDir: string, options: { graceful?: boolean; timeoutMs?: number } = {}): Promise<void> {
    if (await exists(workDir)) await writeJsonAtomic(join(workDir, workFiles.stopped), { at: new Date().toISOString() });
    const pid = await livePid(workDir);
    if (!pid) { await this.dropConnection(workDir); return; }
    const qmp = await this.qmp(workDir).catch(() => undefined);
    if (qmp && options.graceful) {
      const deadline = Date.now() + (options.timeoutMs ?? DefaultPowerdownTimeoutMs);
      await qmp.execute('system_powerdown').catch(() => undefined);
      while (Date.now() < deadline && (await livePid(workDir))) {
        const st = await qmp.execute<{ status: string }>('query-status').catch(() => undefined);
        if (st?.status === 'shutdown') break;
        await sleep(250);
      }
    }
    // quit writes the persistent bitmaps into the overlays; SIGKILL only when qemu does not go.
    if (qmp) await qmp.execute('quit', undefined, { timeoutMs: 5_000 }).catch(() => undefined);
    const deadline = Date.now() + QuitTimeoutMs;
    while (Date.now() < deadline && (await livePid(workDir))) await sleep(100);
    if (await livePid(workDir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone between the check and the kill.
      }
      this.config.log?.warn({ workDir, pid }, 'qemu did not quit: killed');
      while (await livePid(workDir)) await sleep(50);
    }
    await this.dropConnection(workDir);
  }

  async cleanup(workDir: string): Promise<void> {
    if (await livePid(workDir)) await this.stop(workDir);
    await this.dropConnection(workDir);
    await rm(workDir, { recursive: true, force: true });
  }

  /** The monitor connection of a VM (one per workDir, kept open: a qemu monitor takes one client). */
  qmp(workDir: string): Promise<QmpClient> {
    const cached = this.conns.get(workDir);
    if (cached) return cached;
    const p = QmpClient.connect(join(workDir, workFiles.qmp)).then((c) => {
      c.once('close', () => { if (this.conns.get(workDir) === p) this.conns.delete(workDir); });
      return c;
    });
    p.catch(() => { if (this.conns.get(workDir) === p) this.conns.delete(workDir); });
    this.conns.set(workDir, p);
    return p;
  }

  /** Closes this driver's monitor connections; the VMs go on running. */
  async close(): Promise<void> {
    const all = [...this.conns.keys()];
    await Promise.all(all.map((w) => this.dropConnection(w)));
  }

  private async dropConnection(workDir: string): Promise<void> {
    const p = this.conns.get(workDir);
    this.conns.delete(workDir);
    if (p) await (await p.catch(() => undefined))?.close();
  }

  private async spec(workDir: string): Promise<QemuSpec> {
    const spec = await readJson<QemuSpec>(join(workDir, workFiles.spec)).catch((err: unknown) => { throw new LifeboatError('corrupt', `${workDir}/spec.json: ${(err as Error).message}`); });
    if (!spec) throw ErrNotFound(`${workDir}: no failover prepared here (spec.json missing)`);
    return spec;
  }

  /**
   * A guest that KVM failed while it booted (qemu dead, KVM or MSR in its log; accel auto): TCG from
   * now on (rememberKvmFailure), and the VM launched again under it at once. Checked while waiting
   * for readiness, not by a pause in start, so start returns as soon as the guest runs.
   */
  private async relaunchUnderTcg(workDir: string, run: RunState, internalError = false): Promise<boolean> {
    if (run.accel !== 'kvm' || (this.config.accel ?? 'auto') !== 'auto' || (await exists(join(workDir, workFiles.stopped)))) return false;
    const tail = await logTail(workDir);
    if (!internalError && !/kvm|MSR/i.test(tail)) return false;
    await rememberKvmFailure(this.config.stateDir, internalError ? `the guest stopped in internal-error under KVM: ${tail}` : tail, this.config.log);
    // A qemu whose VM stopped in internal-error is alive: it quits (writing its bitmaps) first.
    if (internalError) await this.stop(workDir);
    await this.dropConnection(workDir);
    await this.launch(workDir, await this.spec(workDir));
    return true;
  }

  /** qemu alive under KVM (accel auto) with its VM stopped in internal-error: KVM could not run it. */
  private async kvmInternalError(workDir: string, run: RunState): Promise<boolean> {
    if (run.accel !== 'kvm' || (this.config.accel ?? 'auto') !== 'auto') return false;
    const st = await (await this.qmp(workDir)).execute<{ status: string }>('query-status', undefined, { timeoutMs: 5_000 }).catch(() => undefined);
    return st?.status === 'internal-error';
  }

  /** Starts qemu paused, adds the bitmaps, lets the guest run. */
  private async launch(workDir: string, spec: QemuSpec): Promise<void> {
    await removeFile(join(workDir, workFiles.stopped));
    const choice = await chooseAccel({ mode: this.config.accel ?? 'auto', stateDir: this.config.stateDir, binary: this.binary, log: this.config.log });
    const committed = new Set((await readJson<number[]>(join(workDir, workFiles.committed))) ?? []);
    const machine = this.machine[spec.hardware.firmware];
    const args = qemuArgs(spec, workDir, {
      machine, accel: choice.accel, committed,
      defaultMemoryMiB: this.config.defaultMemoryMiB ?? 1024, defaultCpus: this.config.defaultCpus ?? 1,
      ...(this.config.bridgeHelper ? { bridgeHelper: this.config.bridgeHelper } : {}),
      ...(this.config.reconnectDelaySec !== undefined ? { reconnectDelaySec: this.config.reconnectDelaySec } : {}),
    });
    const ranBefore = (await readJson<RunState>(join(workDir, workFiles.run)))?.contAt !== undefined;
    const consoleOffset = await stat(join(workDir, workFiles.console)).then((s) => s.size, () => 0);
    const log = await open(join(workDir, workFiles.log), 'a');
    let pid: number;
    try {
      await log.write(`${RunHeader}${new Date().toISOString()} ${this.binary} ${args.join(' ')}\n`);
      pid = await new Promise<number>((resolve, reject) => {
        const child = spawn(this.binary, args, { detached: true, stdio: ['ignore', log.fd, log.fd] });
        child.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'ENOENT'
          ? ErrInvalidArgument(`qemu.binary: ${this.binary} not found (install qemu-system-x86 or set qemu.binary)`)
          : new LifeboatError('io', `start ${this.binary}: ${err.message}`, { cause: err })));
        child.once('spawn', () => { child.unref(); resolve(child.pid!); });
      });
    } finally {
      await log.close();
    }
    await writeJsonAtomic(join(workDir, workFiles.pid), pid);
    await writeJsonAtomic(join(workDir, workFiles.run), { pid, accel: choice.accel, consoleOffset, startedAt: new Date().toISOString() } satisfies RunState);
    this.config.log?.info({ workDir, pid, accel: choice.accel, machine }, `qemu started (${choice.accel})`);

    const qmp = await this.waitForMonitor(workDir, pid, `machine ${machine}, ${choice.accel}`);
    await this.bitmapsThenCont(workDir, spec, qmp, ranBefore);
  }

  private async waitForMonitor(workDir: string, pid: number, what: string): Promise<QmpClient> {
    const deadline = Date.now() + QmpStartTimeoutMs;
    for (;;) {
      try {
        return await this.qmp(workDir);
      } catch (err) {
        if (!(await livePid(workDir))) {
          const tail = await logTail(workDir);
          throw new LifeboatError('io', `qemu (${what}) exited at start: ${tail || `pid ${pid} gone, nothing in its log`}`);
        }
        if (Date.now() > deadline) throw new LifeboatError('unavailable', `qemu pid ${pid}: monitor not reachable within ${QmpStartTimeoutMs} ms: ${(err as Error).message}`);
        await sleep(50);
      }
    }
  }

  /**
   * The failover bitmap on every overlay, then `cont`. The bitmap is persistent: qemu writes it into
   * the overlay when it quits and finds it there on the next start. When qemu was killed instead, the
   * bitmap is missing (never stored) or inconsistent (stored, then in use): it no longer says which
   * blocks the VM wrote, so a new one is made and the disk is listed in bitmap-reset.json, from which
   * failback learns to compare that disk in full.
   */
  private async bitmapsThenCont(workDir: string, spec: QemuSpec, qmp: QmpClient, ranBefore = false): Promise<void> {
    const nodes = await qmp.execute<{ 'node-name': string; 'dirty-bitmaps'?: { name: string; inconsistent?: boolean }[] }[]>('query-named-block-nodes', { flat: true });
    const resetPath = join(workDir, workFiles.bitmapReset);
    const reset = (await readJson<Record<string, string>>(resetPath)) ?? {};
    for (let i = 0; i < spec.disks.length; i++) {
      const node = `ov${i}`;
      const disk = spec.disks[i]!.id;
      const bitmap = nodes.find((n) => n['node-name'] === node)?.['dirty-bitmaps']?.find((b) => b.name === FailoverBitmap);
      if (bitmap && !bitmap.inconsistent) continue;
      if (bitmap) await qmp.execute('block-dirty-bitmap-remove', { node, name: FailoverBitmap });
      if (bitmap || ranBefore) {
        reset[disk] = new Date().toISOString();
        await writeJsonAtomic(resetPath, reset);
        this.config.log?.warn({ workDir, disk }, 'failover bitmap lost when qemu was killed: recreated; failback must compare this disk in full');
      }
      await qmp.execute('block-dirty-bitmap-add', { node, name: FailoverBitmap, persistent: true });
    }
    await qmp.execute('cont');
    const run = await readJson<RunState>(join(workDir, workFiles.run));
    if (run) await writeJsonAtomic(join(workDir, workFiles.run), { ...run, contAt: Date.now() });
  }

  /** Runs a configured binary; a missing one is a one-line error naming the config field. */
  private async run(binary: string, args: string[], field: string): Promise<string> {
    try {
      return (await execFileP(binary, args, { maxBuffer: 16 << 20 })).stdout;
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === 'ENOENT') throw ErrInvalidArgument(`${field}: ${binary} not found`);
      throw new LifeboatError('io', `${binary} ${args[0]}: ${(e.stderr ?? e.message).trim().split('\n').pop()}`, { cause: err });
    }
  }
}

function never<T>(): Promise<T> {
  return new Promise<T>(() => undefined);
}
