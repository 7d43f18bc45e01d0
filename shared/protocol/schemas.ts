/**
 * The agent protocol v1 (docs/formats/agent-protocol.md) as zod schemas, the one definition both
 * sides use: the service checks every request body with the request schemas (strict: an unknown field
 * is refused, §1), the agent checks every response with the response schemas (§12: an unknown field is
 * ignored, an unknown state, action or status is an error, never guessed at).
 */
import { z } from 'zod';
import {
  DiskBuses, Firmwares, GuestOses, MaxAddressesPerReportedNic, MaxCpus, MaxMemoryMiB, MaxReportedNics, MinCpus, MinMemoryMiB, NicModels,
  parseMacAddress, parseSourceAddress,
} from './vm-config.js';

// Limits (§1, §3.1, §5.1, §7.1).
export const MaxDisksPerVm = 64;
export const MinVirtualSize = 1 << 20;
export const MaxVirtualSize = 64 * 2 ** 40;
export const MaxGeneration = 2 ** 32 - 1;
export const MaxLogBytes = 4 * 2 ** 30;
export const MaxChunkBytes = 2 ** 30;
export const MaxManifestBytes = 16 * 2 ** 20;
export const MaxCsrPemBytes = 16 * 1024;
export const MaxTokenLength = 8192;
/** Ids chosen by agents: lower case so replica paths cannot collide on case-insensitive file systems. */
export const IdPattern = /^[a-z0-9][a-z0-9_-]{0,63}$/;

const id = z.string().regex(IdPattern, 'must be 1 to 64 of [a-z0-9_-], starting with a letter or digit');
const csr = z.string().min(1).max(MaxCsrPemBytes);
const generation = z.number().int().min(1).max(MaxGeneration);
const seq = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const size = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lower-case hex digits');
const time = z.string().max(64).refine((s) => !Number.isNaN(Date.parse(s)), 'must be an RFC 3339 time');
const key = z.string().min(1).max(1024);
const consistency = z.enum(['crash', 'application']);
const pem = z.string().min(1);

export const frequencySeconds = { '30s': 30, '5m': 300, '15m': 900 } as const;

// Requests (agent → service), strict.

/** §3.1 POST /v1/enroll */
export const enrollSchema = z.strictObject({ token: z.string().min(1).max(MaxTokenLength), serverName: z.string().min(1).max(253), csr });
/** §3.2 POST /v1/renew */
export const renewSchema = z.strictObject({ csr });

/** §5.1 the hardware the VM has at the source, as its agent reports it (each field optional). */
export const reportedHardwareSchema = z.strictObject({
  firmware: z.enum(Firmwares).optional(),
  secureBoot: z.boolean().optional(),
  cpus: z.number().int().min(MinCpus).max(MaxCpus).optional(),
  memoryMiB: z.number().int().min(MinMemoryMiB).max(MaxMemoryMiB).optional(),
  guestOs: z.enum(GuestOses).optional(),
}).refine((h) => !(h.secureBoot && h.firmware !== 'uefi'), { message: 'secureBoot needs firmware uefi', path: ['secureBoot'] });
export type ReportedHardware = z.infer<typeof reportedHardwareSchema>;

const mac = z.string().max(64).superRefine((s, c) => {
  const m = parseMacAddress(s);
  if (!m.ok) c.addIssue({ code: 'custom', message: m.reason });
});
const sourceAddress = z.string().max(64).superRefine((s, c) => {
  const a = parseSourceAddress(s);
  if (!a.ok) c.addIssue({ code: 'custom', message: a.reason });
});

/** §5.1 a NIC of the VM at the source: its MAC, model and the addresses it has there. */
export const reportedNicSchema = z.strictObject({
  mac,
  model: z.enum(NicModels).optional(),
  addresses: z.array(sourceAddress).max(MaxAddressesPerReportedNic).default([]),
});
export type ReportedNic = z.infer<typeof reportedNicSchema>;

/** §5.1 PUT /v1/vms/{vm} */
export const registerSchema = z.strictObject({
  displayName: z.string().min(1).max(128).optional(),
  disks: z.array(z.strictObject({
    id,
    virtualSize: z.number().int().min(MinVirtualSize).max(MaxVirtualSize).refine((n) => n % 512 === 0, 'must be a multiple of 512'),
    format: z.enum(['vhdx', 'vhd', 'raw']),
    bus: z.enum(DiskBuses).optional(),
  })).min(1).max(MaxDisksPerVm).refine((d) => new Set(d.map((x) => x.id)).size === d.length, 'disk ids must be unique'),
  frequency: z.enum(['30s', '5m', '15m']),
  history: z.number().int().min(0).max(24),
  appConsistentEvery: z.number().int().min(0).max(12),
  compression: z.enum(['none', 'zstd', 'lz4']),
  hardware: reportedHardwareSchema.optional(),
  nics: z.array(reportedNicSchema).max(MaxReportedNics).superRefine((list, c) => {
    const seen = new Set<string>();
    for (const [i, n] of list.entries()) {
      const m = parseMacAddress(n.mac);
      if (m.ok && seen.has(m.mac)) c.addIssue({ code: 'custom', path: [i, 'mac'], message: `${m.mac} is given twice` });
      if (m.ok) seen.add(m.mac);
    }
  }).optional(),
});
export type RegisterBody = z.infer<typeof registerSchema>;

