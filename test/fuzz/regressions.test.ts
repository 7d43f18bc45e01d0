/**
 * Inputs the fuzz targets found (docs/fuzzing.md, "Findings"), each kept as the exact bytes that
 * failed and checked against what the fixed code does. A finding whose parser has its own test file
 * may live there instead; this file holds those that need the fuzz targets' setup.
 */
import { connect } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDisk } from '../../shared/disk/index.js';
import * as P from '../../shared/nbd/protocol.js';
import { NbdServer } from '../../service/failover/nbd/server.js';
import { fuzzScratch } from './disk-exercise.js';
import { checkConversation } from './nbd-replies.js';

const M = 2 ** 20;

let dir: Awaited<ReturnType<typeof fuzzScratch>>;
beforeAll(async () => { dir = await fuzzScratch('lifeboat-fuzz-regress-'); });
afterAll(async () => { await dir?.remove(); });

/** Sends bytes, hangs up, returns all the server said until it closed. */
function talk(sock: string, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect(sock);
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(got)));
    s.on('connect', () => s.end(bytes));
  });
}

describe('NBD server', () => {
  let server: NbdServer;
  let sock: string;
  const Size = 4 * M;
  const Name = 'export';

  beforeAll(async () => {
    const image = join(dir.path, 'disk.raw');
    await writeFile(image, Buffer.alloc(Size, 0x42));
    server = new NbdServer({ resolve: async (name) => (name === Name ? { name, size: Size, open: () => openDisk(image, { readOnly: true }) } : undefined) });
    sock = join(dir.path, 'nbd.sock');
    await server.listenUnix(sock);
  });
  afterAll(async () => { await server?.close(); });

  const go = () => {
    const name = Buffer.from(Name);
    const data = Buffer.alloc(4 + name.length + 2);
    data.writeUInt32BE(name.length, 0);
    name.copy(data, 4);
    return Buffer.concat([Buffer.from([0, 0, 0, 3]), P.encodeOption(P.NBD_OPT_GO, data)]);
  };

  it('a READ in flight when a WRITE too large to skip ends the connection is answered whole, and so is the WRITE', async () => {
    // Found by test/fuzz/nbd.fuzz.test.ts: the connection was destroyed with the READ's reply half
    // written (the client saw 219,248 of its 219,249 bytes) and the WRITE's EPERM possibly lost.
    const bytes = Buffer.concat([
      go(),
      P.encodeRequest({ flags: 0, type: P.NBD_CMD_READ, cookie: 1n, offset: 0, length: 2 * M }),
      P.encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, cookie: 2n, offset: 0, length: 32 * M + 1 }),
    ]);
    const got = await talk(sock, bytes);
    expect(checkConversation(bytes, got, Size)).toBe('transmission');
    // Both replies arrive whole: the READ's with its 2 MiB, the WRITE's EPERM.
    const read = got.indexOf(P.encodeSimpleReply({ error: 0, cookie: 1n }));
    expect(read).toBeGreaterThan(0);
    expect(got.subarray(read + P.SimpleReplyBytes, read + P.SimpleReplyBytes + 2 * M).equals(Buffer.alloc(2 * M, 0x42))).toBe(true);
    expect(got.indexOf(P.encodeSimpleReply({ error: P.NBD_EPERM, cookie: 2n }))).toBeGreaterThan(0);
  });
});

