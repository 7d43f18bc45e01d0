/**
 * Using the log: replaying it on open, and writing metadata changes through it. The order of
 * writes (docs/formats/vhdx.md "Log") is: header with a fresh LogGuid, durable; the entry, durable;
 * the logged writes applied, durable; header with LogGuid zero. A crash anywhere in between leaves
 * either no log to replay (the old state) or a complete entry that the next open applies.
 */
import { ErrCorrupt, ErrUnsupported } from '../../errors.js';
import type { VhdxFile } from './file.js';
import { MaxLogLength, MiB, newGuid, ZeroGuid } from './format.js';
import type { HeaderState } from './headers.js';
import { buildEntry, findReplay, LogSector, type LogWrite } from './log.js';

/** Checks the log fields of the current header against the file. */
export function checkLogLocation(headers: HeaderState, fileSize: number): void {
  const h = headers.current;
  if (h.version !== 1) throw ErrUnsupported(`VHDX version ${h.version} (only 1 is known)`);
  if (h.logLength === 0) return;
  if (h.logOffset % MiB !== 0 || h.logLength % MiB !== 0 || h.logOffset < MiB) throw ErrCorrupt('log is not 1 MiB aligned');
  if (h.logOffset + h.logLength > fileSize) throw ErrCorrupt('log lies outside the file');
  if (h.logLength > MaxLogLength) throw ErrUnsupported(`log of ${h.logLength} bytes is larger than ${MaxLogLength}`);
}

/**
 * Replays a non-empty log. Writable: applies the writes to the file, extends it to LastFileOffset,
 * syncs and clears LogGuid. Read-only: keeps the writes as an in-memory overlay of the file.
 * Returns true when something was replayed.
 */
export async function replayLog(file: VhdxFile, headers: HeaderState): Promise<boolean> {
  const h = headers.current;
  if (h.logGuid === ZeroGuid || h.logLength === 0) return false;
  if (h.logVersion !== 0) throw ErrUnsupported(`log version ${h.logVersion} (only 0 is known)`);
  const log = Buffer.alloc(h.logLength);
  await file.read(log, h.logOffset, 'log');
  const replay = findReplay(log, h.logGuid, file.size);
  if (!replay) {
    // A LogGuid with no valid sequence: nothing was logged; the log is simply empty.
    if (!file.readOnly) await headers.update(file, { logGuid: ZeroGuid });
    return false;
  }
  const end = roundUp(replay.lastFileOffset, MiB);
  if (file.readOnly) {
    file.setOverlay(replay.writes.map((w) => ({ at: w.at, length: w.length, data: w.data })), end);
    return true;
  }
  await headers.beginWrites(file, false);
  await applyWrites(file, replay.writes);
  await file.extend(end);
  await file.sync();
  await headers.update(file, { logGuid: ZeroGuid });
  return true;
}

async function applyWrites(file: VhdxFile, writes: LogWrite[]): Promise<void> {
  for (const w of writes) {
    if (w.data) {
      await file.write(w.data, w.at);
      continue;
    }
    // Zeros past the end of the file are not written: the file is extended over them afterwards and
    // reads as zeros there. Writing them would let a log (the file's own bytes) fill the disk with up
    // to LastFileOffset's 64 GiB of growth.
    const end = Math.min(w.at + w.length, file.size);
    if (end > w.at) await file.writeZeros(w.at, end - w.at);
  }
}

export interface LoggedWrite {
  /** 4 KiB aligned file offset. */
  at: number;
  /** A multiple of 4 KiB. */
  data: Buffer;
}

/**
 * Makes a set of metadata writes atomic through the log. With stopBeforeApply the entry is left
 * in the log unapplied (as after a crash at that instant), which tests use to exercise replay.
 */
export async function writeThroughLog(file: VhdxFile, headers: HeaderState, writes: LoggedWrite[], opts: { stopBeforeApply?: boolean } = {}): Promise<void> {
  const h = headers.current;
  for (const w of writes) {
    if (w.at % LogSector !== 0 || w.data.length % LogSector !== 0) throw new Error('logged writes must be 4 KiB aligned');
  }
  const logGuid = newGuid();
  const entry = buildEntry(writes, { pos: 0, seq: 1n, logGuid, fileSize: file.size });
  if (entry.length > h.logLength) throw ErrUnsupported(`metadata update of ${entry.length} bytes does not fit the ${h.logLength}-byte log`);
  await headers.update(file, { logGuid });
  await file.write(entry, h.logOffset);
  await file.sync();
  if (opts.stopBeforeApply) return;
  await applyWrites(file, writes.map((w) => ({ at: w.at, length: w.data.length, data: w.data })));
  await file.sync();
  await headers.update(file, { logGuid: ZeroGuid });
}

export function roundUp(n: number, unit: number): number {
  return Math.ceil(n / unit) * unit;
}
