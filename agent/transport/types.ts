/**
 * The service as the agent sees it (docs/formats/agent-protocol.md), behind one interface so the
 * replication engine knows nothing of HTTP: the engine is tested against the real service over
 * HttpTransport, and the same interface leaves room for other carriers.
 */
import type { Readable } from 'node:stream';

export type Frequency = '30s' | '5m' | '15m';

export interface VmRegistration {
  displayName?: string;
  disks: { id: string; virtualSize: number; format: 'raw' | 'vhd' | 'vhdx' }[];
  frequency: Frequency;
  history: number;
  appConsistentEvery: number;
  compression: 'zstd' | 'lz4' | 'none';
}

export type DiskState = 'initial_required' | 'initial_in_progress' | 'replicating' | 'resync_required' | 'unprotected';

export interface DiskStatus {
  id: string;
  virtualSize: number;
  state: DiskState;
  resyncReason: string | null;
  generation: number;
  baseComplete: boolean;
  appliedSequence: number;
  nextSequence: number;
  pendingLogs: number;
  pendingBytes: number;
  expect: { action: 'initial' | 'logs' | 'resync'; generation: number; nextSequence: number };
}

export interface VmStatus {
  vm: string;
  state: string;
  health: string;
  lastAppliedAt: string | null;
  disks: DiskStatus[];
}

export type GrantRequest =
  | { kind: 'log'; generation: number; sequence: number }
  | { kind: 'chunk'; generation: number; index: number }
  | { kind: 'manifest'; generation: number };

export interface Grant {
  url: string;
  method: string;
  headers: Record<string, string>;
  expiresAt: string;
  key: string;
  maxSize: number;
}

export interface ObjectCommit {
  generation: number;
  key: string;
  size: number;
  sha256: string;
  consistency: 'crash' | 'application';
  createdAt: string;
}

export interface BlockDigests {
  generation: number;
  appliedSequence: number;
  virtualSize: number;
  blockSize: number;
  offset: number;
  length: number;
  algorithm: 'sha256';
  /** Blocks that read as zeros in the replica are omitted. */
  blocks: { index: number; sha256: string }[];
}

export type CommitStatus = 'accepted' | 'duplicate';

export interface AgentTransport {
  registerVm(vm: string, registration: VmRegistration): Promise<VmStatus>;
  unregisterVm(vm: string): Promise<void>;
  vmStatus(vm: string): Promise<VmStatus>;
  grant(vm: string, disk: string, request: GrantRequest): Promise<Grant>;
  /** Uploads an object of exactly size bytes through a grant (a presigned URL or the service's route). */
  upload(grant: Grant, body: Readable, size: number): Promise<void>;
  commitLog(vm: string, disk: string, commit: ObjectCommit & { sequence: number }): Promise<CommitStatus>;
  commitChunk(vm: string, disk: string, commit: ObjectCommit & { index: number }): Promise<CommitStatus>;
  completeInitial(vm: string, disk: string, body: { generation: number; mode: 'full' | 'delta'; chunkCount: number; consistency: 'crash' | 'application'; createdAt: string }): Promise<CommitStatus>;
  digests(vm: string, disk: string, query: { blockSize: number; offset: number; length: number }): Promise<BlockDigests>;
}
