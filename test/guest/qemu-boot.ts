/**
 * Test helper: boots a guest image as the failover driver will, through the disk's own bootloader
 * (SeaBIOS, or OVMF with a copy of the image's NVRAM), under TCG, from a qcow2 overlay so the image
 * itself is never written. An optional NoCloud seed (ISO9660, volume id cidata) gives the NIC a
 * static address matched by MAC. Networking is qemu's user mode with restrict=on: nothing leaves.
 * waitReady() reads the serial console for the readiness report (service/guest/ready.ts);
 * guestPing() asks qemu-guest-agent over its chardev socket.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { OvmfCode } from '../../service/guest/nvram.js';
import type { GuestReadyReport } from '../../service/guest/ready.js';
import { parseGuestReady } from '../../service/guest/ready.js';
import { run } from '../../service/guest/run.js';

export interface SeedNetwork {
  mac: string;
  /** address/prefix, e.g. 192.0.2.10/24 */
  address: string;
  gateway: string;
  dns: string[];
}

export interface BootOptions {
  image: string;
  firmware: 'bios' | 'uefi';
  /** The image's NVRAM file (UEFI); a copy is booted. */
  nvram?: string;
  /** A scratch directory for the overlay, seed, sockets and console log. */
  dir: string;
  seed?: SeedNetwork;
  /** The NIC's MAC when there is no seed. */
  mac?: string;
  memoryMiB?: number;
}

export interface BootedGuest {
  serialLog: string;
  qgaSocket: string;
  startedAt: number;
  waitReady(timeoutMs: number): Promise<GuestReadyReport>;
  guestPing(timeoutMs: number): Promise<void>;
  /** A file in the running guest, read through the guest agent (guest-file-open/read/close). */
  readFile(path: string): Promise<Buffer>;
  stop(): Promise<void>;
}

/** Writes a NoCloud seed ISO whose network-config v2 gives one NIC a static address by MAC. */
export async function makeSeedIso(dir: string, n: SeedNetwork, instanceId = 'lifeboat-test'): Promise<string> {
  const src = join(dir, 'seed');
  await mkdir(src, { recursive: true });
  await writeFile(join(src, 'meta-data'), `instance-id: ${instanceId}\nlocal-hostname: lifeboat-test\n`);
  await writeFile(join(src, 'user-data'), '#cloud-config\n{}\n');
  await writeFile(join(src, 'network-config'), [
    'version: 2',
    'ethernets:',
    '  nic0:',
    '    match:',
    `      macaddress: "${n.mac}"`,
    '    set-name: eth0',
    `    addresses: [${n.address}]`,
    '    routes:',
    '      - to: 0.0.0.0/0',
    `        via: ${n.gateway}`,
    '    nameservers:',
    `      addresses: [${n.dns.join(', ')}]`,
    '',
  ].join('\n'));
  const iso = join(dir, 'seed.iso');
  await run('genisoimage', ['-quiet', '-output', iso, '-volid', 'cidata', '-joliet', '-rock',
    join(src, 'user-data'), join(src, 'meta-data'), join(src, 'network-config')]);
  return iso;
}

