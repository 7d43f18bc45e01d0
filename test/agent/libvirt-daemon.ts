/**
 * A private libvirt session daemon for tests (docs/agent.md "The libvirt source"): `libvirtd` run as
 * an unprivileged user (nobody when the tests run as root) with HOME and XDG_RUNTIME_DIR in a temporary
 * directory, so its socket, its domains' definitions and their qemu processes are the test's alone
 * (qemu:///session: TCG, no cgroups, no D-Bus, no network of libvirt's). Reached through
 * `qemu+unix:///session?socket=…`. stop() destroys its domains and ends the daemon it started (by pid).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileP, processGone, until } from '../helpers.js';

/** Why the libvirt tests cannot run here, or undefined when they can. */
export function libvirtMissing(): string | undefined {
  for (const [bin, pkg] of [['virsh', 'libvirt-clients'], ['libvirtd', 'libvirt-daemon libvirt-daemon-driver-qemu'], ['qemu-system-x86_64', 'qemu-system-x86']]) {
    try { execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }); } catch { return `${bin} is not installed (apt-get install --no-install-recommends ${pkg})`; }
  }
  return undefined;
}

export class LibvirtSession {
  private constructor(readonly dir: string, readonly uri: string, private readonly child: ChildProcess, private readonly uid: number) {}

  /** Starts the daemon in a new temporary directory (short: the unix sockets live under it). */
  static async start(): Promise<LibvirtSession> {
    const dir = await mkdtemp(join(tmpdir(), 'lblv-'));
    const root = process.getuid?.() === 0;
    const uid = root ? Number(execFileSync('id', ['-u', 'nobody']).toString().trim()) : process.getuid!();
    const gid = root ? Number(execFileSync('id', ['-g', 'nobody']).toString().trim()) : process.getgid!();
    for (const sub of ['', 'run', 'home', 'vm', 'work']) {
      await mkdir(join(dir, sub), { recursive: true, mode: 0o755 });
      await chown(join(dir, sub), uid, gid);
    }
    const env = [`HOME=${join(dir, 'home')}`, `XDG_RUNTIME_DIR=${join(dir, 'run')}`, `XDG_CONFIG_HOME=${join(dir, 'home', '.config')}`, `XDG_CACHE_HOME=${join(dir, 'home', '.cache')}`];
    const argv = root ? ['runuser', '-u', 'nobody', '--', 'env', ...env, 'libvirtd'] : ['env', ...env, 'libvirtd'];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
    const socket = join(dir, 'run', 'libvirt', 'libvirt-sock');
    await until(() => existsSync(socket) || child.exitCode !== null, 'libvirtd to make its socket', 60_000);
    if (child.exitCode !== null) throw new Error(`libvirtd exited with ${child.exitCode}`);
    const session = new LibvirtSession(dir, `qemu+unix:///session?socket=${socket}`, child, uid);
    await until(async () => (await session.virsh('version').then(() => true, () => false)), 'libvirtd to answer', 60_000);
    return session;
  }

  /** Runs virsh on this daemon; stdout. */
  async virsh(...args: string[]): Promise<string> {
    return (await execFileP('virsh', ['--connect', this.uri, ...args])).stdout;
  }

  /** Gives a file to the daemon's user (its qemu opens the disks). */
  async own(path: string): Promise<void> {
    await chown(path, this.uid, -1);
  }

  async stop(): Promise<void> {
    const domains = (await this.virsh('list', '--all', '--name').catch(() => '')).split('\n').map((l) => l.trim()).filter(Boolean);
    for (const d of domains) {
      await this.virsh('destroy', d).catch(() => undefined);
      await this.virsh('undefine', d, '--checkpoints-metadata').catch(() => undefined);
    }
    // The daemon is runuser's child: end it by the pid it wrote, then runuser ends.
    const pid = Number((await readFile(join(this.dir, 'run', 'libvirt', 'libvirtd.pid'), 'utf8').catch(() => '')).trim());
    if (pid > 0) process.kill(pid, 'SIGTERM');
    if (this.child.exitCode === null) await new Promise((r) => { this.child.once('exit', r); setTimeout(r, 15_000); });
    if (pid > 0 && !(await processGone(pid))) process.kill(pid, 'SIGKILL');
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Writes through the running domain's disk device (HMP qemu-io on its qdev's block backend). */
export async function hmpWrite(session: LibvirtSession, domain: string, alias: string, pattern: number, offset: number, length: number): Promise<void> {
  const out = await session.virsh('qemu-monitor-command', domain, '--hmp', `qemu-io -d /machine/peripheral/${alias}/virtio-backend "write -P 0x${pattern.toString(16)} ${offset} ${length}"`);
  if (/error|fail|denied/i.test(out)) throw new Error(`qemu-io on ${alias}: ${out}`);
}
