/**
 * Runs the external tools a guest build needs (debootstrap, sfdisk, mkfs, losetup, tar, qemu-img).
 * Input: a command and its arguments. Output: its stdout as text, once it exited 0.
 * Failure: LifeboatError('io') naming the command and the last lines it wrote on stderr; a command
 * that is not installed is LifeboatError('unavailable') naming the Debian package that has it.
 * Output is never held beyond the last 64 KiB, so a chatty debootstrap costs no memory.
 */
import { spawn } from 'node:child_process';
import { LifeboatError } from '../../shared/errors.js';

/** The Debian package that provides each tool the build runs, for the "install it" message. */
export const PackageOfTool: Record<string, string> = {
  debootstrap: 'debootstrap',
  extlinux: 'extlinux',
  sfdisk: 'fdisk',
  'mkfs.ext4': 'e2fsprogs',
  debugfs: 'e2fsprogs',
  'mkfs.vfat': 'dosfstools',
  mcopy: 'mtools',
  mmd: 'mtools',
  losetup: 'mount',
  partx: 'util-linux',
  mount: 'mount',
  umount: 'mount',
  'qemu-img': 'qemu-utils',
  tar: 'tar',
  zstd: 'zstd',
  chroot: 'coreutils',
  genisoimage: 'genisoimage',
};

export interface RunOptions {
  /** Called with each line the command writes (stdout and stderr), for progress. */
  onLine?: (line: string) => void;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to the command's stdin, which is otherwise closed. */
  input?: string;
}

const KeepBytes = 64 * 1024;

export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd });
    child.stdin?.end(opts.input);
    let out = '';
    let err = '';
    let partial = '';
    const lines = (chunk: string) => {
      if (!opts.onLine) return;
      partial += chunk;
      const parts = partial.split('\n');
      partial = parts.pop() ?? '';
      for (const l of parts) if (l.trim() !== '') opts.onLine(l);
    };
    child.stdout!.setEncoding('utf8').on('data', (c: string) => { out = (out + c).slice(-KeepBytes); lines(c); });
    child.stderr!.setEncoding('utf8').on('data', (c: string) => { err = (err + c).slice(-KeepBytes); lines(c); });
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') {
        const pkg = PackageOfTool[cmd];
        reject(new LifeboatError('unavailable', `${cmd} is not installed${pkg ? ` (Debian package ${pkg})` : ''}`, { cause: e }));
      } else reject(new LifeboatError('io', `${cmd}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      if (code === 0) return resolve(out);
      const tail = (err.trim() || out.trim()).split('\n').slice(-5).join(' | ');
      reject(new LifeboatError('io', `${cmd} ${args.slice(0, 3).join(' ')}${args.length > 3 ? ' …' : ''} failed (${signal ?? `exit ${code}`}): ${tail}`));
    });
  });
}

/** True when cmd is found on PATH (or is an existing absolute path). */
export async function haveTool(cmd: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}
