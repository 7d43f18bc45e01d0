/**
 * The transmission phase, server side (docs/formats/nbd.md "Transmission"): requests are read in
 * order and served concurrently (up to MaxInFlight), each reply written as soon as its data is read.
 * A reply is written in one synchronous run of socket writes, so replies never interleave mid-message.
 *
 * READ: structured replies send OFFSET_HOLE for what the chain does not hold (nothing streams a
 * hole's zeros) and OFFSET_DATA from reused slabs; simple replies send the bytes. BLOCK_STATUS
 * answers base:allocation from DiskImage.extents. WRITE, TRIM and WRITE_ZEROES get EPERM (read-only
 * export); out of range or oversized requests get EINVAL; unknown commands and flags get EINVAL.
 * Failure: malformed bytes (bad magic) or a WRITE too large to skip end the connection; a read error
 * of the image is an EIO reply. Returns when the client disconnects (NBD_CMD_DISC or gone) and every
 * reply in flight has been written.
 */
import type { Duplex } from 'node:stream';
import * as P from '../../../shared/nbd/protocol.js';
import type { Extent } from '../../../shared/disk/types.js';
import { ByteBudget, giveSlab, SlabBytes, takeSlab } from './buffers.js';
import { ConnectionEnded, type ByteReader } from './byte-reader.js';
import { ConnectionBufferBytes, MaxDescriptors, MaxInFlight, MaxPayloadBytes, type NbdStats, type Session } from './types.js';

/** A request refused with an NBD error value and a message for the human at the client. */
class Refusal extends Error {
  constructor(readonly errno: number, message: string) { super(message); }
}

export interface TransmissionContext {
  stats: NbdStats;
  onError(err: unknown, what: string): void;
}

export async function transmission(session: Session, socket: Duplex, reader: ByteReader, ctx: TransmissionContext): Promise<void> {
  const budget = new ByteBudget(ConnectionBufferBytes);
  const inFlight = new Set<Promise<void>>();
  let slotFree: (() => void) | undefined;
  const serve = async (req: P.Request): Promise<void> => {
    try {
      await handle(session, socket, budget, req, ctx.stats);
    } catch (err) {
      if (err instanceof Refusal) replyError(session, socket, req.cookie, err.errno, err.message);
      else {
        ctx.onError(err, `request ${req.type} at ${req.offset}+${req.length}`);
        replyError(session, socket, req.cookie, P.NBD_EIO, 'the export could not be read');
      }
    }
  };

  try {
    for (;;) {
      while (inFlight.size >= MaxInFlight) await new Promise<void>((r) => { slotFree = r; });
      const req = P.decodeRequest(await reader.read(P.RequestBytes));
      ctx.stats.requests++;
      if (req.type === P.NBD_CMD_DISC) break;
      if (req.type === P.NBD_CMD_WRITE) {
        // The data is on the wire: read past it to keep the stream in step, then refuse.
        if (req.length > MaxPayloadBytes) {
          replyError(session, socket, req.cookie, P.NBD_EPERM, 'the export is read-only');
          throw new P.NbdProtocolError(`WRITE of ${req.length} bytes is larger than ${MaxPayloadBytes}`);
        }
        await reader.skip(req.length);
      }
      const p = serve(req).finally(() => {
        inFlight.delete(p);
        slotFree?.();
        slotFree = undefined;
      });
      inFlight.add(p);
    }
  } catch (err) {
    if (!(err instanceof ConnectionEnded)) throw err;
  } finally {
    await Promise.all(inFlight);
  }
}

