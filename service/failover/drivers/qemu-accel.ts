/**
 * Which accelerator qemu uses: KVM only where a guest really runs under it, else TCG.
 *
 * On some hosts /dev/kvm exists but guests abort under it ("KVM internal error", MSR errors), so
 * 'auto' does not trust the device: it boots a probe guest (one hand-assembled boot sector that
 * prints a marker on COM1 and halts) under KVM, and takes KVM only when the marker appeared and
 * qemu is still alive a moment later. A real guest can still fail under KVM where the probe ran:
 * the driver then calls `rememberKvmFailure`, and every later start goes straight to TCG. The
 * outcome is kept in <stateDir>/qemu-accel.json so the probe runs once per host.
 */
import { spawn } from 'node:child_process';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { readJson, sleep, writeJsonAtomic } from './qemu-files.js';

export type AccelMode = 'auto' | 'kvm' | 'tcg';
export interface AccelChoice { accel: 'kvm' | 'tcg'; reason: string; at: string }

export const ProbeMarker = 'LIFEBOAT-BOOT-OK';
const ProbeTimeoutMs = 8_000;
/** How long the probe guest must stay alive after its marker (KVM errors can come late). */
const ProbeSettleMs = 1_500;
const stateFile = 'qemu-accel.json';

/**
 * A 512-byte MBR boot sector in x86 real mode: writes `marker` and CRLF to COM1 (port 0x3f8), then
 * halts with interrupts off, forever. SeaBIOS loads it at 0:7c00; the text sits at offset 0x40.
 */
export function markerBootSector(marker = ProbeMarker): Buffer {
  const text = Buffer.from(`${marker}\r\n\0`, 'latin1');
  if (0x40 + text.length > 510) throw new Error('marker too long for a boot sector');
  const code = [
    0xfa, //             cli
    0xfc, //             cld
    0x31, 0xc0, //       xor ax, ax
    0x8e, 0xd8, //       mov ds, ax
    0xbe, 0x40, 0x7c, // mov si, 0x7c40        ; the text
    0xba, 0xf8, 0x03, // mov dx, 0x3f8         ; COM1
    0xac, //             next: lodsb
    0x84, 0xc0, //       test al, al
    0x74, 0x03, //       jz done
    0xee, //             out dx, al
    0xeb, 0xf8, //       jmp next
    0xf4, //             done: hlt
    0xeb, 0xfd, //       jmp done
  ];
  const sector = Buffer.alloc(512);
  Buffer.from(code).copy(sector, 0);
  text.copy(sector, 0x40);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

/**
 * Boots the probe guest under `accel` for a few seconds. ok when the marker reached the console and
 * qemu stayed alive; detail says what happened (qemu's own words when it died).
 */
export async function probeAccel(binary: string, accel: 'kvm' | 'tcg'): Promise<{ ok: boolean; detail: string }> {
  const dir = await mkdtemp('/tmp/lifeboat-accel-');
  try {
    const disk = join(dir, 'probe.img');
    const sector = markerBootSector();
    await writeFile(disk, Buffer.concat([sector, Buffer.alloc(1024 * 1024 - sector.length)]));
    const consolePath = join(dir, 'console.log');
    const cpu = accel === 'kvm' ? 'host' : 'max';
    const child = spawn(binary, ['-nodefaults', '-no-user-config', '-display', 'none', '-accel', accel, '-cpu', cpu, '-m', '32',
      '-drive', `file=${disk},format=raw,if=ide`, '-serial', `file:${consolePath}`, '-no-reboot'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    let exited = false;
    const exit = new Promise<void>((r) => child.once('close', () => { exited = true; r(); }));
    child.once('error', (err) => { stderr += err.message; });
    try {
      const deadline = Date.now() + ProbeTimeoutMs;
      while (Date.now() < deadline && !exited) {
        const out = await readFile(consolePath, 'latin1').catch(() => '');
        if (out.includes(ProbeMarker)) {
          await sleep(ProbeSettleMs);
          if (!exited) return { ok: true, detail: `probe guest ran under ${accel}` };
          break;
        }
        await sleep(100);
      }
      const why = stderr.trim().split('\n').slice(-2).join(' | ');
      return { ok: false, detail: exited ? `qemu exited under ${accel}: ${why || 'no message'}` : `probe guest printed nothing under ${accel} within ${ProbeTimeoutMs} ms` };
    } finally {
      if (!exited) child.kill('SIGKILL');
      await exit;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const inFlight = new Map<string, Promise<AccelChoice>>();

/** The accelerator to start VMs with; probes once per stateDir (and once at a time per process). */
export function chooseAccel(o: { mode: AccelMode; stateDir: string; binary: string; log?: Logger; kvmDevice?: string }): Promise<AccelChoice> {
  if (o.mode !== 'auto') return Promise.resolve({ accel: o.mode, reason: `configured accel ${o.mode}`, at: new Date().toISOString() });
  const key = o.stateDir;
  let p = inFlight.get(key);
  if (!p) {
    p = decide(o).finally(() => inFlight.delete(key));
    inFlight.set(key, p);
  }
  return p;
}

async function decide(o: { stateDir: string; binary: string; log?: Logger; kvmDevice?: string }): Promise<AccelChoice> {
  const path = join(o.stateDir, stateFile);
  const known = await readJson<AccelChoice>(path);
  if (known) return known;
  const dev = o.kvmDevice ?? '/dev/kvm';
  let choice: AccelChoice;
  if (!(await access(dev).then(() => true, () => false))) {
    choice = { accel: 'tcg', reason: `${dev} missing`, at: new Date().toISOString() };
  } else {
    const probe = await probeAccel(o.binary, 'kvm');
    choice = { accel: probe.ok ? 'kvm' : 'tcg', reason: probe.detail, at: new Date().toISOString() };
  }
  await mkdir(o.stateDir, { recursive: true });
  await writeJsonAtomic(path, choice);
  o.log?.info({ accel: choice.accel, reason: choice.reason }, `qemu accelerator: ${choice.accel} (${choice.reason})`);
  return choice;
}

/** A guest died under KVM: later starts use TCG. */
export async function rememberKvmFailure(stateDir: string, reason: string, log?: Logger): Promise<void> {
  const choice: AccelChoice = { accel: 'tcg', reason: `a guest failed under kvm: ${reason}`, at: new Date().toISOString() };
  await mkdir(stateDir, { recursive: true });
  await writeJsonAtomic(join(stateDir, stateFile), choice);
  log?.warn({ accel: 'tcg', reason }, 'qemu accelerator: kvm failed a guest, using tcg from now on');
}