/** §7.1 POST /v1/vms/{vm}/disks/{disk}/grants */
export const grantSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('log'), generation, sequence: seq.min(1) }),
  z.strictObject({ kind: z.literal('chunk'), generation, index: seq }),
  z.strictObject({ kind: z.literal('manifest'), generation }),
]);
export type GrantBody = z.infer<typeof grantSchema>;

/** §10 POST /v1/vms/{vm}/disks/{disk}/commits; cycle and capturedAt come together or not at all. */
export const commitSchema = z.strictObject({
  generation, sequence: seq.min(1), key, size, sha256, consistency, createdAt: time,
  cycle: seq.min(1).optional(), capturedAt: time.optional(),
}).refine((c) => (c.cycle === undefined) === (c.capturedAt === undefined), { message: 'cycle and capturedAt come together', path: ['cycle'] });
export type CommitBody = z.infer<typeof commitSchema>;

/** §8 POST /v1/vms/{vm}/disks/{disk}/chunks */
export const chunkSchema = z.strictObject({ generation, index: seq, key, size, sha256, createdAt: time });
export type ChunkBody = z.infer<typeof chunkSchema>;

/** §8 POST /v1/vms/{vm}/disks/{disk}/initial */
export const initialSchema = z.strictObject({
  generation, mode: z.enum(['full', 'delta']), chunkCount: z.number().int().min(0).max(2 ** 24), consistency, createdAt: time,
});
export type InitialBody = z.infer<typeof initialSchema>;

/** §9 GET /v1/vms/{vm}/disks/{disk}/digests query */
export const digestsQuerySchema = z.strictObject({
  blockSize: z.coerce.number().int().min(64 * 1024).max(64 * 2 ** 20).refine((n) => (n & (n - 1)) === 0, 'must be a power of two'),
  offset: z.coerce.number().int().min(0).max(MaxVirtualSize).default(0),
  length: z.coerce.number().int().min(1).max(2 ** 30).default(2 ** 30),
});

// Responses (service → agent): unknown fields are dropped, unknown enum values refused.

/** §3.3 GET /v1/ca */
export const caResponseSchema = z.object({ certificate: pem, fingerprint: z.string().optional() });

/** §3.1 and §3.2: the answer to enroll and renew. */
export const enrollResponseSchema = z.object({
  certificate: pem,
  caChain: z.array(pem),
  tenant: z.string().min(1),
  serverName: z.string().min(1),
  notAfter: time,
  tenantReplicaKey: z.looseObject({ kty: z.string() }),
});
export type EnrollResponse = z.infer<typeof enrollResponseSchema>;

/** §3.4 GET /v1/replica-key: the tenant's current replica public key. */
export const replicaKeyResponseSchema = z.object({ tenantReplicaKey: z.looseObject({ kty: z.string() }) });

export const diskStates = ['initial_required', 'initial_in_progress', 'replicating', 'resync_required', 'unprotected'] as const;
export type DiskState = (typeof diskStates)[number];

/** §5.3 a disk of the VM status document. */
export const diskStatusSchema = z.object({
  id,
  virtualSize: size,
  state: z.enum(diskStates),
  resyncReason: z.string().nullable(),
  generation: z.number().int().min(0).max(MaxGeneration),
  baseComplete: z.boolean(),
  appliedSequence: seq,
  nextSequence: seq,
  pendingLogs: seq,
  pendingBytes: size,
  expect: z.object({ action: z.enum(['initial', 'logs', 'resync']), generation: z.number().int().min(0).max(MaxGeneration), nextSequence: seq }),
});
export type DiskStatus = z.infer<typeof diskStatusSchema>;

/** §5.3 GET /v1/vms/{vm}, and the answer to PUT /v1/vms/{vm}. */
export const vmStatusSchema = z.object({
  vm: id,
  state: z.enum(diskStates),
  health: z.enum(['normal', 'warning', 'critical']),
  lastAppliedAt: time.nullable(),
  disks: z.array(diskStatusSchema),
});
export type VmStatus = z.infer<typeof vmStatusSchema>;