async function handle(session: Session, socket: Duplex, budget: ByteBudget, req: P.Request, stats: NbdStats): Promise<void> {
  const size = session.exp.exp.size;
  const inRange = () => {
    if (req.offset + req.length > size) throw new Refusal(P.NBD_EINVAL, `${req.offset}+${req.length} is beyond the export's ${size} bytes`);
  };
  const allowFlags = (allowed: number) => {
    if ((req.flags & ~allowed) !== 0) throw new Refusal(P.NBD_EINVAL, `flags 0x${req.flags.toString(16)} are not valid here`);
  };
  switch (req.type) {
    case P.NBD_CMD_READ:
      allowFlags(P.NBD_CMD_FLAG_FUA | (session.structured ? P.NBD_CMD_FLAG_DF : 0));
      if (req.length > MaxPayloadBytes) throw new Refusal(P.NBD_EINVAL, `READ of ${req.length} bytes is larger than ${MaxPayloadBytes}`);
      inRange();
      return read(session, socket, budget, req, stats);
    case P.NBD_CMD_WRITE:
    case P.NBD_CMD_TRIM:
    case P.NBD_CMD_WRITE_ZEROES:
      throw new Refusal(P.NBD_EPERM, 'the export is read-only');
    case P.NBD_CMD_FLUSH:
      allowFlags(P.NBD_CMD_FLAG_FUA);
      return replyOk(session, socket, req.cookie); // nothing is ever written
    case P.NBD_CMD_BLOCK_STATUS:
      allowFlags(P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_REQ_ONE);
      if (session.allocationContext === undefined) throw new Refusal(P.NBD_EINVAL, 'no metadata context was selected');
      if (req.length === 0) throw new Refusal(P.NBD_EINVAL, 'BLOCK_STATUS of 0 bytes');
      inRange();
      return blockStatus(session, socket, req);
    default:
      throw new Refusal(P.NBD_EINVAL, `unknown command ${req.type}`);
  }
}

/** The chain's data extents over [offset, offset+length), clipped; the rest reads as zeros. */
async function dataExtents(session: Session, offset: number, length: number): Promise<Extent[]> {
  const out: Extent[] = [];
  if (length === 0) return out;
  for await (const x of session.exp.image.extents({ layer: 'chain', offset, length })) {
    if (x.kind !== 'data') continue;
    const s = Math.max(x.offset, offset);
    const e = Math.min(x.offset + x.length, offset + length);
    if (e > s) out.push({ offset: s, length: e - s, kind: 'data' });
  }
  return out;
}

/** A run of the reply: a hole, or data read into part of a slab. */
interface Piece { offset: number; length: number; data: Buffer | undefined; slab: Slab | undefined }
/** A slab shared by the pieces packed into it; back to the pool when the last one is written. */
interface Slab { buf: Buffer; pieces: number }

/**
 * Splits [offset, offset+length) into holes (when shown) and data pieces packed one after another
 * into as few slabs as hold them, so a fragmented range costs its data bytes, not a slab per piece.
 */
async function plan(session: Session, offset: number, length: number, showHoles: boolean): Promise<{ pieces: Piece[]; slabs: Slab[] }> {
  const data = showHoles ? await dataExtents(session, offset, length) : [{ offset, length }];
  const pieces: Piece[] = [];
  const slabs: Slab[] = [];
  let slab: Slab | undefined;
  let used = SlabBytes;
  let at = offset;
  const hole = (s: number, e: number) => { if (e > s) pieces.push({ offset: s, length: e - s, data: undefined, slab: undefined }); };
  for (const x of data) {
    hole(at, x.offset);
    for (let p = x.offset; p < x.offset + x.length;) {
      if (used === SlabBytes) {
        slab = { buf: takeSlab(), pieces: 0 };
        slabs.push(slab);
        used = 0;
      }
      const n = Math.min(SlabBytes - used, x.offset + x.length - p);
      slab!.pieces++;
      pieces.push({ offset: p, length: n, data: slab!.buf.subarray(used, used + n), slab });
      used += n;
      p += n;
    }
    at = x.offset + x.length;
  }
  hole(at, offset + length);
  return { pieces, slabs };
}