export async function bootGuest(o: BootOptions): Promise<BootedGuest> {
  await mkdir(o.dir, { recursive: true });
  const overlay = join(o.dir, 'overlay.qcow2');
  const backingFormat = o.image.endsWith('.vhdx') ? 'vhdx' : 'raw';
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', backingFormat, '-b', o.image, overlay]);
  const serialLog = join(o.dir, 'serial.log');
  const qgaSocket = join(o.dir, 'qga.sock');
  const args = [
    '-accel', 'tcg', '-cpu', 'max', '-m', String(o.memoryMiB ?? 1024), '-smp', '1',
    '-no-user-config', '-nodefaults', '-display', 'none', '-monitor', 'none',
    '-drive', `file=${overlay},if=virtio,format=qcow2`,
    '-netdev', 'user,id=n0,restrict=on',
    '-device', `virtio-net-pci,netdev=n0,mac=${o.seed?.mac ?? o.mac ?? '52:54:00:00:00:01'}`,
    '-chardev', `socket,id=qga,path=${qgaSocket},server=on,wait=off`,
    '-device', 'virtio-serial', '-device', 'virtserialport,chardev=qga,name=org.qemu.guest_agent.0',
    '-serial', `file:${serialLog}`,
  ];
  if (o.seed) args.push('-drive', `file=${await makeSeedIso(o.dir, o.seed)},media=cdrom,format=raw,readonly=on`);
  if (o.firmware === 'uefi') {
    if (!o.nvram) throw new Error('a UEFI guest needs its NVRAM file');
    const vars = join(o.dir, 'vars.fd');
    await copyFile(o.nvram, vars);
    args.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${OvmfCode}`, '-drive', `if=pflash,format=raw,unit=1,file=${vars}`);
  }
  const startedAt = Date.now();
  const qemu: ChildProcess = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let exited: string | undefined;
  qemu.stderr!.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
  qemu.on('exit', (code, signal) => { exited = `qemu exited (${signal ?? code}): ${stderr.trim()}`; });
  qemu.on('error', (e) => { exited = `qemu did not start: ${e.message}`; });

  const console = () => readFile(serialLog, 'utf8').catch(() => '');
  return {
    serialLog,
    qgaSocket,
    startedAt,
    async waitReady(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const r = parseGuestReady(await console());
        if (r) return r;
        if (exited) throw new Error(exited);
        if (Date.now() > deadline) throw new Error(`no LIFEBOAT-GUEST-READY within ${timeoutMs} ms; console ends:\n${(await console()).slice(-3000)}`);
        await sleep(1000);
      }
    },
    async guestPing(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      let last = '';
      while (Date.now() < deadline) {
        try {
          await qgaCommand(qgaSocket, 'guest-ping', 10_000);
          return;
        } catch (err) {
          last = (err as Error).message;
          await sleep(1000);
        }
      }
      throw new Error(`qemu-guest-agent did not answer guest-ping within ${timeoutMs} ms: ${last}`);
    },
    async readFile(path) {
      const handle = await qgaCommand(qgaSocket, 'guest-file-open', 10_000, { path, mode: 'r' }) as number;
      try {
        const r = await qgaCommand(qgaSocket, 'guest-file-read', 10_000, { handle, count: 65536 }) as { 'buf-b64': string };
        return Buffer.from(r['buf-b64'], 'base64');
      } finally {
        await qgaCommand(qgaSocket, 'guest-file-close', 10_000, { handle });
      }
    },
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => qemu.once('exit', r));
      qemu.kill('SIGTERM');
      await Promise.race([gone, sleep(5000)]);
      if (!exited) { qemu.kill('SIGKILL'); await gone; }
    },
  };
}

/** One guest agent command over the chardev socket, after a guest-sync so stale replies are skipped. */
export async function qgaCommand(socket: string, command: string, timeoutMs: number, args?: Record<string, unknown>): Promise<unknown> {
  const id = Math.floor(Math.random() * 1e9);
  return new Promise((resolve, reject) => {
    const s = connect(socket);
    let buf = '';
    let synced = false;
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`no answer to ${command}`)); }, timeoutMs);
    s.on('error', (e) => { clearTimeout(timer); reject(e); });
    s.on('connect', () => s.write(`${JSON.stringify({ execute: 'guest-sync', arguments: { id } })}\n`));
    s.setEncoding('utf8').on('data', (c: string) => {
      buf += c;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        let msg: { return?: unknown; error?: { desc?: string } };
        try { msg = JSON.parse(line) as typeof msg; } catch { continue; }
        if (!synced) {
          if (msg.return === id) { synced = true; s.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`); }
          continue;
        }
        clearTimeout(timer);
        s.end();
        if (msg.error) reject(new Error(msg.error.desc ?? JSON.stringify(msg.error)));
        else resolve(msg.return);
        return;
      }
    });
  });
}
