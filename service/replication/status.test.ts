import { describe, expect, it } from 'vitest';
import { computeHealth } from './status.js';

const now = new Date('2026-11-25T12:00:00Z');
const base = { protected: true, resync: false, since: new Date(now.getTime() - 60_000), now, expected: 120, missed: 0 };

describe('health', () => {
  it('is critical when a disk needs resynchronization', () => {
    expect(computeHealth({ ...base, resync: true })).toBe('critical');
  });
  it('warns above 20% missed cycles of the last hour, not at 20%', () => {
    expect(computeHealth({ ...base, missed: 24 })).toBe('normal');
    expect(computeHealth({ ...base, missed: 25 })).toBe('warning');
  });
  it('warns when nothing was applied for over an hour', () => {
    expect(computeHealth({ ...base, since: new Date(now.getTime() - 3_600_001) })).toBe('warning');
    expect(computeHealth({ ...base, since: new Date(now.getTime() - 3_600_000) })).toBe('normal');
  });
  it('is normal for an unprotected VM', () => {
    expect(computeHealth({ ...base, protected: false, resync: true })).toBe('normal');
  });
});
