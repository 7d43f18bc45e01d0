import { ErrInvalidArgument } from '../errors.js';
import type { ByteRange } from './types.js';

/** Validates a requested range (offset ≥ 0, length ≥ 1, both safe integers) before any I/O. */
export function checkRange(range: ByteRange | undefined): ByteRange | undefined {
  if (range === undefined) return undefined;
  const { offset, length } = range;
  if (!Number.isSafeInteger(offset) || offset < 0) throw ErrInvalidArgument(`invalid range offset ${offset}`);
  if (!Number.isSafeInteger(length) || length < 1) throw ErrInvalidArgument(`invalid range length ${length}: at least 1`);
  return { offset, length };
}
