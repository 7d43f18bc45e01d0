/**
 * The agent's state files and their schemas. A VM's state is split by writer so no two processes
 * ever write the same file: config.json is written by the commands (protect, pause, resume), and
 * progress.json only by the replication engine (run). Version fields let a later agent migrate.
 */
import { z } from 'zod';
import { DiskBuses, Firmwares, GuestOses, NicModels } from '../../shared/protocol/vm-config.js';

export const StateVersion = 1;

/** VM names become directory names and object-key segments; the agent protocol's identifier rule. */
export const VmNamePattern = /^[a-z0-9][a-z0-9_-]{0,63}$/;
export const DiskIdPattern = /^disk[0-9]{1,3}$/;
export const Frequencies = { '30s': 30_000, '5m': 300_000, '15m': 900_000 } as const;
export const MaxHistory = 24;

export const InitialMode = z.discriminatedUnion('mode', [
  z.object({ mode: z.literal('network') }),
  z.object({ mode: z.literal('media'), dir: z.string().min(1) }),
  z.object({ mode: z.literal('existing') }),
]);
export type InitialMode = z.infer<typeof InitialMode>;

export const Compression = z.enum(['zstd', 'lz4', 'none']);
export type Compression = z.infer<typeof Compression>;

export const DiskConfig = z.object({
  id: z.string().regex(DiskIdPattern),
  /** The image file (the file source), or the file qemu has open for the node (the qemu source, for messages). */
  path: z.string().min(1),
  /**
   * The qemu source: the disk's format node in the VM's block graph (query-named-block-nodes). The
   * hyperv source: the disk's controller slot (`SCSI:0:1`), which stays when checkpoints move the
   * VM onto differencing disks. The libvirt source: the disk's target device in the domain (`vda`).
   */
  node: z.string().min(1).optional(),
});
export type DiskConfig = z.infer<typeof DiskConfig>;

/**
 * The VM's hardware at the source as `protect` was told it (--firmware, --cpus, …): reported with the
 * VM's registration; a field never given is absent and not reported.
 */
export const HardwareConfig = z.object({
  firmware: z.enum(Firmwares).optional(),
  secureBoot: z.boolean().optional(),
  cpus: z.number().int().positive().optional(),
  memoryMiB: z.number().int().positive().optional(),
  guestOs: z.enum(GuestOses).optional(),
  /** Every disk's bus; the boot order is the disks' order. */
  diskBus: z.enum(DiskBuses).optional(),
});
export type HardwareConfig = z.infer<typeof HardwareConfig>;

/** A NIC of the VM at the source (--nic MAC[,model=…][,ip=…]): MAC normalised, addresses as given. */
export const NicConfig = z.object({
  mac: z.string(),
  model: z.enum(NicModels).optional(),
  addresses: z.array(z.string()),
});
export type NicConfig = z.infer<typeof NicConfig>;

/**
 * Where the disks are read (docs/agent.md "Sources"): `file` images at rest (or frozen by the hooks),
 * read whole by the scan tracker; `qemu` a running QEMU through its QMP socket, its dirty bitmaps and
 * point-in-time views exported over NBD; `hyperv` a Hyper-V VM through PowerShell on its host,
 * production checkpoints and resilient change tracking; `libvirt` a libvirt domain through virsh, its
 * checkpoints and backup jobs in pull mode. Absent: file.
 */
export const SourceConfig = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('file') }),
  z.object({
    kind: z.literal('qemu'),
    /** The VM's QMP socket, for the agent alone (qemu takes one client per socket). */
    qmp: z.string().min(1),
    /** qemu-guest-agent's socket: with it, points are application-consistent (guest-fsfreeze). */
    guestAgent: z.string().min(1).nullable(),
    /** Dirty bitmap granularity in bytes (absent: qemu's, the qcow2 cluster size). */
    granularity: z.number().int().positive().optional(),
  }),
  z.object({
    kind: z.literal('hyperv'),
    /** The VM's name on the Hyper-V host (any text Hyper-V allows; quoted in every script). */
    vmName: z.string().min(1).max(100),
    /** The host, reached by OpenSSH (shared/hyperv/runner.ts). */
    host: z.string().min(1),
    user: z.string().min(1),
    port: z.number().int().positive().max(65535).optional(),
    identityFile: z.string().min(1).optional(),
    knownHostsFile: z.string().min(1).optional(),
    /** Where the agent reads the host's disk files: a Windows directory and the same directory here (an SMB mount); none: the paths as the host names them. */
    paths: z.array(z.object({ windows: z.string().min(3), local: z.string().min(1) })).default([]),
  }),
  z.object({
    kind: z.literal('libvirt'),
    /** The domain's name. */
    domain: z.string().min(1),
    /** The libvirt connection URI given to virsh (null: virsh's default). */
    connect: z.string().min(1).nullable(),
    /**
     * Where libvirt puts each cycle's scratch files and NBD socket: writable by the libvirt daemon,
     * reachable by its qemu.
     */
    workDir: z.string().min(1),
    /** The domain has a qemu-guest-agent channel: points are frozen with domfsfreeze when due. */
    guestAgent: z.boolean(),
  }),
]);
export type SourceConfig = z.infer<typeof SourceConfig>;

