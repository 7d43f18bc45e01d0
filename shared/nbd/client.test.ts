/**
 * The NBD client against real servers: qemu-nbd exporting a raw file and a qcow2 with a persistent
 * dirty bitmap (nbdinfo --map is the referee for block status). Against our own NbdServer:
 * test/agent/qemu-source-nbd.test.ts (shared/ never imports service/).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileP, scratchDir } from '../../test/helpers.js';
import { isLifeboatError } from '../errors.js';
import { NbdClient, type StatusExtent } from './client.js';

const MiB = 1 << 20;
const Size = 8 * MiB;

async function waitForSocket(path: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!existsSync(path)) {
    if (child.exitCode !== null) throw new Error(`${child.spawnfile} exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await new Promise((r) => setTimeout(r, 30));
  }
}

/** nbdinfo --map as extents, coalesced by type (the referee). */
async function nbdinfoMap(uri: string, context?: string): Promise<StatusExtent[]> {
  const { stdout } = await execFileP('nbdinfo', [context ? `--map=${context}` : '--map', '--json', uri]);
  return coalesce((JSON.parse(stdout) as Array<{ offset: number; length: number; type: number }>).map((e) => ({ offset: e.offset, length: e.length, flags: e.type })));
}
function coalesce(list: StatusExtent[]): StatusExtent[] {
  const out: StatusExtent[] = [];
  for (const e of list) {
    const last = out.at(-1);
    if (last && last.flags === e.flags && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ ...e });
  }
  return out;
}
async function ourMap(c: NbdClient, context?: string): Promise<StatusExtent[]> {
  const out: StatusExtent[] = [];
  for await (const e of c.map(context)) out.push(e);
  return out;
}

let dir: Awaited<ReturnType<typeof scratchDir>>;
const servers: ChildProcess[] = [];

function qemuNbd(args: string[], sock: string): Promise<void> {
  const p = spawn('qemu-nbd', ['--read-only', '--persistent', '--shared=8', '--socket', sock, ...args], { stdio: 'ignore' });
  servers.push(p);
  return waitForSocket(sock, p);
}

beforeAll(async () => { dir = await scratchDir('lifeboat-nbdc-'); });
afterAll(async () => {
  for (const p of servers) if (p.exitCode === null) p.kill('SIGTERM');
  await dir.remove();
});

