/** The range arithmetic of failback's equality check: the agent's merged ranges and their coverage of what the VM wrote. */
import { describe, expect, it } from 'vitest';
import { addRange } from '../../agent/reverse/apply.js';
import { firstUncovered } from '../../service/failback/verify.js';

describe('received ranges', () => {
  it('merge what overlaps or touches, keep the rest apart, ascending', () => {
    const r: [number, number][] = [];
    addRange(r, 100, 10);
    addRange(r, 0, 10);
    addRange(r, 10, 5); // touches [0, 10)
    addRange(r, 50, 10);
    expect(r).toEqual([[0, 15], [50, 10], [100, 10]]);
    addRange(r, 55, 50); // spans [50,60) and [100,110)
    expect(r).toEqual([[0, 15], [50, 60]]);
    addRange(r, 200, 1);
    addRange(r, 0, 300);
    expect(r).toEqual([[0, 300]]);
  });

  it('coverage: the first written offset no range covers', () => {
    const ranges = [{ offset: 0, length: 15 }, { offset: 50, length: 60 }];
    expect(firstUncovered(ranges, 0, 15)).toBeUndefined();
    expect(firstUncovered(ranges, 60, 50)).toBeUndefined();
    expect(firstUncovered(ranges, 10, 10)).toBe(15);
    expect(firstUncovered(ranges, 40, 20)).toBe(40);
    expect(firstUncovered(ranges, 100, 20)).toBe(110);
    expect(firstUncovered([], 0, 1)).toBe(0);
  });
});