export const VmConfig = z.object({
  version: z.literal(StateVersion),
  name: z.string().regex(VmNamePattern),
  disks: z.array(DiskConfig).min(1).max(64),
  frequencyMs: z.union([z.literal(30_000), z.literal(300_000), z.literal(900_000)]),
  history: z.number().int().min(0).max(MaxHistory),
  appConsistentEveryMs: z.number().int().positive().nullable(),
  preSnapshot: z.string().nullable(),
  postSnapshot: z.string().nullable(),
  /** Shuts the VM down at the source for a planned failover (agent/commands/planned-failover.ts); null: the operator does. */
  shutdownHook: z.string().nullable().optional(),
  /** Starts the VM here when it fails back (agent/commands/failback.ts); null: the operator does. */
  startHook: z.string().nullable().optional(),
  compression: Compression,
  initial: InitialMode,
  startAt: z.iso.datetime().nullable(),
  bandwidthBytesPerSec: z.number().int().positive().nullable(),
  paused: z.boolean(),
  createdAt: z.iso.datetime(),
  /** Reported with the registration (absent: nothing to report). */
  hardware: HardwareConfig.optional(),
  /** Reported with the registration, the whole list (absent: none reported). */
  nics: z.array(NicConfig).optional(),
  source: SourceConfig.optional(),
});
export type VmConfig = z.infer<typeof VmConfig>;

export const InitialProgress = z.object({
  state: z.enum(['pending', 'running', 'done']),
  /** full: the whole disk; delta: only blocks differing from the service's digests (existing, resync). */
  mode: z.enum(['full', 'delta']),
  /** Generation of the base being sent (0 before it started). */
  generation: z.number().int().nonnegative(),
  /** Virtual size the base covers (fixed when it starts). */
  virtualSize: z.number().int().nonnegative(),
  chunkSize: z.number().int().positive(),
  /** Bitmap of finished chunks, base64, bit i of byte i>>3 (LSB first) = chunk i. */
  chunksDone: z.string(),
  /**
   * A full base's plan, a bitmap as chunksDone's over the disk's chunkSize slots: the slots that may
   * hold data, read as chunks 0, 1, … in order; the others are holes, no chunk at all. Absent (a delta
   * base, or one an older agent began): every slot is a chunk, chunk i = slot i.
   */
  slots: z.string().optional(),
  bytesTotal: z.number().int().nonnegative(),
  bytesDone: z.number().int().nonnegative(),
  bytesSent: z.number().int().nonnegative(),
  /**
   * The VM cycle in which this base started and its capture time (ms): every chunk of the base carries
   * them, also when the base resumes in a later cycle. Null for a base begun by an older agent.
   */
  cycle: z.number().int().positive().nullable().optional(),
  capturedMs: z.number().int().nonnegative().nullable().optional(),
});
export type InitialProgress = z.infer<typeof InitialProgress>;

/**
 * An object sealed but not yet acknowledged. A log is spooled to a file: after a restart it is
 * uploaded again from the spool (the same bytes: objects are write-once) and committed, never
 * re-sealed. A chunk is held in memory only (spool ""): after a restart its commit is retried with
 * the recorded size and digest; the service accepts it only if that very object was stored, and
 * otherwise ("object missing" or "size mismatch") nothing was committed under its key and the chunk
 * is sealed again.
 */
export const InflightObject = z.object({
  kind: z.enum(['log', 'chunk']),
  generation: z.number().int().positive(),
  /** Sequence of a log, index of a chunk. */
  number: z.number().int().nonnegative(),
  spool: z.string(),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  consistency: z.enum(['crash', 'application']),
  createdAt: z.iso.datetime(),
  /** Bytes the tracker reported changed for this log (for status). */
  changedBytes: z.number().int().nonnegative(),
  /** The VM cycle the object was sealed in and its capture time, committed with it (null: an older agent's). */
  cycle: z.number().int().positive().nullable().default(null),
  capturedAt: z.iso.datetime().nullable().default(null),
});
export type InflightObject = z.infer<typeof InflightObject>;

