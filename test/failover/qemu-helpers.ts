/**
 * Helpers for the qemu driver's tests: a tiny bootable disk (one MBR boot sector that prints a marker
 * on COM1 and halts), served read-only by qemu-nbd as a stand-in NBD server, and a PNG reader that
 * checks a screenshot really decodes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { markerBootSector } from '../../service/failover/drivers/qemu-accel.js';
import { isOurQemu } from '../../service/failover/drivers/qemu-files.js';

export const BootMarker = 'LIFEBOAT-BOOT-OK';
export const BootDiskSize = 1024 * 1024;

/** A raw disk whose first sector boots and prints BootMarker on the serial console; the rest is a pattern. */
export async function writeBootDisk(path: string): Promise<void> {
  const disk = Buffer.alloc(BootDiskSize);
  markerBootSector(BootMarker).copy(disk, 0);
  for (let i = 64 * 1024; i < disk.length; i++) disk[i] = (i >> 9) & 0xff;
  await writeFile(path, disk);
}

export interface NbdServer { socket: string; exportName: string; process: ChildProcess; stop(): Promise<void> }

/** qemu-nbd serving `image` (raw) read-only on a unix socket until stopped. */
export async function serveNbd(image: string, dir: string, exportName = 'boot'): Promise<NbdServer> {
  const socket = join(dir, `nbd-${exportName}.sock`);
  await rm(socket, { force: true }); // a killed server's socket file stays behind
  const child = spawn('qemu-nbd', ['--read-only', '--persistent', '--shared=8', '--socket', socket, '--export-name', exportName, '-f', 'raw', image], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  while (!existsSync(socket)) {
    if (child.exitCode !== null) throw new Error(`qemu-nbd exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error('qemu-nbd socket did not appear');
    await new Promise((r) => setTimeout(r, 50));
  }
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    }
  };
  return { socket, exportName, process: child, stop };
}

/** Ends the detached qemu a failed test may have left in a work directory under dir (by its pid file). */
export async function killLeftQemus(dir: string): Promise<void> {
  for (const entry of await readdir(dir)) {
    const pid = Number(await readFile(join(dir, entry, 'qemu.pid'), 'utf8').catch(() => ''));
    if (pid > 0 && (await isOurQemu(pid, join(dir, entry, 'qmp.sock')))) process.kill(pid, 'SIGKILL');
  }
}

/** Width, height and pixel bytes of a PNG, after checking its signature and inflating its image data. */
export function decodePng(png: Buffer): { width: number; height: number; pixels: Buffer } {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (!png.subarray(0, 8).equals(signature)) throw new Error('not a PNG (signature)');
  let off = 8;
  let width = 0, height = 0, channels = 0, depth = 0;
  const idat: Buffer[] = [];
  while (off < png.length) {
    const len = png.readUInt32BE(off);
    const type = png.toString('latin1', off + 4, off + 8);
    const data = png.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      depth = data[8]!;
      channels = ({ 0: 1, 2: 3, 4: 2, 6: 4 } as Record<number, number>)[data[9]!] ?? 0;
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    off += 12 + len;
  }
  const pixels = inflateSync(Buffer.concat(idat));
  const expected = height * (1 + Math.ceil((width * channels * depth) / 8));
  if (pixels.length !== expected) throw new Error(`PNG image data is ${pixels.length} bytes, expected ${expected}`);
  return { width, height, pixels };
}