async function read(session: Session, socket: Duplex, budget: ByteBudget, req: P.Request, stats: NbdStats): Promise<void> {
  const { image } = session.exp;
  const df = (req.flags & P.NBD_CMD_FLAG_DF) !== 0;
  // Holes are shown only in structured replies that may be fragmented.
  const showHoles = session.structured && !df;
  // The budget is reserved for the worst case before any slab is taken, then trimmed to what was.
  const worst = Math.ceil(req.length / SlabBytes) * SlabBytes;
  await budget.acquire(worst);
  let pieces: Piece[];
  let slabs: Slab[] = [];
  try {
    ({ pieces, slabs } = await plan(session, req.offset, req.length, showHoles));
    budget.release(worst - slabs.length * SlabBytes);
    await Promise.all(pieces.map((p) => p.data && image.read(p.offset, p.data)));
  } catch (err) {
    for (const s of slabs) giveSlab(s.buf);
    budget.release(slabs.length > 0 ? slabs.length * SlabBytes : worst);
    throw err;
  }
  // Everything is read: write the whole reply in one synchronous run, so nothing interleaves with it.
  const written = (slab: Slab) => () => {
    if (--slab.pieces > 0) return;
    giveSlab(slab.buf);
    budget.release(SlabBytes);
  };
  const sendData = (p: Piece) => {
    socket.write(p.data!, written(p.slab!));
    stats.bytesRead += p.length;
  };
  socket.cork();
  if (!session.structured) {
    socket.write(P.encodeSimpleReply({ error: 0, cookie: req.cookie }, Buffer.allocUnsafe(P.SimpleReplyBytes)));
    pieces.forEach(sendData);
  } else if (df || pieces.length === 0) {
    if (req.length > 0) socket.write(P.encodeOffsetDataHeader(req.cookie, P.NBD_REPLY_FLAG_DONE, req.offset, req.length, Buffer.allocUnsafe(P.OffsetDataHeaderBytes)));
    else socket.write(P.encodeDoneChunk(req.cookie));
    pieces.forEach(sendData);
  } else {
    pieces.forEach((p, i) => {
      const flags = i === pieces.length - 1 ? P.NBD_REPLY_FLAG_DONE : 0;
      if (!p.data) {
        socket.write(P.encodeOffsetHole(req.cookie, flags, p.offset, p.length, Buffer.allocUnsafe(P.OffsetHoleChunkBytes)));
      } else {
        socket.write(P.encodeOffsetDataHeader(req.cookie, flags, p.offset, p.length, Buffer.allocUnsafe(P.OffsetDataHeaderBytes)));
        sendData(p);
      }
    });
  }
  socket.uncork();
}

async function blockStatus(session: Session, socket: Duplex, req: P.Request): Promise<void> {
  const reqOne = (req.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0;
  const holeFlags = P.NBD_STATE_HOLE | P.NBD_STATE_ZERO;
  const descriptors: P.BlockDescriptor[] = [];
  const add = (length: number, flags: number) => {
    const last = descriptors.at(-1);
    if (last && last.flags === flags) last.length += length;
    else descriptors.push({ length, flags });
  };
  let at = req.offset;
  const end = req.offset + req.length;
  for await (const x of session.exp.image.extents({ layer: 'chain', offset: req.offset, length: req.length })) {
    if (x.kind !== 'data') continue;
    const s = Math.max(x.offset, at);
    const e = Math.min(x.offset + x.length, end);
    if (e <= s) continue;
    if (s > at) add(s - at, holeFlags);
    add(e - s, 0);
    at = e;
    if (descriptors.length >= MaxDescriptors || (reqOne && descriptors.length > 1)) break;
  }
  if (at < end && descriptors.length < MaxDescriptors) add(end - at, holeFlags);
  const out = reqOne ? descriptors.slice(0, 1) : descriptors.slice(0, MaxDescriptors);
  socket.write(P.encodeBlockStatus(req.cookie, P.NBD_REPLY_FLAG_DONE, session.allocationContext!, out));
}

function replyOk(session: Session, socket: Duplex, cookie: bigint): void {
  socket.write(P.encodeSimpleReply({ error: 0, cookie }));
}

function replyError(session: Session, socket: Duplex, cookie: bigint, errno: number, message: string): void {
  if (socket.destroyed) return;
  if (session.structured) socket.write(P.encodeErrorChunk(cookie, P.NBD_REPLY_FLAG_DONE, errno, message));
  else socket.write(P.encodeSimpleReply({ error: errno, cookie }));
}
