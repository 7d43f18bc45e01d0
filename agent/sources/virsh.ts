/**
 * virsh as a child process, for the libvirt source: every argument an argv element (no shell), XML
 * handed over in files the caller writes, each command under a time limit. libvirt's error is turned
 * into one line naming the VM and the connection: `VM web01: libvirt qemu:///system: failed to connect
 * to the hypervisor: Failed to connect socket to '/run/libvirt/libvirt-sock': No such file or directory`.
 *
 * Input: the VM's name (for messages), the connection URI (null: virsh's default), arguments.
 * Output: virsh's stdout. Failure: a LifeboatError, 'unavailable' when libvirt cannot be reached or
 * the domain is not there, 'conflict' for anything else libvirt refused; virsh missing is said as such.
 */
import { execFile, type ExecFileException } from 'node:child_process';
import { LifeboatError } from '../../shared/errors.js';

/** How long one virsh command may take before it is killed (a hung daemon must not hang the cycle). */
export const DefaultVirshTimeoutMs = 120_000;
const MaxOutput = 16 << 20;

/** libvirt could not be reached, or the domain is not there: the VM's cycle fails, others go on. */
const Unreachable = /failed to connect|no domain with matching|domain not found|connection refused|Cannot recv data|End of file while reading/i;

export class Virsh {
  constructor(readonly vm: string, readonly connect: string | null) {}

  /** Where libvirt is, for messages. */
  get where(): string { return `libvirt ${this.connect ?? '(virsh default connection)'}`; }

  run(args: string[], timeoutMs = DefaultVirshTimeoutMs): Promise<string> {
    const argv = [...(this.connect ? ['--connect', this.connect] : []), ...args];
    return new Promise((resolve, reject) => {
      execFile('virsh', argv, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MaxOutput, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
        if (!err) { resolve(stdout); return; }
        reject(this.failure(args[0] ?? '', err, stderr, timeoutMs));
      });
    });
  }

  private failure(command: string, err: ExecFileException, stderr: string, timeoutMs: number): LifeboatError {
    if (err.code === 'ENOENT') return new LifeboatError('unavailable', `VM ${this.vm}: virsh is not installed (apt-get install libvirt-clients)`, { cause: err });
    if (err.killed) return new LifeboatError('unavailable', `VM ${this.vm}: ${this.where}: virsh ${command} did not answer within ${Math.round(timeoutMs / 1000)} s`, { cause: err });
    const said = libvirtError(stderr) || err.message;
    const code = Unreachable.test(said) ? 'unavailable' : 'conflict';
    return new LifeboatError(code, `VM ${this.vm}: ${this.where}: ${said}`, { cause: err });
  }
}

/** virsh's `error: …` lines as one line (repeats dropped). */
export function libvirtError(stderr: string): string {
  const parts: string[] = [];
  for (const line of stderr.split(/\r?\n/)) {
    const m = /^error:\s*(.*)$/.exec(line.trim());
    const text = m?.[1]?.trim();
    if (text && !parts.includes(text)) parts.push(text);
  }
  return parts.join(': ');
}
