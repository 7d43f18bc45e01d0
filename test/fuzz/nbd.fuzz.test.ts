/**
 * Fuzz target: the NBD server (service/failover/nbd/) on a unix socket, serving a small VHDX made by
 * qemu-img. Each input is one connection: client flags, a handful of options (GO and INFO with known
 * and unknown names and info requests, meta contexts, structured replies, export name, abort, LIST,
 * STARTTLS, unknown ones, with declared lengths that lie), then requests of every command with
 * offsets, lengths and flags around the limits, WRITE payloads included; a few byte mutations on top,
 * sent in pieces, then the client hangs up. The server must answer per protocol (nbd-replies.ts is
 * the referee), close the connection within the time bound, keep no connection open afterwards, and
 * stay up: a well-behaved client reads the export at the end.
 */
import { connect } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDisk } from '../../shared/disk/index.js';
import * as P from '../../shared/nbd/protocol.js';
import { NbdServer } from '../../service/failover/nbd/server.js';
import { execFileP, referee, until } from '../helpers.js';
import { fuzzScratch } from './disk-exercise.js';
import { fuzz, keepFinding, testTimeout, untracked } from './harness.js';
import { applyMutations, mutationsArb, type Mutation } from './mutate.js';
import { checkConversation } from './nbd-replies.js';

const M = 2 ** 20;
const Size = 4 * M;
const Name = 'acme.web01.disk0.point3.failover9';

let dir: Awaited<ReturnType<typeof fuzzScratch>>;
let server: NbdServer;
let sock: string;

beforeAll(async () => {
  dir = await fuzzScratch('lifeboat-fuzz-nbd-');
  const image = join(dir.path, 'export.vhdx');
  await referee('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', image, String(Size)]);
  await referee('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x42 0 1536k', '-c', 'write -P 0x43 3M 4k', image]);
  server = new NbdServer({
    resolve: async (name) => (name === Name ? { name, size: Size, description: 'fuzz', open: () => openDisk(image, { readOnly: true }) } : undefined),
  });
  sock = join(dir.path, 'nbd.sock');
  await server.listenUnix(sock);
}, 60_000);

afterAll(async () => {
  await server?.close();
  await dir?.remove();
});

// ---- what a client says ----

const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; };
const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(n & 0xffff); return b; };
const str = (s: string) => { const b = Buffer.from(s, 'utf8'); return Buffer.concat([u32(b.length), b]); };

const name = fc.oneof({ weight: 4, arbitrary: fc.constant(Name) }, fc.constantFrom('', 'other', `${Name}x`, Name.toUpperCase()), fc.string({ maxLength: 80 }));
const option = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constantFrom('go' as const, 'info' as const), name, infos: fc.array(fc.oneof(fc.constantFrom(0, 1, 2, 3), fc.nat({ max: 0xffff })), { maxLength: 4 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constantFrom('list-meta' as const, 'set-meta' as const), name, queries: fc.array(fc.oneof(fc.constantFrom('base:allocation', 'base:', 'qemu:dirty-bitmap:a', ''), fc.string({ maxLength: 30 })), { maxLength: 3 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('structured' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('export-name' as const), name }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('raw' as const), option: fc.oneof(fc.constantFrom(P.NBD_OPT_ABORT, P.NBD_OPT_LIST, P.NBD_OPT_PEEK_EXPORT, P.NBD_OPT_STARTTLS, P.NBD_OPT_EXTENDED_HEADERS, 0, 12), fc.nat()), data: fc.uint8Array({ maxLength: 40 }) }) },
);
type Option = typeof option extends fc.Arbitrary<infer T> ? T : never;
/** A declared length other than the data's: none mostly; huge, off by one, zero sometimes. */
const lie = fc.option(fc.constantFrom(0, 1, 5, 65536, 65537, 0x7fffffff, 0xffffffff, -1, 1), { freq: 6, nil: undefined });

function encodeOption(o: Option, lieLength: number | undefined): Buffer {
  let code: number;
  let data: Buffer;
  switch (o.kind) {
    case 'go': case 'info':
      code = o.kind === 'go' ? P.NBD_OPT_GO : P.NBD_OPT_INFO;
      data = Buffer.concat([str(o.name), u16(o.infos.length), ...o.infos.map(u16)]);
      break;
    case 'list-meta': case 'set-meta':
      code = o.kind === 'set-meta' ? P.NBD_OPT_SET_META_CONTEXT : P.NBD_OPT_LIST_META_CONTEXT;
      data = Buffer.concat([str(o.name), u32(o.queries.length), ...o.queries.map(str)]);
      break;
    case 'structured': code = P.NBD_OPT_STRUCTURED_REPLY; data = Buffer.alloc(0); break;
    case 'export-name': code = P.NBD_OPT_EXPORT_NAME; data = Buffer.from(o.name, 'utf8'); break;
    case 'raw': code = o.option; data = Buffer.from(o.data); break;
  }
  const length = lieLength === undefined ? data.length : lieLength === -1 ? data.length + 1 : lieLength;
  const head = Buffer.alloc(P.OptionHeaderBytes);
  head.writeBigUInt64BE(P.IHAVEOPT, 0);
  head.writeUInt32BE(code, 8);
  head.writeUInt32BE(length >>> 0, 12);
  return Buffer.concat([head, data]);
}