export const DiskProgress = z.object({
  /** Generation of change tracking; a new one starts after anything that breaks continuity. */
  generation: z.number().int().nonnegative(),
  /** Sequence of the next log of this generation. */
  nextSequence: z.number().int().nonnegative(),
  /** Virtual size the service last heard of (a grown disk is noticed by comparing). */
  virtualSize: z.number().int().nonnegative(),
  initial: InitialProgress,
  /** Set when the replica must be resynchronized (digest comparison) before cycles resume. */
  resyncReason: z.string().nullable(),
  inflight: z.array(InflightObject),
  /**
   * A live source's tracking as of the last cycle (for status): qemu, its node, the bitmap recording
   * and its granularity; hyperv, the disk's slot, the reference point changes are counted from, 0;
   * libvirt, the disk's target, the checkpoint the next cycle reads from, 0.
   */
  tracking: z.object({ node: z.string(), bitmap: z.string(), granularity: z.number().int().nonnegative(), lostAt: z.iso.datetime().nullable() }).optional(),
});
export type DiskProgress = z.infer<typeof DiskProgress>;

export const CycleStats = z.object({
  startedAt: z.iso.datetime(),
  finishedAt: z.iso.datetime(),
  consistency: z.enum(['crash', 'application']),
  changedBytes: z.number().int().nonnegative(),
  sentBytes: z.number().int().nonnegative(),
  logs: z.number().int().nonnegative(),
  outcome: z.enum(['ok', 'missed', 'failed']),
  error: z.string().nullable(),
  warnings: z.array(z.string()),
});
export type CycleStats = z.infer<typeof CycleStats>;

export const VmProgress = z.object({
  version: z.literal(StateVersion),
  registered: z.boolean(),
  /**
   * SHA-256 of the registration the service last accepted: a config whose registration differs
   * (settings, hardware, NICs) is registered again. Absent: registered by an older agent.
   */
  registeredDigest: z.string().nullable().default(null),
  disks: z.record(z.string().regex(DiskIdPattern), DiskProgress),
  lastCycle: CycleStats.nullable(),
  /** Start of the last cycle the service acknowledged: the replica holds the VM as of then. */
  lastCapturedAt: z.iso.datetime().nullable(),
  lastAppConsistentAt: z.iso.datetime().nullable(),
  /** When the replica was last compared with the disk through the service's digests (a delta base). */
  lastVerifiedAt: z.iso.datetime().nullable().default(null),
  /** Changed bytes seen but not yet acknowledged (a failed or missed cycle's). */
  pendingBytes: z.number().int().nonnegative(),
  /**
   * The next VM cycle id: a cycle takes max(nextCycle, its capture time in ms) and records the id + 1
   * here, durably, before any log of it is sealed, so an id is never used twice, also across restarts
   * and a killed engine (docs/formats/agent-state.md).
   */
  nextCycle: z.number().int().positive().default(1),
  counts: z.object({ ok: z.number().int().nonnegative(), missed: z.number().int().nonnegative(), failed: z.number().int().nonnegative() }),
  /**
   * A live source's VM as the hypervisor last described it (vCPUs, memory, firmware, NICs, the guest's
   * addresses), read by the engine each cycle; registered under what config.json says explicitly.
   */
  machine: z.object({ hardware: HardwareConfig, nics: z.array(NicConfig), readAt: z.iso.datetime() }).optional(),
});
export type VmProgress = z.infer<typeof VmProgress>;

export const Identity = z.object({
  version: z.literal(StateVersion),
  serviceUrl: z.url(),
  name: z.string().min(1).max(253),
  tenant: z.string().min(1),
  caFingerprint: z.string().min(1),
  certNotAfter: z.iso.datetime(),
  enrolledAt: z.iso.datetime(),
});
export type Identity = z.infer<typeof Identity>;

export function emptyProgress(): VmProgress {
  return { version: StateVersion, registered: false, registeredDigest: null, disks: {}, lastCycle: null, lastCapturedAt: null, lastAppConsistentAt: null, lastVerifiedAt: null, pendingBytes: 0, nextCycle: 1, counts: { ok: 0, missed: 0, failed: 0 } };
}
