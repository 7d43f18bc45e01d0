/**
 * The qemu driver's work directory: the names of the files in it, atomic JSON files, the qemu
 * process (pid file, liveness checked against its command line so a reused pid is not taken for
 * our qemu) and the tail of its log for reasons. Everything a restarted host needs is here.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PrepareInput } from './types.js';

export const workFiles = {
  spec: 'spec.json',
  /** Written by start: pid, accel, where this run's console output begins. */
  run: 'run.json',
  /** Disks whose overlays no longer depend on NBD (commit), by disk index. */
  committed: 'committed.json',
  /** Written by stop before it ends qemu, so a dead qemu then reads as stopped, not failed. */
  stopped: 'stopped',
  /** Disks (by id) whose failover bitmap was lost to a killed qemu and made anew, with the time. */
  bitmapReset: 'bitmap-reset.json',
  pid: 'qemu.pid',
  /** qemu's stdout and stderr (its errors, KVM's complaints). */
  log: 'qemu.log',
  console: 'console.log',
  qmp: 'qmp.sock',
  qga: 'qga.sock',
  vnc: 'vnc.sock',
  nvram: 'nvram.fd',
  screenshot: 'screen.png',
  overlay: (index: number) => `disk${index}.qcow2`,
} as const;

/** The spec as prepare wrote it: the failover's input plus what the driver derived from it. */
export interface QemuSpec extends PrepareInput {
  overlays: string[];
  /** UEFI: the firmware code image (read-only pflash) and the VM's VARS copy in workDir. */
  firmware?: { code: string; vars: string };
}

export interface RunState {
  pid: number;
  accel: 'kvm' | 'tcg';
  /** Byte offset in console.log where this run's output starts (the file is appended to). */
  consoleOffset: number;
  startedAt: string;
  /** ms since the epoch when the guest was let run (`cont`); absent while qemu is paused at launch. */
  contAt?: number;
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, JSON.stringify(value, null, 2) + '\n');
  await rename(tmp, path);
}

export async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

export async function removeFile(path: string): Promise<void> {
  await unlink(path).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err; });
}

/**
 * The pid of this workDir's qemu if that process is alive and is ours (its command line names our
 * QMP socket), else undefined. A zombie (our own child not yet reaped) counts as dead.
 */
export async function livePid(workDir: string): Promise<number | undefined> {
  const text = await readFile(join(workDir, workFiles.pid), 'utf8').catch(() => '');
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  return (await isOurQemu(pid, join(workDir, workFiles.qmp))) ? pid : undefined;
}

export async function isOurQemu(pid: number, qmpPath: string): Promise<boolean> {
  try {
    const st = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(qmpPath);
  } catch {
    return false;
  }
}

/** The last lines of qemu's log, joined into one line for a reason ("" when there is none). */
export async function logTail(workDir: string, maxBytes = 4096): Promise<string> {
  let fh;
  try {
    fh = await open(join(workDir, workFiles.log), 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await fh.stat();
    const len = Math.min(size, maxBytes);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    // Each start appends a header line ('--- <time> <command line>'): only this run's lines count.
    const lines = buf.toString('utf8').split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
    const header = lines.findLastIndex((l) => l.startsWith(RunHeader));
    return lines.slice(header + 1).slice(-3).join(' | ');
  } finally {
    await fh.close();
  }
}

/** Starts each run's section of qemu.log. */
export const RunHeader = '--- ';

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