describe('NbdClient against qemu-nbd', () => {
  let raw: string; let rawSock: string; let q: string; let qSock: string;

  beforeAll(async () => {
    raw = join(dir.path, 'd.raw');
    const content = Buffer.alloc(Size);
    for (let i = 0; i < Size; i += 4096) if ((i >> 12) % 7 === 3) content.fill((i >> 12) & 0xff, i, i + 4096);
    await writeFile(raw, content);
    await execFileP('fallocate', ['--punch-hole', '--offset', String(5 * MiB), '--length', String(MiB), raw]);
    rawSock = join(dir.path, 'raw.sock');
    await qemuNbd(['-f', 'raw', '--export-name', 'rawdisk', raw], rawSock);

    q = join(dir.path, 'd.qcow2');
    await execFileP('qemu-img', ['create', '-f', 'qcow2', q, String(Size)]);
    await execFileP('qemu-io', ['-c', 'write -P 0xab 1M 64k', q]);
    await execFileP('qemu-img', ['bitmap', '--add', q, 'b0']);
    await execFileP('qemu-io', ['-c', 'write -P 0xcd 3M 100k', '-c', 'write -P 0xef 6500k 4k', q]);
    qSock = join(dir.path, 'q.sock');
    await qemuNbd(['-f', 'qcow2', '--export-name', 'qdisk', '-B', 'b0', q], qSock);
  });

  it('reads equal the file, with many requests in flight', async () => {
    const c = await NbdClient.connect({ socketPath: rawSock, exportName: 'rawdisk' });
    try {
      expect(c.size).toBe(Size);
      const file = await readFile(raw);
      const ranges = Array.from({ length: 64 }, (_, i) => ({ off: (i * 131_071) % (Size - 70_000), len: 1 + ((i * 7919) % 65_536) }));
      const got = await Promise.all(ranges.map((r) => c.read(r.off, r.len)));
      ranges.forEach((r, i) => expect(got[i]!.equals(file.subarray(r.off, r.off + r.len))).toBe(true));
      expect((await c.read(0, Size)).equals(file)).toBe(true);
    } finally { await c.close(); }
  });

  it('BLOCK_STATUS base:allocation matches nbdinfo --map (raw, with a hole)', async () => {
    const c = await NbdClient.connect({ socketPath: rawSock, exportName: 'rawdisk', metaContexts: ['base:allocation'] });
    try {
      const ours = await ourMap(c);
      expect(ours).toEqual(await nbdinfoMap(`nbd+unix:///rawdisk?socket=${rawSock}`));
      expect(ours.some((e) => e.flags === 3)).toBe(true);
    } finally { await c.close(); }
  });

  it('qcow2: reads equal qemu-img convert; base:allocation and the dirty bitmap match nbdinfo', async () => {
    const flat = join(dir.path, 'q.raw');
    await execFileP('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', q, flat]);
    const ctx = 'qemu:dirty-bitmap:b0';
    const c = await NbdClient.connect({ socketPath: qSock, exportName: 'qdisk', metaContexts: ['base:allocation', ctx] });
    try {
      expect([...c.contexts.keys()].sort()).toEqual(['base:allocation', ctx]);
      expect((await c.read(0, Size)).equals(await readFile(flat))).toBe(true);
      const uri = `nbd+unix:///qdisk?socket=${qSock}`;
      expect(await ourMap(c)).toEqual(await nbdinfoMap(uri));
      const dirty = await ourMap(c, ctx);
      expect(dirty).toEqual(await nbdinfoMap(uri, ctx));
      // The write before the bitmap is not in it; the two after it are, rounded to 64 KiB.
      expect(dirty.filter((e) => e.flags === 1).map((e) => [e.offset, e.length])).toEqual([[3 * MiB, 128 * 1024], [101 * 65536, 65536]]);
    } finally { await c.close(); }
  });

  it('a context the server lacks is not granted; asking for it is one clear error', async () => {
    const c = await NbdClient.connect({ socketPath: qSock, exportName: 'qdisk', metaContexts: ['qemu:dirty-bitmap:nope'] });
    try {
      expect(c.contexts.size).toBe(0);
      await expect(c.blockStatus('qemu:dirty-bitmap:nope', 0, 4096)).rejects.toThrow(/not granted/);
    } finally { await c.close(); }
  });

  it('an unknown export, a missing socket, a range past the end: LifeboatErrors', async () => {
    const e1 = await NbdClient.connect({ socketPath: qSock, exportName: 'other' }).catch((e: unknown) => e);
    expect(isLifeboatError(e1) && e1.code).toBe('not_found');
    const e2 = await NbdClient.connect({ socketPath: join(dir.path, 'none.sock'), exportName: 'x' }).catch((e: unknown) => e);
    expect(isLifeboatError(e2) && e2.message).toMatch(/no such socket/);
    const c = await NbdClient.connect({ socketPath: qSock, exportName: 'qdisk' });
    try {
      await expect(c.read(Size - 10, 20)).rejects.toThrow(/outside the export/);
      expect((await c.read(Size - 10, 10)).length).toBe(10);
    } finally { await c.close(); }
  });

  it('connects over TCP', async () => {
    const port = await new Promise<number>((r) => { const s = createServer(); s.listen(0, '127.0.0.1', () => { const a = s.address(); s.close(() => r(typeof a === 'object' && a ? a.port : 0)); }); });
    const p = spawn('qemu-nbd', ['--read-only', '--persistent', '-b', '127.0.0.1', '-p', String(port), '-f', 'raw', '--export-name', 'tcp', raw], { stdio: 'ignore' });
    servers.push(p);
    let c: NbdClient | undefined;
    for (let i = 0; i < 100 && !c; i++) {
      c = await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'tcp' }).catch(async () => { await new Promise((r) => setTimeout(r, 50)); return undefined; });
    }
    try {
      expect((await c!.read(3 * 4096, 4096)).equals((await readFile(raw)).subarray(3 * 4096, 4 * 4096))).toBe(true);
    } finally { await c?.close(); }
  });
});
