/**
 * Inputs the fuzz targets found (docs/fuzzing.md, "Findings"), each kept as the exact bytes that
 * failed and checked against what the fixed code does. A finding whose parser has its own test file
 * may live there instead; this file holds those that need the fuzz targets' setup.
 */
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import { rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChildDisk, createDisk, openDisk } from '../../shared/disk/index.js';
import { checksumWithHole, newGuid } from '../../shared/disk/vhdx/format.js';
import { buildEntry, findReplay } from '../../shared/disk/vhdx/log.js';
import { openLayout } from '../../shared/disk/vhdx/open.js';
import { completeHeader, encodeLog, LogReader } from '../../shared/log/index.js';
import { collect, memorySource } from '../../shared/log/testing.js';
import * as P from '../../shared/nbd/protocol.js';
import { NbdServer } from '../../service/failover/nbd/server.js';
import { execFileP } from '../helpers.js';
import { fuzzScratch } from './disk-exercise.js';
import { checkConversation } from './nbd-replies.js';
import { queueCommand } from '../../service/commands/commands.js';
import { enrolledAgent, httpsJson, operator, testEnv, testService, type TestEnv, type TlsIdentity } from '../service/helpers.js';

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

describe('agent endpoint', () => {
  let env: TestEnv;
  let svc: Awaited<ReturnType<typeof testService>>;
  let agent: TlsIdentity;
  const registration = { disks: [{ id: 'disk0', virtualSize: M, format: 'raw' }], frequency: '30s', history: 0, appConsistentEvery: 0, compression: 'zstd' };
  const call = (method: string, path: string, rawBody: string) =>
    httpsJson<{ error?: { code: string; message: string } }>(`${svc.agentUrl}${path}`, { method, rawBody, caPem: svc.ctx.ca.certPem, identity: agent });

  beforeAll(async () => {
    env = await testEnv();
    svc = await testService(env);
    agent = await enrolledAgent(svc, 'acme', '*.acme.test', 'hv01.acme.test');
    expect((await call('PUT', '/v1/vms/web01', JSON.stringify(registration))).status).toBe(201);
  }, 120_000);
  afterAll(async () => {
    await svc?.stop();
    await env?.cleanup();
  });

  it('a NUL character in a string field is a 400 naming the field, not a 500 from PostgreSQL', async () => {
    // Found by test/fuzz/agent-api.fuzz.test.ts: PUT /v1/vms/web01 with displayName "a\u0000b".
    const r = await call('PUT', '/v1/vms/web01', JSON.stringify({ ...registration, displayName: 'a\u0000b' }));
    expect(r.status).toBe(400);
    expect(r.body.error?.message).toBe('body.displayName holds a NUL character or an unpaired surrogate, which no field may');
    const lone = await call('PUT', '/v1/vms/web01', JSON.stringify({ ...registration, displayName: 'a\ud800' }));
    expect(lone.status).toBe(400);
    expect((await call('PUT', '/v1/vms/web01', JSON.stringify({ ...registration, displayName: 'Web 01 \ud83d\udca9' }))).status).toBe(200);
  });

  it('a body over the size limit is answered 413 with Connection: close, so the next request on a kept-alive connection goes through', async () => {
    // Found by test/fuzz/csv.fuzz.test.ts (its HTTP share, through fetch's kept-alive connections):
    // the 413 left the body unread and the server closed the connection without saying so, and the
    // client's next request on it failed with "other side closed".
    for (let i = 0; i < 2; i++) {
      const big = await operator(svc, 'POST', '/v1/tenants/acme/nic-settings/import', { csv: 'x'.repeat(200_000), dryRun: true });
      expect(big.status).toBe(413);
      const next = await operator(svc, 'POST', '/v1/tenants/acme/nic-settings/import', { csv: 'vm,mac\n', dryRun: true });
      expect(next.status).toBe(400);
    }
  });

  it('a command result nested 20,000 deep is a 400, not a 500 from storing it', async () => {
    // Found by test/fuzz/agent-api.fuzz.test.ts: result.cycle replaced by [[[…1…]]] 20,000 deep.
    const cmd = await queueCommand(svc.ctx.db, { tenant: 'acme', vm: 'web01', kind: 'planned-failover', payload: { failover: 'fo-1' } });
    const deep = `${'['.repeat(20_000)}1${']'.repeat(20_000)}`;
    const r = await call('POST', `/v1/commands/${cmd.id}/result`, `{"ok":true,"result":{"cycle":${deep}}}`);
    expect(r.status).toBe(400);
    expect(r.body.error?.message).toMatch(/^body\.result\.cycle(\.0)+ nests deeper than 64 levels$/);
    const ok = await call('POST', `/v1/commands/${cmd.id}/result`, JSON.stringify({ ok: true, result: { cycle: 7, nested: [[[[1]]]] } }));
    expect(ok.status).toBe(200);
  });
});

describe('VHDX log replay', () => {
  it('finds the active sequence of a log of 16,384 one-sector entries in linear time', () => {
    // Found by reviewing the parser for the fuzz work: every sector started a walk along the chain
    // of consecutive entries after it, so a crafted 64 MiB log took 42 s and a 256 MiB one (the most
    // a header may declare) minutes. The bound below is a hang bound, not a timing: fixed, it takes
    // well under a second.
    const guid = '11111111-2222-3333-4444-555555555555';
    const n = 16_384;
    const log = Buffer.alloc(n * 4096);
    for (let i = 0; i < n; i++) buildEntry([], { pos: i * 4096, seq: BigInt(i + 1), logGuid: guid, fileSize: 1 << 30, tail: 0 }).copy(log, i * 4096);
    const started = Date.now();
    const replay = findReplay(log, guid, 1 << 30);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(replay?.headSequence).toBe(BigInt(n));
    expect(replay?.writes).toEqual([]);
  });
});

