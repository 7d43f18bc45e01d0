/** Checks on arguments every adapter makes the same way, before any I/O. */
import { ErrInvalidArgument } from '../errors.js';
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
