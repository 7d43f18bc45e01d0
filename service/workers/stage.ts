/**
 * Staging a log before it touches a replica: the sealed object is streamed from the store through a
 * SHA-256 of its bytes into the envelope and .hrl readers, and every verified item is written to a
 * local staging file. Only when the reader ended cleanly (trailer set), the object digest equals the
 * committed one and the header names this disk, generation and sequence, is the staging file handed
 * to apply. A failure leaves the replica untouched.
 *
 * Staging file: records of [kind u8 (1 data, 2 zero)][offset u64 LE][length u64 LE][data if kind 1].
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { PrivateJwk } from '../../shared/crypto/keys.js';
import { ErrTampered } from '../../shared/errors.js';
import type { LogHeader } from '../../shared/log/index.js';
import { readLog } from '../../shared/log/index.js';
import type { DiskImage } from '../../shared/disk/index.js';

const RecordHeaderBytes = 17;
const KindData = 1;
const KindZero = 2;

export interface StagedLog {
  path: string;
  header: LogHeader;
}

export interface StageInput {
  /** The sealed object's bytes. */
  object: Readable;
  key: PrivateJwk;
  expect: { tenant: string; vm: string; disk: string; generation: number; sequence: number };
  sha256: string;
  size: number;
}

/** Verifies the whole object and writes its extents to path; throws tampered/corrupt otherwise. */
export async function stageLog(input: StageInput, path: string): Promise<StagedLog> {
  const digest = createHash('sha256');
  let bytes = 0;
  async function* hashed(): AsyncGenerator<Buffer> {
    for await (const chunk of input.object as AsyncIterable<Buffer>) {
      digest.update(chunk);
      bytes += chunk.length;
      yield chunk;
    }
  }
  const out = await open(path, 'wx', 0o600);
  try {
    const source = hashed();
    const reader = await readLog(source, { key: input.key, expect: input.expect });
    const head = Buffer.alloc(RecordHeaderBytes);
    let at = 0;
    for await (const item of reader.items()) {
      head.writeUInt8(item.kind === 'data' ? KindData : KindZero, 0);
      head.writeBigUInt64LE(BigInt(item.offset), 1);
      head.writeBigUInt64LE(BigInt(item.length), 9);
      await out.write(head, 0, RecordHeaderBytes, at);
      at += RecordHeaderBytes;
      if (item.kind === 'data') {
        await out.write(item.data, 0, item.length, at);
        at += item.length;
      }
    }
    if (!reader.trailer) throw ErrTampered('log ended without its trailer');
    // Drain anything after the trailer so the digest covers the whole object.
    while (!(await source.next()).done) { /* counted by hashed() */ }
    if (bytes !== input.size) throw ErrTampered(`object holds ${bytes} bytes, the commit says ${input.size}`);
    const got = digest.digest('hex');
    if (got !== input.sha256) throw ErrTampered(`object digest ${got} differs from the committed ${input.sha256}`);
    // No fsync: a staging file never outlives its run; after a crash the log is staged again.
    return { path, header: reader.header };
  } finally {
    await out.close();
  }
}

/** Writes a staged log's extents into the disk (the top layer of a replica). */
export async function applyStaged(staged: StagedLog, disk: DiskImage, bufferBytes = 1 << 20): Promise<void> {
  const fh: FileHandle = await open(staged.path, 'r');
  try {
    const head = Buffer.alloc(RecordHeaderBytes);
    let at = 0;
    let buf = Buffer.alloc(bufferBytes);
    for (;;) {
      const { bytesRead } = await fh.read(head, 0, RecordHeaderBytes, at);
      if (bytesRead === 0) break;
      at += RecordHeaderBytes;
      const offset = Number(head.readBigUInt64LE(1));
      const length = Number(head.readBigUInt64LE(9));
      if (head[0] === KindZero) {
        await disk.zero(offset, length);
        continue;
      }
      if (length > buf.length) buf = Buffer.alloc(length);
      const view = buf.subarray(0, length);
      await fh.read(view, 0, length, at);
      at += length;
      await disk.write(offset, view);
    }
  } finally {
    await fh.close();
  }
}
