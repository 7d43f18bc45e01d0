/**
 * AgentTransport over HTTPS with the agent's client certificate (docs/formats/agent-protocol.md).
 * Every call names its operation in errors; 5xx answers and unreachable services are retryable
 * (isRetryable), the engine decides when to retry. Every answer is checked against the protocol's
 * response schemas (shared/protocol/schemas.ts) before the engine sees it.
 */
import type { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import {
  commitResponseSchema, digestsResponseSchema, grantResponseSchema, vmStatusSchema,
} from '../../shared/protocol/schemas.js';
import type { IdentityFiles } from '../state/store.js';
import { sendOk, sendParsed } from './http-client.js';
import type { TlsOptions } from './http-client.js';
import type {
  AgentTransport, BlockDigests, CommitStatus, Grant, GrantRequest, ObjectCommit, VmRegistration, VmStatus,
} from './types.js';

export class HttpTransport implements AgentTransport {
  private readonly tls: TlsOptions;

  constructor(private readonly baseUrl: string, identity: Pick<IdentityFiles, 'keyPem' | 'certPem' | 'caPem'>) {
    this.tls = { ca: identity.caPem, key: identity.keyPem, cert: identity.certPem };
  }

  static fromIdentity(files: IdentityFiles): HttpTransport {
    return new HttpTransport(files.identity.serviceUrl, files);
  }

  private url(path: string): string {
    return new URL(path, this.baseUrl).toString();
  }

  private vmPath(vm: string, rest = ''): string {
    return `/v1/vms/${encodeURIComponent(vm)}${rest}`;
  }

  private diskPath(vm: string, disk: string, rest: string): string {
    return this.vmPath(vm, `/disks/${encodeURIComponent(disk)}${rest}`);
  }

  registerVm(vm: string, registration: VmRegistration): Promise<VmStatus> {
    return sendParsed(vmStatusSchema, { method: 'PUT', url: this.url(this.vmPath(vm)), json: registration, tls: this.tls });
  }

  async unregisterVm(vm: string): Promise<void> {
    await sendOk({ method: 'DELETE', url: this.url(this.vmPath(vm)), tls: this.tls });
  }

  vmStatus(vm: string): Promise<VmStatus> {
    return sendParsed(vmStatusSchema, { method: 'GET', url: this.url(this.vmPath(vm)), tls: this.tls });
  }

  grant(vm: string, disk: string, request: GrantRequest): Promise<Grant> {
    return sendParsed(grantResponseSchema, { method: 'POST', url: this.url(this.diskPath(vm, disk, '/grants')), json: request, tls: this.tls });
  }

  async upload(grant: Grant, body: Readable, size: number): Promise<void> {
    // The service's own upload route sits on the agent endpoint (under the name in its public URL,
    // which may differ from the one the agent was given): trust the pinned CA besides the public
    // roots. The client certificate goes only to the service's own origin.
    const sameOrigin = new URL(grant.url).origin === new URL(this.baseUrl).origin;
    await sendOk({
      method: grant.method, url: grant.url, body,
      headers: { ...grant.headers, 'content-length': String(size) },
      tls: sameOrigin ? this.tls : { ca: [...rootCertificates, this.tls.ca!].join('\n') },
      timeoutMs: 300_000,
    });
  }

  async commitLog(vm: string, disk: string, commit: ObjectCommit & { sequence: number }): Promise<CommitStatus> {
    const r = await sendParsed(commitResponseSchema, { method: 'POST', url: this.url(this.diskPath(vm, disk, '/commits')), json: commit, tls: this.tls });
    return r.status;
  }

  async commitChunk(vm: string, disk: string, commit: ObjectCommit & { index: number }): Promise<CommitStatus> {
    const { consistency: _c, ...body } = commit;
    const r = await sendParsed(commitResponseSchema, { method: 'POST', url: this.url(this.diskPath(vm, disk, '/chunks')), json: body, tls: this.tls });
    return r.status;
  }

  async completeInitial(vm: string, disk: string, body: { generation: number; mode: 'full' | 'delta'; chunkCount: number; consistency: 'crash' | 'application'; createdAt: string }): Promise<CommitStatus> {
    const r = await sendParsed(commitResponseSchema, { method: 'POST', url: this.url(this.diskPath(vm, disk, '/initial')), json: body, tls: this.tls });
    return r.status;
  }

  digests(vm: string, disk: string, query: { blockSize: number; offset: number; length: number }): Promise<BlockDigests> {
    const qs = new URLSearchParams({ blockSize: String(query.blockSize), offset: String(query.offset), length: String(query.length) });
    return sendParsed(digestsResponseSchema, { method: 'GET', url: this.url(this.diskPath(vm, disk, `/digests?${qs}`)), tls: this.tls });
  }
}
