/**
 * The service as the agent sees it (docs/formats/agent-protocol.md), behind one interface so the
 * replication engine knows nothing of HTTP: the engine is tested against the real service over
 * HttpTransport, and the same interface leaves room for other carriers.
 */
import type { Readable } from 'node:stream';
import type {
  CommitStatus, DigestsResponse, DiskState, DiskStatus, GrantBody, GrantResponse, RegisterBody, VmStatus,
} from '../../shared/protocol/schemas.js';

// The protocol's shapes, from the schemas both sides use (shared/protocol/schemas.ts).
export type { CommitStatus, DiskState, DiskStatus, VmStatus };
export type VmRegistration = RegisterBody;
export type Frequency = VmRegistration['frequency'];
export type GrantRequest = GrantBody;
export type Grant = GrantResponse;
/** Blocks that read as zeros in the replica are omitted. */
export type BlockDigests = DigestsResponse;

export interface ObjectCommit {
  generation: number;
  key: string;
  size: number;
  sha256: string;
  consistency: 'crash' | 'application';
  createdAt: string;
}

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
