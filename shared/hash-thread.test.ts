import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { givePooled, isPooled, takePooled } from './buffer-pool.js';
import { Sha256 } from './hash-thread.js';

describe('Sha256 on the helper thread', () => {
  it('gives the digest of node:crypto for several hashes at once, pieces of any size', async () => {
    const inputs = [randomBytes(0), randomBytes(1), randomBytes(9 << 20), randomBytes((4 << 20) + 17)];
    const digests = await Promise.all(inputs.map(async (data, i) => {
      const h = new Sha256();
      const step = [1, 7, 65536, 3 << 20][i]!;
      for (let at = 0; at < data.length; at += step) await h.update(data.subarray(at, at + step));
      return h.digest();
    }));
    expect(digests).toEqual(inputs.map((d) => createHash('sha256').update(d).digest('hex')));
  });

  it('can be dropped half way without disturbing another hash', async () => {
    const a = new Sha256();
    const b = new Sha256();
    const data = randomBytes(6 << 20);
    await a.update(data);
    await b.update(data.subarray(0, 1000));
    a.drop();
    await b.update(data.subarray(1000));
    expect(await b.digest()).toBe(createHash('sha256').update(data).digest('hex'));
  });

  it('hands whole pooled chunks to the thread and back untouched, several at once, in order, mixed with copied ones', async () => {
    const data = randomBytes((9 << 20) + 4321);
    const h = new Sha256();
    // Whole pool buffers (a file store's reads) go to the thread; ordinary memory and a piece of a
    // pool buffer (whose other pieces may still be unread) are copied.
    const plan: { size: number; kind: 'whole' | 'piece' | 'plain' }[] = [
      { size: 1 << 20, kind: 'whole' }, { size: 100, kind: 'plain' }, { size: 1 << 20, kind: 'whole' }, { size: 5000, kind: 'piece' },
      { size: 3 << 20, kind: 'whole' }, { size: 17, kind: 'plain' }, { size: 1 << 20, kind: 'whole' },
    ];
    plan.push({ size: data.length - plan.reduce((n, p) => n + p.size, 0), kind: 'piece' });
    const passing: { chunk: Buffer; expect: Buffer; back: Promise<Buffer>; moved: boolean }[] = [];
    let at = 0;
    for (const { size, kind } of plan) {
      const chunk = kind === 'plain' ? Buffer.alloc(size) : kind === 'whole' ? takePooled(size) : takePooled(size + 1).subarray(0, size);
      data.copy(chunk, 0, at, at + size);
      passing.push({ chunk, expect: data.subarray(at, at + size), back: h.pass(chunk), moved: kind === 'whole' });
      at += size;
    }
    for (const p of passing) {
      const back = await p.back;
      expect(back.equals(p.expect)).toBe(true);
      // A moved chunk's memory went to the thread and came back as a new buffer; the others stayed.
      expect(p.chunk.length).toBe(p.moved ? 0 : p.expect.length);
      expect(back === p.chunk).toBe(!p.moved);
      if (p.moved) expect(isPooled(back)).toBe(true);
      givePooled(back);
    }
    expect(await h.digest()).toBe(createHash('sha256').update(data).digest('hex'));
  });
});