/** §7.1 the answer to a grant request. */
export const grantResponseSchema = z.object({
  url: z.url(),
  method: z.string().min(1),
  headers: z.record(z.string(), z.string()),
  expiresAt: time,
  key,
  maxSize: size,
});
export type GrantResponse = z.infer<typeof grantResponseSchema>;

export const commitStatusSchema = z.enum(['accepted', 'duplicate']);
export type CommitStatus = z.infer<typeof commitStatusSchema>;
/** §8 and §10: the answer to chunks, initial and commits. */
export const commitResponseSchema = z.object({ status: commitStatusSchema });

/** §9 the answer to a digests query. */
export const digestsResponseSchema = z.object({
  generation: z.number().int().min(0).max(MaxGeneration),
  appliedSequence: seq,
  virtualSize: size,
  blockSize: size,
  offset: size,
  length: size,
  algorithm: z.literal('sha256'),
  blocks: z.array(z.object({ index: seq, sha256 })),
});
export type DigestsResponse = z.infer<typeof digestsResponseSchema>;

/** §11 every error response. */
export const errorResponseSchema = z.object({
  error: z.object({ code: z.string(), reason: z.string().optional(), message: z.string() }),
});

// Commands (§13): the service's way to reach an agent over the agent's own outbound connection.

/** The longest a GET /v1/commands may wait for a command (seconds). */
export const MaxCommandWaitSeconds = 25;
export const commandKinds = ['planned-failover', 'failback-apply', 'failback-start', 'failback-resume'] as const;
export type CommandKind = (typeof commandKinds)[number];
export const commandStates = ['queued', 'delivered', 'running', 'done', 'failed', 'cancelled'] as const;
export type CommandState = (typeof commandStates)[number];
/** An agent process's instance id: a fresh random id per process, so a restarted agent is told apart. */
export const InstancePattern = /^[A-Za-z0-9_-]{8,64}$/;

/** §13.1 GET /v1/commands query */
export const commandsQuerySchema = z.strictObject({
  wait: z.coerce.number().int().min(0).max(MaxCommandWaitSeconds).default(0),
  instance: z.string().regex(InstancePattern, 'must be 8 to 64 of [A-Za-z0-9_-]'),
});
/** §13.2 POST /v1/commands/{id}/progress */
export const commandProgressSchema = z.strictObject({ step: z.string().min(1).max(64), detail: z.string().max(1024).optional() });
export type CommandProgressBody = z.infer<typeof commandProgressSchema>;
/** §13.3 POST /v1/commands/{id}/result */
export const commandResultSchema = z.discriminatedUnion('ok', [
  z.strictObject({ ok: z.literal(true), result: z.record(z.string(), z.unknown()) }),
  z.strictObject({ ok: z.literal(false), error: z.string().min(1).max(4096) }),
]);
export type CommandResultBody = z.infer<typeof commandResultSchema>;
/** §13.4 the result of a planned-failover command: the final cycle, shipped and acknowledged. */
export const plannedFailoverResultSchema = z.object({ cycle: seq.min(1), capturedAt: time, consistency, shutdown: z.enum(['hook', 'operator']) });
export type PlannedFailoverResult = z.infer<typeof plannedFailoverResultSchema>;
/** §13.7 the payload of a failback-apply command: the last reverse log of each disk the agent must apply. */
export const failbackApplyPayloadSchema = z.object({
  failback: z.string().min(1),
  until: z.record(z.string(), z.object({ generation: seq.min(1), sequence: seq.min(1) })),
});
export type FailbackApplyPayload = z.infer<typeof failbackApplyPayloadSchema>;
/** §13.7 a range the agent received in reverse logs, and the SHA-256 of what its disk holds there after applying. */
export const receivedRangeSchema = z.object({ offset: seq, length: seq.min(1), sha256 });
/** §13.7 the result of a failback-apply command: per disk, where it stands and its received ranges' digests. */
export const failbackApplyResultSchema = z.object({
  disks: z.array(z.object({ disk: z.string().min(1), generation: seq, sequence: seq, ranges: z.array(receivedRangeSchema) })),
});
export type FailbackApplyResult = z.infer<typeof failbackApplyResultSchema>;
/** §13.8 the result of a failback-start command: how the VM was started here. */
export const failbackStartResultSchema = z.object({ start: z.enum(['hook', 'none']) });
export type FailbackStartResult = z.infer<typeof failbackStartResultSchema>;
/** §13.5 POST /v1/vms/{vm}/failovers */
export const agentFailoverSchema = z.strictObject({ kind: z.literal('planned') });

