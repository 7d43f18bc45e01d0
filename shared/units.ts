import { ErrInvalidArgument } from './errors.js';

const sizeUnits: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kb: 1024, kib: 1024,
  m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1024 ** 4, tib: 1024 ** 4,
};

/** Parses "4096", "64K", "1MiB", "4G" (binary units, as qemu-img does) into bytes. */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? sizeUnits[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw ErrInvalidArgument(`${what} "${text}" is not a size (examples: 512, 64K, 1M, 4G)`);
  const bytes = Number(m[1]) * unit;
  if (bytes > Number.MAX_SAFE_INTEGER) throw ErrInvalidArgument(`${what} "${text}" is too large (at most ${formatBytes(Number.MAX_SAFE_INTEGER)})`);
  if (!Number.isSafeInteger(bytes)) throw ErrInvalidArgument(`${what} "${text}" is not a whole number of bytes`);
  return bytes;
}

const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses "30s", "5m", "1h", "250ms" into milliseconds. */
export function parseDuration(text: string, what = 'duration'): number {
  const m = /^\s*(\d+)\s*(ms|s|m|h|d)\s*$/.exec(text);
  if (!m) throw ErrInvalidArgument(`${what} "${text}" is not a duration (examples: 30s, 5m, 1h)`);
  return Number(m[1]) * durationUnits[m[2]!]!;
}

/** 1536 -> "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
