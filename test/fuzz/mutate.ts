/**
 * Byte mutations for the fuzz targets: bit flips, byte and integer overwrites (with the values that
 * break length checks: 0, 1, powers of two, all ones, the file's own size and its neighbours), runs,
 * copies from elsewhere in the input, truncation and extension. A mutation is a small description
 * (what fast-check prints and shrinks), applied to a seed by applyMutations. Each lands in a region
 * of the seed (the header, the BAT, …) so the deep fields get their share.
 */
import fc from 'fast-check';

/** A byte range of the seed worth mutating: [from, from + length). */
export interface Region {
  name: string;
  from: number;
  length: number;
}

export type Mutation =
  | { kind: 'bit'; region: number; at: number; bit: number }
  | { kind: 'byte'; region: number; at: number; value: number }
  | { kind: 'int'; region: number; at: number; width: 2 | 4 | 8; value: bigint; le: boolean }
  | { kind: 'fill'; region: number; at: number; length: number; value: number }
  | { kind: 'copy'; region: number; at: number; from: number; length: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'extend'; length: number; value: number };

/** Values that break length and offset checks, as unsigned 64-bit integers (cut to the field's width). */
export const InterestingValues: readonly bigint[] = [
  0n, 1n, 2n, 3n, 4n, 7n, 8n, 0x10n, 0x7fn, 0x80n, 0xffn, 0x100n, 0x1ffn, 0x200n, 0x1000n, 0x7fffn, 0x8000n, 0xffffn, 0x10000n,
  1n << 20n, (1n << 20n) + 1n, 1n << 24n, 1n << 28n, 1n << 30n, 0x7fffffffn, 0x80000000n, 0xfffffffen, 0xffffffffn, 1n << 32n,
  (1n << 32n) + 1n, 1n << 40n, 1n << 46n, (1n << 53n) - 1n, 1n << 53n, 1n << 63n, (1n << 64n) - 1n,
];

/**
 * Mutations over the given regions of a seed of seedLength bytes; `le` is the format's byte order
 * for integer overwrites (big-endian formats say false). sizeHints are values of the seed itself
 * worth writing (its length, its regions' offsets).
 */
export function mutationArb(regions: Region[], seedLength: number, le: boolean, sizeHints: number[] = []): fc.Arbitrary<Mutation> {
  const region = fc.nat({ max: regions.length - 1 });
  const at = fc.nat({ max: 1 << 24 });
  const hints = [seedLength, ...sizeHints].flatMap((n) => [BigInt(n), BigInt(n + 1), BigInt(Math.max(0, n - 1))]);
  const value = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...InterestingValues, ...hints) },
    { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) },
    { weight: 1, arbitrary: fc.nat({ max: 0xffff }).map(BigInt) },
  );
  return fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('bit' as const), region, at, bit: fc.nat({ max: 7 }) }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('byte' as const), region, at, value: fc.nat({ max: 255 }) }) },
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('int' as const), region, at, width: fc.constantFrom(2 as const, 4 as const, 8 as const), value, le: fc.constant(le) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('fill' as const), region, at, length: fc.integer({ min: 1, max: 4096 }), value: fc.constantFrom(0, 0xff, 0x41) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('copy' as const), region, at, from: fc.nat({ max: seedLength - 1 }), length: fc.integer({ min: 1, max: 4096 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat({ max: seedLength }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('extend' as const), length: fc.integer({ min: 1, max: 1 << 20 }), value: fc.constantFrom(0, 0xff) }) },
  );
}

/** One to `max` mutations (few, so most inputs stay close enough to the format to get deep). */
export function mutationsArb(regions: Region[], seedLength: number, le: boolean, sizeHints: number[] = [], max = 4): fc.Arbitrary<Mutation[]> {
  return fc.array(mutationArb(regions, seedLength, le, sizeHints), { minLength: 1, maxLength: max });
}

/** Applies mutations to a copy of seed; offsets fold into their region (and into the result's length). */
export function applyMutations(seed: Buffer, muts: Mutation[], regions: Region[]): Buffer {
  let out = Buffer.from(seed);
  const place = (m: { region: number; at: number }, width = 1): number | undefined => {
    const r = regions[m.region % regions.length]!;
    const pos = r.from + (m.at % Math.max(1, r.length));
    return pos + width <= out.length ? pos : undefined;
  };
  for (const m of muts) {
    switch (m.kind) {
      case 'bit': {
        const p = place(m);
        if (p !== undefined) out[p] = out[p]! ^ (1 << m.bit);
        break;
      }
      case 'byte': {
        const p = place(m);
        if (p !== undefined) out[p] = m.value;
        break;
      }
      case 'int': {
        const p = place(m, m.width);
        if (p === undefined) break;
        const v = m.value & ((1n << BigInt(m.width * 8)) - 1n);
        if (m.width === 8) {
          if (m.le) out.writeBigUInt64LE(v, p); else out.writeBigUInt64BE(v, p);
        } else if (m.le) out.writeUIntLE(Number(v), p, m.width); else out.writeUIntBE(Number(v), p, m.width);
        break;
      }
      case 'fill': {
        const p = place(m);
        if (p !== undefined) out.fill(m.value, p, Math.min(out.length, p + m.length));
        break;
      }
      case 'copy': {
        const p = place(m);
        if (p !== undefined && m.from < out.length) out.copy(out, p, m.from, Math.min(out.length, m.from + m.length));
        break;
      }
      case 'truncate':
        out = out.subarray(0, Math.min(m.at, out.length));
        break;
      case 'extend':
        out = Buffer.concat([out, Buffer.alloc(m.length, m.value)]);
        break;
    }
  }
  return out;
}