/** §13.1 a command as delivered. kind is a string: the agent reports an unknown kind as failed (§12). */
export const commandSchema = z.object({
  id,
  kind: z.string().min(1),
  vm: id,
  payload: z.record(z.string(), z.unknown()),
  createdAt: time,
  expiresAt: time,
  deliveries: seq,
});
export type AgentCommand = z.infer<typeof commandSchema>;
export const commandsResponseSchema = z.object({ commands: z.array(commandSchema) });
/** §13.2, §13.3 the answer to progress and result: the command's state (cancelled: stop). */
export const commandStateResponseSchema = z.object({ state: z.enum(commandStates) });
/** §13.5, §13.6 a failover as the agent sees it. */
export const agentFailoverResponseSchema = z.object({
  id: z.string().min(1),
  vm: id,
  kind: z.string(),
  state: z.string(),
  goal: z.string(),
  error: z.string().nullable(),
  steps: z.array(z.object({ step: z.string(), status: z.string(), detail: z.string().nullable(), at: time })),
});
export type AgentFailoverResponse = z.infer<typeof agentFailoverResponseSchema>;

// Envelope keys (§14): the agent's own recipient key, so the service can seal reverse logs to it.

/** RFC 7638 thumbprints are 43 base64url characters (SHA-256). */
const kid = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be the key\'s RFC 7638 SHA-256 thumbprint (43 base64url characters)');
const b64u = z.string().min(1).max(256).regex(/^[A-Za-z0-9_-]+$/, 'must be base64url');
/** A recipient public key: X25519 (OKP) or P-256 (EC), no private part. */
export const envelopePublicJwkSchema = z.union([
  z.strictObject({ kty: z.literal('OKP'), crv: z.literal('X25519'), x: b64u, kid: kid.optional() }),
  z.strictObject({ kty: z.literal('EC'), crv: z.literal('P-256'), x: b64u, y: b64u, kid: kid.optional() }),
]);
/** §14.1 PUT /v1/envelope-keys */
export const envelopeKeySchema = z.strictObject({ jwk: envelopePublicJwkSchema });
/** §14.1 the answer: the key's id and whether it is the newest (the one the service seals to). */
export const envelopeKeyResponseSchema = z.object({ kid, registeredAt: time, newest: z.boolean() });
/** §14.2 GET /v1/envelope-keys */
export const envelopeKeysResponseSchema = z.object({ keys: z.array(z.object({ kid, registeredAt: time, newest: z.boolean() })) });

// Reverse replication (§15): logs of what a failed-over VM wrote at the hoster, for its agent.

export const MaxReverseLogsPerPage = 1000;
/** §15.2 GET /v1/vms/{vm}/disks/{disk}/reverse/logs query: logs after (generation, sequence). */
export const reverseLogsQuerySchema = z.strictObject({
  generation: z.coerce.number().int().min(0).max(MaxGeneration).default(0),
  after: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
  limit: z.coerce.number().int().min(1).max(MaxReverseLogsPerPage).default(100),
});
/** §15.3 POST /v1/vms/{vm}/disks/{disk}/reverse/applied */
export const reverseAppliedSchema = z.strictObject({ generation, sequence: seq.min(1) });

/** §15.1 one disk's reverse replication as the service sees it. */
export const reverseDiskSchema = z.object({
  disk: id,
  failover: z.string().min(1),
  generation,
  latestSequence: seq,
  appliedGeneration: z.number().int().min(0).max(MaxGeneration),
  appliedSequence: seq,
  appliedAt: time.nullable(),
  pendingLogs: seq,
  pendingBytes: size,
  lastCapturedAt: time.nullable(),
});
export type ReverseDisk = z.infer<typeof reverseDiskSchema>;
/** §15.1 GET /v1/vms/{vm}/reverse */
export const reverseStatusResponseSchema = z.object({ vm: id, disks: z.array(reverseDiskSchema) });
export type ReverseStatusResponse = z.infer<typeof reverseStatusResponseSchema>;
/** §15.2 a reverse log and a grant to download it. */
export const reverseLogSchema = z.object({
  generation,
  sequence: seq.min(1),
  kind: z.enum(['delta', 'incremental']),
  key,
  size,
  sha256,
  kid,
  cycle: seq.min(1),
  capturedAt: time,
  dataBytes: size,
  get: z.object({ url: z.string().url(), method: z.literal('GET'), headers: z.record(z.string(), z.string()), expiresAt: time }),
});
export type ReverseLog = z.infer<typeof reverseLogSchema>;
export const reverseLogsResponseSchema = z.object({ disk: id, logs: z.array(reverseLogSchema) });
