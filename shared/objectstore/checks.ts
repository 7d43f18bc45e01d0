/** Checks on arguments every adapter makes the same way, before any I/O. */
import type { Readable } from 'node:stream';
import { ErrInvalidArgument } from '../errors.js';
import { ErrRangeNotSatisfiable } from './errors.js';
import type { ByteRange, GrantOptions } from './types.js';
import { MaxGrantSeconds } from './types.js';

/** Validates a requested range (offset ≥ 0, length ≥ 1, both safe integers) before any I/O. */
export function checkRange(range: ByteRange | undefined): ByteRange | undefined {
  if (range === undefined) return undefined;
  const { offset, length } = range;
  if (!Number.isSafeInteger(offset) || offset < 0) throw ErrInvalidArgument(`invalid range offset ${offset}`);
  if (!Number.isSafeInteger(length) || length < 1) throw ErrInvalidArgument(`invalid range length ${length}: at least 1`);
  return { offset, length };
}

/** Checks a grant's options and returns its expiry (whole seconds, as signatures carry them). */
export function grantExpiry(options: GrantOptions): Date {
  const { operation, expiresIn } = options;
  if (operation !== 'put' && operation !== 'get') throw ErrInvalidArgument(`invalid grant operation ${String(operation)}`);
  if (!Number.isInteger(expiresIn) || expiresIn < 1 || expiresIn > MaxGrantSeconds) {
    throw ErrInvalidArgument(`grant expiresIn must be 1 to ${MaxGrantSeconds} seconds, got ${expiresIn}`);
  }
  const start = options.issuedAt ?? new Date();
  return new Date(Math.floor(start.getTime() / 1000) * 1000 + expiresIn * 1000);
}

/**
 * The body of a ranged response, unless the range started at or past the end of the object: some
 * servers answer that with the whole (empty) object instead of 416. The object's size comes from
 * Content-Range ("bytes a-b/size") or, without one, the length of what was served.
 */
export function servedRange(key: string, range: ByteRange | undefined, stream: Readable, contentRange: string | undefined, contentLength: number | undefined): Readable {
  if (range === undefined) return stream;
  const total = /\/(\d+)$/.exec(contentRange ?? '')?.[1];
  const size = total === undefined ? contentLength ?? 0 : Number(total);
  if (range.offset < size) return stream;
  stream.destroy();
  throw ErrRangeNotSatisfiable(key, range.offset, size);
}
