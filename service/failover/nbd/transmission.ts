/**
 * The transmission phase, server side (docs/formats/nbd.md "Transmission"): requests are read in
 * order and served concurrently (up to MaxInFlight), each reply written as soon as its data is read.
 * A reply is written in one synchronous run of socket writes, so replies never interleave mid-message.
 *
 * READs wait in a queue for one of MaxRunsInFlight read slots; a slot takes the first waiting READ
 * and the waiting ones after it that continue its range with the same flags (up to CoalesceBytes) and
 * serves them as one run: one image read, one writev for all their replies (read.ts). A client that
 * streams a disk in small READs (nbdcopy, qemu) keeps many waiting, so its reads merge. Everything else
 * is served at once, on its own. BLOCK_STATUS answers base:allocation from DiskImage.extents. WRITE, TRIM and WRITE_ZEROES get
 * EPERM (read-only export); out of range or oversized requests get EINVAL; unknown commands and flags
 * get EINVAL. Failure: malformed bytes (bad magic) or a WRITE too large to skip end the connection; a
 * read error of the image is an EIO reply. Returns when the client disconnects (NBD_CMD_DISC or gone)
 * and every reply in flight has been written.
 */
import type { Duplex } from 'node:stream';
import * as P from '../../../shared/nbd/protocol.js';
import { ByteBudget } from './buffers.js';
import { ConnectionEnded, type ByteReader } from './byte-reader.js';
import { readRun } from './read.js';
import { CoalesceBytes, ConnectionBufferBytes, MaxDescriptors, MaxInFlight, MaxRunsInFlight, WriteAheadBytes, MaxPayloadBytes, type NbdStats, type Session } from './types.js';

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
  // Requests read and not yet answered; the loop stops reading at MaxInFlight, and ends when none is left.
  let inFlight = 0;
  let wake: (() => void) | undefined;
  const done = (n: number) => {
    inFlight -= n;
    wake?.();
    wake = undefined;
  };
  const serveNow = (req: P.Request) => {
    void serve(session, socket, budget, [req], ctx, () => handle(session, socket, budget, req, ctx.stats)).then(() => done(1));
  };
  // READs wait here for a read slot: at most MaxRunsInFlight runs reading, and a new one only while the
  // replies not yet taken by the socket stay under WriteAheadBytes. A free slot takes the first waiting
  // READ and the waiting ones that continue it. Reading no further ahead of the client than that costs
  // it nothing, and what it sends meanwhile waits here and merges into fewer, larger runs.
  const queue: P.Request[] = [];
  let reading = 0;
  let ahead = 0;
  const pump = () => {
    while (queue.length > 0 && reading < MaxRunsInFlight && ahead < WriteAheadBytes) {
      const run = takeRun(queue);
      const bytes = run[run.length - 1]!.offset + run[run.length - 1]!.length - run[0]!.offset;
      reading++;
      ahead += bytes;
      let settled = false;
      const written = () => {
        if (settled) return;
        settled = true;
        ahead -= bytes;
        pump();
      };
      void serve(session, socket, budget, run, ctx, () => readRun(session, socket, budget, run, ctx.stats, written)).then((answered) => {
        reading--;
        done(run.length);
        if (!answered) written(); // an error reply: no socket callback will come
        pump();
      });
    }
  };

  try {
    for (;;) {
      while (inFlight >= MaxInFlight) await new Promise<void>((r) => { wake = r; });
      // The next request, and those that arrived with it.
      let next: Buffer | undefined = await reader.read(P.RequestBytes);
      let ended = false;
      try {
        while (next) {
          const req = P.decodeRequest(next);
          ctx.stats.requests++;
          if (req.type === P.NBD_CMD_DISC) { ended = true; break; }
          if (req.type === P.NBD_CMD_WRITE) {
            // The data is on the wire: read past it to keep the stream in step, then refuse.
            if (req.length > MaxPayloadBytes) {
              replyError(session, socket, req.cookie, P.NBD_EPERM, 'the export is read-only');
              throw new P.NbdProtocolError(`WRITE of ${req.length} bytes is larger than ${MaxPayloadBytes}`);
            }
            await reader.skip(req.length);
          }
          inFlight++;
          if (coalescable(session, req)) queue.push(req);
          else serveNow(req);
          if (inFlight >= MaxInFlight) break;
          next = reader.tryRead(P.RequestBytes);
        }
      } finally {
        pump();
      }
      if (ended) break;
    }
  } catch (err) {
    if (!(err instanceof ConnectionEnded)) throw err;
    // Nobody is left to read the replies of READs still waiting: they are dropped, not read.
    done(queue.splice(0).length);
  } finally {
    while (inFlight > 0) await new Promise<void>((r) => { wake = r; });
  }
}

/** Takes the first queued READ and those queued after it that continue its range, up to CoalesceBytes. */
function takeRun(queue: P.Request[]): P.Request[] {
  const run = [queue.shift()!];
  let end = run[0]!.offset + run[0]!.length;
  let bytes = run[0]!.length;
  while (queue.length > 0) {
    const next = queue[0]!;
    if (next.offset !== end || next.flags !== run[0]!.flags || bytes + next.length > CoalesceBytes) break;
    run.push(queue.shift()!);
    end += next.length;
    bytes += next.length;
  }
  return run;
}

/** A READ that needs no refusal and is small enough to share a run. */
function coalescable(session: Session, req: P.Request): boolean {
  return req.type === P.NBD_CMD_READ && req.length > 0 && req.length <= CoalesceBytes
    && (req.flags & ~readFlags(session)) === 0 && req.offset + req.length <= session.exp.exp.size;
}

function readFlags(session: Session): number {
  return P.NBD_CMD_FLAG_FUA | (session.structured ? P.NBD_CMD_FLAG_DF : 0);
}

/** Runs work for reqs; when it fails, answers each of them with the error and returns false. */
async function serve(session: Session, socket: Duplex, budget: ByteBudget, reqs: P.Request[], ctx: TransmissionContext, work: () => Promise<void>): Promise<boolean> {
  try {
    await work();
    return true;
  } catch (err) {
    const first = reqs[0]!;
    const last = reqs[reqs.length - 1]!;
    if (err instanceof Refusal) {
      for (const req of reqs) replyError(session, socket, req.cookie, err.errno, err.message);
    } else {
      ctx.onError(err, `request ${first.type} at ${first.offset}+${last.offset + last.length - first.offset}`);
      for (const req of reqs) replyError(session, socket, req.cookie, P.NBD_EIO, 'the export could not be read');
    }
    return false;
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
      allowFlags(readFlags(session));
      if (req.length > MaxPayloadBytes) throw new Refusal(P.NBD_EINVAL, `READ of ${req.length} bytes is larger than ${MaxPayloadBytes}`);
      inRange();
      return readRun(session, socket, budget, [req], stats);
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
