/**
 * READ replies for a run of requests (docs/formats/nbd.md "READ"): one request, or several the client
 * sent together whose ranges follow one another (nbdcopy and qemu stream a disk as 256 KiB READs
 * back to back). The run's range is planned and read as one: the chain's extents asked once, data
 * read into as few slabs as hold it by one image read per data extent and slab, and every request
 * answered from slices of those slabs. All the run's replies are written in one synchronous, corked
 * run of socket writes, so they leave in one writev and never interleave with another reply.
 *
 * Structured replies that may be fragmented (no DF) send OFFSET_HOLE for what the chain does not hold
 * (nothing streams a hole's zeros) and OFFSET_DATA for the rest; DF and simple replies send the bytes.
 * Input: requests already checked (flags, range, size), all with the same flags, each starting where
 * the one before ends. Failure: a read error rejects, having given back every slab; the caller
 * answers each request of the run with an error.
 */
import type { Duplex } from 'node:stream';
import * as P from '../../../shared/nbd/protocol.js';
import { giveSlab, MaxSlabBytes, slabBytesFor, takeSlab, type ByteBudget } from './buffers.js';
import type { NbdStats, Session } from './types.js';

/** A part of one request's reply: a hole, or data in a slice of a slab. */
interface Piece { offset: number; length: number; data: Buffer | undefined }
/** One image read: bytes at offset into buf (a slice of a slab). */
interface Fill { offset: number; buf: Buffer }
interface Plan { replies: Piece[][]; fills: Fill[]; slabs: Buffer[] }

/** Reads and answers run; onWritten is called once the socket has taken every byte of the replies. */
export async function readRun(session: Session, socket: Duplex, budget: ByteBudget, run: P.Request[], stats: NbdStats, onWritten?: () => void): Promise<void> {
  const first = run[0]!;
  const start = first.offset;
  const end = run[run.length - 1]!.offset + run[run.length - 1]!.length;
  const df = (first.flags & P.NBD_CMD_FLAG_DF) !== 0;
  // Holes are shown only in structured replies that may be fragmented.
  const showHoles = session.structured && !df;
  // The budget is reserved for the worst case (all data) before any slab is taken, then trimmed to what was.
  const worst = slabBytesFor(end - start);
  await budget.acquire(worst);
  let plan: Plan | undefined;
  try {
    const data = showHoles && end > start ? await dataExtents(session, start, end - start) : [{ offset: start, length: end - start }];
    plan = planRun(run, data);
    budget.release(worst - slabTotal(plan.slabs));
    const { image } = session.exp;
    if (plan.fills.length === 1) await image.read(plan.fills[0]!.offset, plan.fills[0]!.buf);
    else {
      // Every read has ended before a slab can go back to the pool, failed or not.
      const results = await Promise.allSettled(plan.fills.map((f) => image.read(f.offset, f.buf)));
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
    }
  } catch (err) {
    if (plan) for (const s of plan.slabs) giveSlab(s);
    budget.release(plan ? slabTotal(plan.slabs) : worst);
    throw err;
  }
  const { replies, slabs } = plan;
  stats.readRuns++;
  const out: Buffer[] = [];
  for (let i = 0; i < run.length; i++) stats.bytesRead += replyTo(session, run[i]!, replies[i]!, df, out);
  // Writes complete in order: when the last is taken, every slice of the run's slabs was.
  const written = () => {
    for (const s of slabs) giveSlab(s);
    budget.release(slabTotal(slabs));
    onWritten?.();
  };
  socket.cork();
  const last = out.length - 1;
  for (let i = 0; i < last; i++) socket.write(out[i]!);
  socket.write(out[last]!, written);
  socket.uncork();
}

function slabTotal(slabs: Buffer[]): number {
  let n = 0;
  for (const s of slabs) n += s.length;
  return n;
}

