/**
 * The agent's NBD client (shared/nbd/client.ts) against our own NbdServer exporting a VHDX made by
 * shared/disk; nbdinfo --map is the referee for block status.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdServer } from '../../service/failover/nbd/server.js';
import { createDisk, openDisk } from '../../shared/disk/index.js';
import { NbdClient, type StatusExtent } from '../../shared/nbd/client.js';
import { execFileP, scratchDir } from '../helpers.js';

const MiB = 1 << 20;
let dir: Awaited<ReturnType<typeof scratchDir>>;
beforeAll(async () => { dir = await scratchDir('lifeboat-nbdc-ours-'); });
afterAll(async () => { await dir.remove(); });

async function nbdinfoMap(uri: string): Promise<StatusExtent[]> {
  const { stdout } = await execFileP('nbdinfo', ['--map', '--json', uri]);
  const out: StatusExtent[] = [];
  for (const e of JSON.parse(stdout) as Array<{ offset: number; length: number; type: number }>) {
    const last = out.at(-1);
    if (last && last.flags === e.type && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ offset: e.offset, length: e.length, flags: e.type });
  }
  return out;
}
async function ourMap(c: NbdClient): Promise<StatusExtent[]> {
  const out: StatusExtent[] = [];
  for await (const e of c.map()) out.push(e);
  return out;
}

describe('NbdClient against our NbdServer', () => {
  it('reads a VHDX made by shared/disk; base:allocation matches nbdinfo', async () => {
    const path = join(dir.path, 'd.vhdx');
    const d = await createDisk(path, 'vhdx', { virtualSize: 64 * MiB, blockSize: MiB });
    const a = Buffer.alloc(300_000, 0x5a); const b = Buffer.alloc(4096, 0x11);
    await d.write(2 * MiB + 1234, a);
    await d.write(40 * MiB, b);
    await d.close();
    const server = new NbdServer({ resolve: async (name) => (name === 'v' ? { name, size: 64 * MiB, open: () => openDisk(path, { readOnly: true }) } : undefined) });
    const sock = join(dir.path, 'ours.sock');
    await server.listenUnix(sock);
    try {
      const c = await NbdClient.connect({ socketPath: sock, exportName: 'v', metaContexts: ['base:allocation'] });
      try {
        expect((await c.read(2 * MiB + 1234, a.length)).equals(a)).toBe(true);
        expect((await c.read(40 * MiB, 4096)).equals(b)).toBe(true);
        expect((await c.read(10 * MiB, 4096)).equals(Buffer.alloc(4096))).toBe(true);
        expect(await ourMap(c)).toEqual(await nbdinfoMap(`nbd+unix:///v?socket=${sock}`));
      } finally { await c.close(); }
    } finally { await server.close(); }
  });
});