describe('VHDX parent locator', () => {
  it('a locator naming a FIFO is refused, not opened (the open would block for ever)', async () => {
    // Found by reviewing the parser for the fuzz work: the locator's paths are the file's bytes; a
    // FIFO (or a terminal such as /dev/stdin) there blocked the parent's open with no bound.
    const parent = join(dir.path, 'fifo-parent.vhdx');
    const child = join(dir.path, 'fifo-child.vhdx');
    await (await createDisk(parent, 'vhdx', { virtualSize: M })).close();
    await (await createChildDisk(child, parent)).close();
    await rename(parent, `${parent}.moved`);
    await execFileP('mkfifo', [parent]);
    let timer: NodeJS.Timeout | undefined;
    const hang = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('the open did not return within 20 s')), 20_000); });
    try {
      await expect(Promise.race([openDisk(child, { readOnly: true }), hang])).rejects.toMatchObject({ code: 'not_found', message: expect.stringMatching(/fifo-parent\.vhdx \(not a file\)/) });
    } finally {
      clearTimeout(timer);
    }
  });
});

describe('VHDX log replay, writable', () => {
  it('a zero descriptor past the end of the file writes no zeros: the extension reads as zeros', async () => {
    // Found by reviewing the parser for the fuzz work: LastFileOffset may lie up to 64 GiB past the
    // file, and a zero descriptor up to there was written out as zeros (disk filled, minutes spent).
    const path = join(dir.path, 'zero-log.vhdx');
    await (await createDisk(path, 'vhdx', { virtualSize: 4 * M })).close();
    const l = await openLayout(path, false);
    const size = l.file.size;
    const logGuid = newGuid();
    const entry = buildEntry([], { pos: 0, seq: 1n, logGuid, fileSize: size, zeros: [{ at: size + 1024 * M, length: 2048 * M }] });
    entry.writeBigUInt64LE(BigInt(size + 3072 * M), 56); // LastFileOffset: the file grows to 3 GiB past its end
    entry.writeUInt32LE(checksumWithHole(entry, 4), 4);
    await l.headers.update(l.file, { logGuid });
    await l.file.write(entry, l.headers.current.logOffset);
    await l.file.close();

    const disk = await openDisk(path);
    await disk.close();
    const st = await stat(path);
    expect(st.size).toBe(size + 3072 * M); // extended as the log says…
    expect(st.blocks * 512).toBeLessThan(64 * M); // …without 2 GiB of zeros written
  });
});

describe('.hrl reader memory', () => {
  it('readers share the thread\'s zstd context instead of each making one the garbage collector does not see', async () => {
    // Found by test/fuzz/hrl.fuzz.test.ts (the watchdog stopped it at 1.6 GB of RSS): each reader made
    // a zstd DCtx, native memory freed only when a collection ran, which thousands of small logs read
    // one after another did not cause; RSS grew ~25 KB per log without bound.
    const binding = createRequire(import.meta.url)('zstd-napi/binding.js') as { DCtx: new () => object };
    const Original = binding.DCtx;
    let made = 0;
    binding.DCtx = class Counted extends (Original as new () => object) {
      constructor() {
        super();
        made++;
      }
    };
    try {
      const disk = Buffer.alloc(M, 7);
      const log = await collect(encodeLog(completeHeader({ tenant: 't', vm: 'v', disk: 'd', generation: 1, sequence: 1, virtualSize: M, chunkSize: 64 * 1024, compression: 'zstd' }),
        memorySource(disk, [{ offset: 0, length: M, kind: 'data' }])));
      for (let i = 0; i < 50; i++) {
        const reader = await LogReader.open([log]);
        for await (const _ of reader.items()) { /* read it all */ }
        expect(reader.trailer).toBeDefined();
      }
      expect(made).toBeLessThanOrEqual(1);
    } finally {
      binding.DCtx = Original;
    }
  });
});

describe('byte reader', () => {
  it('a log arriving a byte at a time is read in time linear in its pieces', async () => {
    // Found by test/fuzz/hrl.fuzz.test.ts (an input fed in 1-byte pieces took 4 s): each consumed piece
    // was shifted off the front of the buffered array, moving all the others, so a 256 KiB stored chunk
    // of 1-byte pieces took minutes. The bound is a hang bound, not a timing: fixed, it takes about a second.
    const size = 512 * 1024;
    const log = await collect(encodeLog(completeHeader({ tenant: 't', vm: 'v', disk: 'd', generation: 1, sequence: 1, virtualSize: size, chunkSize: 256 * 1024, compression: 'none' }),
      memorySource(Buffer.alloc(size, 3), [{ offset: 0, length: size, kind: 'data' }])));
    const pieces: Buffer[] = [];
    for (let at = 0; at < log.length; at++) pieces.push(log.subarray(at, at + 1));
    const started = Date.now();
    const reader = await LogReader.open(pieces);
    let bytes = 0;
    for await (const item of reader.items()) bytes += item.length;
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(bytes).toBe(size);
    expect(reader.trailer).toBeDefined();
  });
});
