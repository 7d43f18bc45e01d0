import { describe, expect, it } from 'vitest';
import { formatBytes, parseDuration, parseSize } from './units.js';

describe('parseSize', () => {
  it('reads binary units as qemu-img does', () => {
    expect(parseSize('512')).toBe(512);
    expect(() => parseSize('99999999T', '--size')).toThrow(/^--size "99999999T" is too large \(at most 8\.00 PiB|^--size "99999999T" is too large/);
    expect(() => parseSize('1.5', '--size')).toThrow(/not a whole number of bytes/);
    expect(parseSize('64K')).toBe(65536);
    expect(parseSize('1MiB')).toBe(1 << 20);
    expect(parseSize('4G')).toBe(4 * 2 ** 30);
  });
  it('refuses what is not a size with one clear message', () => {
    expect(() => parseSize('4X', 'block size')).toThrow('block size "4X" is not a size');
    expect(() => parseSize('-1')).toThrow(/is not a size/);
  });
});

describe('parseDuration', () => {
  it('reads the replication frequencies', () => {
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('5m')).toBe(300_000);
    expect(parseDuration('15m')).toBe(900_000);
    expect(() => parseDuration('5')).toThrow(/not a duration/);
  });
});

describe('formatBytes', () => {
  it('prints human sizes', () => {
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(100)).toBe('100 B');
  });
});
