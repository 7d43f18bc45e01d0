/**
 * The NBD messages: byte layouts checked against the spec's examples, encode/decode round trips in
 * both directions, and decoders fed random bytes (they return or throw NbdProtocolError, nothing else).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as P from './protocol.js';

describe('NBD wire layouts', () => {
  it('greeting: NBDMAGIC, IHAVEOPT, handshake flags', () => {
    const g = P.encodeGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES);
    expect(g.toString('hex')).toBe('4e42444d41474943' + '49484156454f5054' + '0003');
    expect(P.decodeGreeting(g)).toEqual({ handshakeFlags: 3 });
    expect(() => P.decodeGreeting(Buffer.alloc(18))).toThrow(P.NbdProtocolError);
  });

  it('request: magic 0x25609513, flags, type, cookie, offset, length', () => {
    const req = { flags: P.NBD_CMD_FLAG_FUA, type: P.NBD_CMD_READ, cookie: 0x0102030405060708n, offset: 2 ** 40 + 512, length: 4096 };
    const b = P.encodeRequest(req);
    expect(b.toString('hex')).toBe('25609513' + '0001' + '0000' + '0102030405060708' + '0000010000000200' + '00001000');
    expect(P.decodeRequest(b)).toEqual(req);
  });

  it('an offset above 2^53 decodes as Infinity, beyond any export', () => {
    const b = P.encodeRequest({ flags: 0, type: 0, cookie: 1n, offset: 0, length: 1 });
    b.writeUInt32BE(0xffffffff, 16);
    expect(P.decodeRequest(b).offset).toBe(Infinity);
  });

  it('simple and structured reply headers', () => {
    const s = P.encodeSimpleReply({ error: P.NBD_EPERM, cookie: 7n });
    expect(s.toString('hex')).toBe('67446698' + '00000001' + '0000000000000007');
    expect(P.decodeSimpleReply(s)).toEqual({ error: 1, cookie: 7n });
    const c = P.encodeChunkHeader({ flags: P.NBD_REPLY_FLAG_DONE, type: P.NBD_REPLY_TYPE_OFFSET_HOLE, cookie: 9n, length: 12 });
    expect(c.toString('hex')).toBe('668e33ef' + '0001' + '0002' + '0000000000000009' + '0000000c');
    expect(P.replyKind(c.readUInt32BE(0))).toBe('structured');
    expect(P.replyKind(s.readUInt32BE(0))).toBe('simple');
  });

  it('option and option reply headers', () => {
    const o = P.encodeOption(P.NBD_OPT_GO, P.encodeInfoRequest({ name: 'disk', requests: [P.NBD_INFO_BLOCK_SIZE] }));
    expect(o.subarray(0, 16).toString('hex')).toBe('49484156454f5054' + '00000007' + '0000000c');
    expect(P.decodeOptionHeader(o)).toEqual({ option: 7, length: 12 });
    expect(P.decodeInfoRequest(o.subarray(16))).toEqual({ name: 'disk', requests: [3] });
    const r = P.encodeOptionError(P.NBD_OPT_GO, P.NBD_REP_ERR_UNKNOWN, 'no');
    expect(r.subarray(0, 20).toString('hex')).toBe('0003e889045565a9' + '00000007' + '80000006' + '00000002');
    expect(P.decodeOptionReplyHeader(r)).toEqual({ option: 7, type: 0x80000006, length: 2 });
    expect(P.isOptionError(0x80000006)).toBe(true);
  });

  it('export name reply: 124 zeros unless NO_ZEROES', () => {
    expect(P.encodeExportNameReply(1 << 20, 3, false)).toHaveLength(134);
    const b = P.encodeExportNameReply(1 << 20, 3, true);
    expect(b.toString('hex')).toBe('0000000000100000' + '0003');
    expect(P.decodeExportNameReply(b)).toEqual({ size: 1 << 20, transmissionFlags: 3 });
  });

  it('constants as the spec numbers them', () => {
    expect([P.NBD_REP_ERR_UNSUP, P.NBD_REP_ERR_POLICY, P.NBD_REP_ERR_INVALID, P.NBD_REP_ERR_TLS_REQD, P.NBD_REP_ERR_UNKNOWN])
      .toEqual([2 ** 31 + 1, 2 ** 31 + 2, 2 ** 31 + 3, 2 ** 31 + 5, 2 ** 31 + 6]);
    expect([P.NBD_REPLY_TYPE_ERROR, P.NBD_REPLY_TYPE_ERROR_OFFSET, P.NBD_REPLY_TYPE_BLOCK_STATUS]).toEqual([32769, 32770, 5]);
    expect([P.NBD_EPERM, P.NBD_EIO, P.NBD_EINVAL, P.NBD_ENOSPC, P.NBD_EOVERFLOW, P.NBD_ENOTSUP, P.NBD_ESHUTDOWN]).toEqual([1, 5, 22, 28, 75, 95, 108]);
    expect([P.NBD_FLAG_READ_ONLY, P.NBD_FLAG_SEND_DF, P.NBD_FLAG_CAN_MULTI_CONN]).toEqual([2, 128, 256]);
    expect([P.NBD_CMD_FLAG_DF, P.NBD_CMD_FLAG_REQ_ONE]).toEqual([4, 8]);
  });
});

describe('round trips', () => {
  const name = fc.string({ maxLength: 64 }).filter((s) => !s.includes('\0') && !s.includes('\uFFFD'));
  const u32 = fc.integer({ min: 0, max: 0xffffffff });
  const offset = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });

  it('requests', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), offset, u32,
      (flags, type, cookie, off, length) => {
        const req = { flags, type, cookie, offset: off, length };
        expect(P.decodeRequest(P.encodeRequest(req))).toEqual(req);
      }));
  });

  it('info, meta context and server replies', () => {
    fc.assert(fc.property(name, fc.array(name, { maxLength: 5 }), offset, fc.integer({ min: 0, max: 0xffff }), u32, (n, queries, size, flags, id) => {
      expect(P.decodeMetaContextRequest(P.encodeMetaContextRequest({ name: n, queries }))).toEqual({ name: n, queries });
      expect(P.decodeMetaContext(P.encodeMetaContext(id, n))).toEqual({ id, name: n });
      expect(P.decodeServer(P.encodeServer(n, queries.join(',')))).toEqual({ name: n, description: queries.join(',') });
      expect(P.decodeInfo(P.encodeInfo({ type: P.NBD_INFO_EXPORT, size, transmissionFlags: flags }))).toEqual({ type: 0, size, transmissionFlags: flags });
      expect(P.decodeInfo(P.encodeInfo({ type: P.NBD_INFO_NAME, name: n }))).toEqual({ type: 1, name: n });
      expect(P.decodeInfo(P.encodeInfo({ type: P.NBD_INFO_DESCRIPTION, description: n }))).toEqual({ type: 2, description: n });
      expect(P.decodeInfo(P.encodeInfo({ type: P.NBD_INFO_BLOCK_SIZE, minimum: 1, preferred: 4096, maximum: id }))).toEqual({ type: 3, minimum: 1, preferred: 4096, maximum: id });
    }));
  });

  it('structured chunks', () => {
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), offset, fc.integer({ min: 1, max: 0xffffffff }), fc.array(fc.record({ length: fc.integer({ min: 1, max: 0xffffffff }), flags: u32 }), { minLength: 1, maxLength: 8 }), name,
      (cookie, off, size, descriptors, message) => {
        const payloadOf = (b: Buffer) => {
          const h = P.decodeChunkHeader(b);
          expect(h.cookie).toBe(cookie);
          return P.decodeChunkPayload(h.type, b.subarray(P.StructuredReplyBytes, P.StructuredReplyBytes + h.length));
        };
        expect(payloadOf(P.encodeOffsetHole(cookie, 0, off, size))).toEqual({ type: 2, offset: off, size });
        expect(payloadOf(P.encodeBlockStatus(cookie, 1, 1, descriptors))).toEqual({ type: 5, contextId: 1, descriptors });
        expect(payloadOf(P.encodeErrorChunk(cookie, 1, 22, message))).toEqual({ type: 'error', code: P.NBD_REPLY_TYPE_ERROR, error: 22, message, offset: undefined });
        expect(payloadOf(P.encodeErrorChunk(cookie, 1, 5, message, off))).toEqual({ type: 'error', code: P.NBD_REPLY_TYPE_ERROR_OFFSET, error: 5, message, offset: off });
        expect(payloadOf(P.encodeDoneChunk(cookie))).toEqual({ type: 0 });
        const data = Buffer.from([1, 2, 3]);
        const chunk = Buffer.concat([P.encodeOffsetDataHeader(cookie, 1, off, data.length), data]);
        expect(payloadOf(chunk)).toEqual({ type: 1, offset: off, data });
      }));
  });
});

describe('decoders on random bytes', () => {
  const decoders: Array<[string, (b: Buffer) => unknown]> = [
    ['info request', P.decodeInfoRequest],
    ['meta context request', P.decodeMetaContextRequest],
    ['info', P.decodeInfo],
    ['server', P.decodeServer],
    ['meta context', P.decodeMetaContext],
    ['request', P.decodeRequest],
    ['chunk header', P.decodeChunkHeader],
    ['chunk payload', (b) => P.decodeChunkPayload(b.length > 0 ? b[0]! | (b[0]! & 0x80 ? 0x8000 : 0) : 0, b.subarray(1))],
  ];
  for (const [what, decode] of decoders) {
    it(`${what}: a value or NbdProtocolError`, () => {
      fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
        try {
          decode(Buffer.from(bytes));
        } catch (err) {
          expect(err).toBeInstanceOf(P.NbdProtocolError);
        }
      }), { numRuns: 2000 });
    });
  }
});
