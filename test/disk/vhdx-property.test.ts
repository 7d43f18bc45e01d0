/**
 * Property tests: random sequences of write, zero, grow, flush and close/reopen on dynamic, fixed
 * and differencing VHDX disks, checked against an in-memory model after every sequence, and (for
 * disks qemu can open) by `qemu-img check`.
 */
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vhdxDriver } from '../../shared/disk/vhdx/driver.js';
import type { DiskImage } from '../../shared/disk/types.js';
import { referee, scratchDir } from '../helpers.js';
import { firstDifferenceFrom, openVhdx, pattern } from './vhdx-helpers.js';

const K = 1024;
const M = 1024 * K;

let dir: { path: string; remove: () => Promise<void> };
beforeAll(async () => { dir = await scratchDir('lifeboat-vhdx-prop-'); });
afterAll(async () => { await dir.remove(); });

type Op =
  | { op: 'write'; at: number; len: number; seed: number }
  | { op: 'zero'; at: number; len: number }
  | { op: 'grow'; by: number }
  | { op: 'flush' }
  | { op: 'reopen' };

const frac = fc.integer({ min: 0, max: 1_000_000 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('write' as const), at: frac, len: fc.oneof(fc.integer({ min: 1, max: 9000 }), fc.integer({ min: 1, max: 3 * M })), seed: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('zero' as const), at: frac, len: fc.oneof(fc.integer({ min: 1, max: 9000 }), fc.integer({ min: 1, max: 3 * M })) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('grow' as const), by: fc.integer({ min: 1, max: 3 * M }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('flush' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('reopen' as const) }) },
);

let counter = 0;

async function runSequence(kind: 'dynamic' | 'fixed' | 'differencing', lss: number, ops: Op[]): Promise<void> {
  const n = counter++;
  const path = join(dir.path, `${kind}-${n}.vhdx`);
  const size = 5 * M + 7 * lss;
  let model = Buffer.alloc(size);
  let d: DiskImage;
  if (kind === 'differencing') {
    const parentPath = join(dir.path, `parent-${n}.vhdx`);
    const p = await vhdxDriver.create(parentPath, { virtualSize: size, blockSize: M, logicalSectorSize: lss });
    const base = pattern(Buffer.alloc(size), n);
    base.fill(0, M, 2 * M); // a hole in the parent
    await p.write(0, base.subarray(0, M));
    await p.write(2 * M, base.subarray(2 * M));
    await p.close();
    base.copy(model);
    d = await vhdxDriver.createChild!(path, { parentPath, openParent: (x) => openVhdx(x, true) });
  } else {
    d = await vhdxDriver.create(path, { virtualSize: size, type: kind, blockSize: M, logicalSectorSize: lss });
  }
  try {
    for (const o of ops) {
      if (o.op === 'write' || o.op === 'zero') {
        const at = Math.floor((o.at / 1_000_000) * (model.length - 1));
        const len = Math.min(o.len, model.length - at);
        if (o.op === 'write') {
          const data = pattern(Buffer.alloc(len), o.seed);
          await d.write(at, data);
          data.copy(model, at);
        } else {
          await d.zero(at, len);
          model.fill(0, at, at + len);
        }
      } else if (o.op === 'grow') {
        const next = model.length + Math.ceil(o.by / lss) * lss;
        await d.resize(next);
        const grown = Buffer.alloc(next);
        model.copy(grown);
        model = grown;
      } else if (o.op === 'flush') {
        await d.flush();
      } else {
        await d.close();
        d = await openVhdx(path);
      }
    }
    expect(d.virtualSize).toBe(model.length);
    expect(await firstDifferenceFrom(d, model)).toBe(-1);
  } finally {
    await d.close();
  }
  const again = await openVhdx(path, true);
  try {
    expect(await firstDifferenceFrom(again, model)).toBe(-1);
  } finally {
    await again.close();
  }
  if (kind !== 'differencing' && lss === 512) await referee('qemu-img', ['check', '-q', '-f', 'vhdx', path]);
}

describe('random operation sequences against a model', () => {
  for (const kind of ['dynamic', 'fixed', 'differencing'] as const) {
    for (const lss of [512, 4096]) {
      it(`${kind} disk, ${lss}-byte sectors`, async () => {
        await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), (ops) => runSequence(kind, lss, ops)), { numRuns: 12 });
      });
    }
  }
});

describe('concurrent callers', () => {
  it('writes and zeroes issued together apply in call order, and reads beside them see whole blocks', async () => {
    const path = join(dir.path, 'concurrent.vhdx');
    const size = 9 * M + 4096;
    const d = await vhdxDriver.create(path, { virtualSize: size, blockSize: M });
    const model = Buffer.alloc(size);
    const pending: Promise<void>[] = [];
    for (let i = 0; i < 60; i++) {
      const at = (i * 7919 * 512) % (size - 2 * M);
      const len = 1 + ((i * 104729) % (2 * M));
      if (i % 5 === 4) {
        pending.push(d.zero(at, len));
        model.fill(0, at, at + len);
      } else {
        const data = pattern(Buffer.alloc(len), 500 + i);
        pending.push(d.write(at, data));
        data.copy(model, at);
      }
      if (i % 7 === 0) pending.push(d.read(0, Buffer.alloc(size)));
    }
    await Promise.all(pending);
    expect(await firstDifferenceFrom(d, model)).toBe(-1);
    await d.close();
    await referee('qemu-img', ['check', '-q', '-f', 'vhdx', path]);
  });
});
