/** Request bodies of the agent protocol (docs/formats/agent-protocol.md), checked before handlers run. */
import { z } from 'zod';
import { MaxCsrPemBytes } from '../trust/ca.js';
import { MaxTokenLength } from '../trust/tokens.js';
import { idPattern } from '../http/json.js';

export const MaxDisksPerVm = 64;
export const MinVirtualSize = 1 << 20;
export const MaxVirtualSize = 64 * 2 ** 40;
export const MaxGeneration = 2 ** 32 - 1;
export const MaxLogBytes = 4 * 2 ** 30;
export const MaxChunkBytes = 2 ** 30;
export const MaxManifestBytes = 16 * 2 ** 20;

const csr = z.string().min(1).max(MaxCsrPemBytes);
const generation = z.number().int().min(1).max(MaxGeneration);
const seq = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lower-case hex digits');
const time = z.string().max(64).refine((s) => !Number.isNaN(Date.parse(s)), 'must be an RFC 3339 time');
const key = z.string().min(1).max(1024);

export const enrollSchema = z.strictObject({ token: z.string().min(1).max(MaxTokenLength), serverName: z.string().min(1).max(253), csr });
export const renewSchema = z.strictObject({ csr });

export const frequencySeconds = { '30s': 30, '5m': 300, '15m': 900 } as const;

export const registerSchema = z.strictObject({
  displayName: z.string().min(1).max(128).optional(),
  disks: z.array(z.strictObject({
    id: z.string().regex(idPattern, 'must be 1 to 64 of [a-z0-9_-], starting with a letter or digit'),
    virtualSize: z.number().int().min(MinVirtualSize).max(MaxVirtualSize).refine((n) => n % 512 === 0, 'must be a multiple of 512'),
    format: z.enum(['vhdx', 'vhd', 'raw']),
  })).min(1).max(MaxDisksPerVm).refine((d) => new Set(d.map((x) => x.id)).size === d.length, 'disk ids must be unique'),
  frequency: z.enum(['30s', '5m', '15m']),
  history: z.number().int().min(0).max(24),
  appConsistentEvery: z.number().int().min(0).max(12),
  compression: z.enum(['none', 'zstd', 'lz4']),
});
export type RegisterBody = z.infer<typeof registerSchema>;

export const grantSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('log'), generation, sequence: seq.min(1) }),
  z.strictObject({ kind: z.literal('chunk'), generation, index: seq }),
  z.strictObject({ kind: z.literal('manifest'), generation }),
]);
export type GrantBody = z.infer<typeof grantSchema>;

export const commitSchema = z.strictObject({
  generation, sequence: seq.min(1), key, size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), sha256,
  consistency: z.enum(['crash', 'application']), createdAt: time,
});
export type CommitBody = z.infer<typeof commitSchema>;

export const chunkSchema = z.strictObject({
  generation, index: seq, key, size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), sha256, createdAt: time,
});
export type ChunkBody = z.infer<typeof chunkSchema>;

export const initialSchema = z.strictObject({
  generation, mode: z.enum(['full', 'delta']), chunkCount: z.number().int().min(0).max(2 ** 24),
  consistency: z.enum(['crash', 'application']), createdAt: time,
});
export type InitialBody = z.infer<typeof initialSchema>;

export const digestsQuerySchema = z.strictObject({
  blockSize: z.coerce.number().int().min(64 * 1024).max(64 * 2 ** 20).refine((n) => (n & (n - 1)) === 0, 'must be a power of two'),
  offset: z.coerce.number().int().min(0).max(MaxVirtualSize).default(0),
  length: z.coerce.number().int().min(1).max(2 ** 30).default(2 ** 30),
});
