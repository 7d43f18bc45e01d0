import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
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
});