/** The chain's data extents over [offset, offset+length), clipped; the rest reads as zeros. */
async function dataExtents(session: Session, offset: number, length: number): Promise<Array<{ offset: number; length: number }>> {
  const out: Array<{ offset: number; length: number }> = [];
  for await (const x of session.exp.image.extents({ layer: 'chain', offset, length })) {
    if (x.kind !== 'data') continue;
    const s = Math.max(x.offset, offset);
    const e = Math.min(x.offset + x.length, offset + length);
    if (e > s) out.push({ offset: s, length: e - s });
  }
  return out;
}

/**
 * Packs the data extents one after another into as few slabs as hold them (a fragmented range costs
 * its data bytes, not a slab per piece): one fill per extent and slab. Then cuts the run's range at
 * request boundaries into each request's pieces: holes between extents, slices of the slabs for data.
 */
function planRun(run: P.Request[], data: Array<{ offset: number; length: number }>): Plan {
  let dataBytes = 0;
  for (const x of data) dataBytes += x.length;
  const slabs: Buffer[] = [];
  const fills: Fill[] = [];
  let slab: Buffer | undefined;
  let used = 0;
  let left = dataBytes;
  for (const x of data) {
    for (let p = x.offset; p < x.offset + x.length;) {
      if (!slab || used === slab.length) {
        slab = takeSlab(Math.min(left, MaxSlabBytes));
        slabs.push(slab);
        used = 0;
      }
      const n = Math.min(slab.length - used, x.offset + x.length - p);
      fills.push({ offset: p, buf: slab.subarray(used, used + n) });
      used += n;
      left -= n;
      p += n;
    }
  }
  // Each request's pieces: walk the fills (data) and the gaps between them (holes).
  const replies: Piece[][] = [];
  let f = 0;
  for (const req of run) {
    const pieces: Piece[] = [];
    const reqEnd = req.offset + req.length;
    let at = req.offset;
    while (at < reqEnd) {
      while (f < fills.length && fills[f]!.offset + fills[f]!.buf.length <= at) f++;
      const fill = fills[f];
      if (!fill || fill.offset >= reqEnd) {
        pieces.push({ offset: at, length: reqEnd - at, data: undefined });
        break;
      }
      if (fill.offset > at) {
        pieces.push({ offset: at, length: fill.offset - at, data: undefined });
        at = fill.offset;
      }
      const e = Math.min(fill.offset + fill.buf.length, reqEnd);
      pieces.push({ offset: at, length: e - at, data: fill.buf.subarray(at - fill.offset, e - fill.offset) });
      at = e;
    }
    replies.push(pieces);
  }
  return { replies, fills, slabs };
}

/** Appends one request's whole reply to out (data as slices of the slabs); returns its data bytes. */
function replyTo(session: Session, req: P.Request, pieces: Piece[], df: boolean, out: Buffer[]): number {
  let bytes = 0;
  // Every piece is data unless holes are shown (the last branch).
  const sendData = (p: Piece) => {
    out.push(p.data!);
    bytes += p.length;
  };
  if (!session.structured) {
    out.push(P.encodeSimpleReply({ error: 0, cookie: req.cookie }, Buffer.allocUnsafe(P.SimpleReplyBytes)));
    pieces.forEach(sendData);
  } else if (df || pieces.length === 0) {
    if (req.length > 0) out.push(P.encodeOffsetDataHeader(req.cookie, P.NBD_REPLY_FLAG_DONE, req.offset, req.length, Buffer.allocUnsafe(P.OffsetDataHeaderBytes)));
    else out.push(P.encodeDoneChunk(req.cookie));
    pieces.forEach(sendData);
  } else {
    pieces.forEach((p, i) => {
      const flags = i === pieces.length - 1 ? P.NBD_REPLY_FLAG_DONE : 0;
      if (!p.data) {
        out.push(P.encodeOffsetHole(req.cookie, flags, p.offset, p.length, Buffer.allocUnsafe(P.OffsetHoleChunkBytes)));
      } else {
        out.push(P.encodeOffsetDataHeader(req.cookie, flags, p.offset, p.length, Buffer.allocUnsafe(P.OffsetDataHeaderBytes)));
        sendData(p);
      }
    });
  }
  return bytes;
}