const offset = fc.oneof(fc.constantFrom(0, 512, Size - 1, Size, Size + 1, 2 ** 32, 2 ** 53, Number.MAX_SAFE_INTEGER), fc.nat({ max: Size }));
const length = fc.oneof(fc.constantFrom(0, 1, 512, 4096, M, 2 * M, 2 * M + 1, 32 * M, 32 * M + 1, 0xffffffff), fc.nat({ max: Size }));
const request = fc.record({
  type: fc.oneof({ weight: 5, arbitrary: fc.constantFrom(P.NBD_CMD_READ, P.NBD_CMD_READ, P.NBD_CMD_BLOCK_STATUS, P.NBD_CMD_WRITE, P.NBD_CMD_FLUSH, P.NBD_CMD_TRIM, P.NBD_CMD_CACHE, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_DISC) }, fc.nat({ max: 0xffff })),
  flags: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, fc.constantFrom(P.NBD_CMD_FLAG_FUA, P.NBD_CMD_FLAG_DF, P.NBD_CMD_FLAG_REQ_ONE, P.NBD_CMD_FLAG_NO_HOLE, 0xffff)),
  offset, length,
  payload: fc.nat({ max: 70_000 }),
});
type Request = typeof request extends fc.Arbitrary<infer T> ? T : never;

function encodeRequests(reqs: Request[]): Buffer {
  return Buffer.concat(reqs.flatMap((r, i) => {
    const head = Buffer.alloc(P.RequestBytes);
    head.writeUInt32BE(P.NBD_REQUEST_MAGIC, 0);
    head.writeUInt16BE(r.flags, 4);
    head.writeUInt16BE(r.type, 6);
    head.writeBigUInt64BE(BigInt(i + 1), 8);
    head.writeBigUInt64BE(BigInt(Math.min(r.offset, Number.MAX_SAFE_INTEGER)), 16);
    head.writeUInt32BE(r.length >>> 0, 24);
    return r.type === P.NBD_CMD_WRITE ? [head, Buffer.alloc(Math.min(r.payload, r.length), 0x77)] : [head];
  }));
}

const conversation = fc.record({
  flags: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES, P.NBD_FLAG_C_FIXED_NEWSTYLE) }, fc.nat()),
  options: fc.array(fc.tuple(option, lie), { maxLength: 5 }),
  /** Most conversations end the handshake with a GO for the export, to reach transmission. */
  go: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, fc.constant(false)),
  requests: fc.array(request, { maxLength: 10 }),
});
type Conversation = typeof conversation extends fc.Arbitrary<infer T> ? T : never;

function encodeConversation(c: Conversation): Buffer {
  const parts = [u32(c.flags), ...c.options.map(([o, l]) => encodeOption(o, l))];
  if (c.go) parts.push(encodeOption({ kind: 'go', name: Name, infos: [] }, undefined));
  parts.push(encodeRequests(c.requests));
  return Buffer.concat(parts);
}

/** Sends bytes in pieces, hangs up, and returns everything the server said until it closed. */
function talk(bytes: Buffer, pieces: number[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect(sock);
    const got: Buffer[] = [];
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('the server did not close the connection after the client hung up')); }, 15_000);
    socket.on('data', (d: Buffer) => got.push(d));
    socket.on('error', () => undefined); // a reset after the server closed is fine
    socket.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(got)); });
    socket.on('connect', () => {
      let at = 0;
      for (let i = 0; at < bytes.length; i++) {
        const n = pieces.length === 0 ? bytes.length : pieces[i % pieces.length]!;
        socket.write(bytes.subarray(at, at + n));
        at += n;
      }
      socket.end();
    });
  });
}

describe('NBD server under hostile clients', () => {
  it('answers per protocol or closes, leaves no connection open, and stays up', async () => {
    const mutate = fc.option(mutationsArb([{ name: 'stream', from: 0, length: 4096 }], 4096, false, [Size], 2), { freq: 3, nil: undefined });
    const pieces = fc.array(fc.integer({ min: 1, max: 300 }), { maxLength: 3 });
    let transmissions = 0;
    await fuzz<[Conversation, Mutation[] | undefined, number[]]>('nbd', 'connection', [conversation, mutate, pieces], async (c, muts, cut) => {
      const bytes = untracked(() => {
        const plain = encodeConversation(c);
        return muts ? applyMutations(plain, muts, [{ name: 'stream', from: 0, length: plain.length }]) : plain;
      });
      const got = await talk(bytes, cut);
      try {
        if (checkConversation(bytes, got, Size) === 'transmission') transmissions++;
      } catch (err) {
        // The exact bytes both ways, for a regression test.
        throw new Error(`${(err as Error).message} (sent ${keepFinding('nbd-sent', bytes)}, got ${keepFinding('nbd-got', got)})`, { cause: err });
      }
      await until(() => server.stats().connectionsOpen === 0, 'the server to drop the closed connection', 10_000);
    }, { maxAllocation: 33 * M, describe: (c, muts) => untracked(() => { const plain = encodeConversation(c); return muts ? applyMutations(plain, muts, [{ name: 'stream', from: 0, length: plain.length }]) : plain; }) });
    // The generator reaches transmission most of the time, or the requests were never tried.
    expect(transmissions).toBeGreaterThan(0);
    // Still serving: qemu-img reads the export as before.
    const out = await execFileP('qemu-img', ['info', '--output=json', `nbd+unix:///${Name}?socket=${sock}`]);
    expect((JSON.parse(out.stdout) as { 'virtual-size': number })['virtual-size']).toBe(Size);
  }, testTimeout());
});
