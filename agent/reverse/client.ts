/**
 * The agent's side of agent protocol §14–§15 over its client certificate: registering envelope keys,
 * the reverse status of a VM, listing a disk's reverse logs and downloading one through its grant,
 * and reporting what was applied. Every answer is checked against the protocol's schemas.
 */
import type { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import type { PublicJwk } from '../../shared/crypto/keys.js';
import type { ReverseLog } from '../../shared/protocol/schemas.js';
import {
  envelopeKeyResponseSchema, envelopeKeysResponseSchema, reverseDiskSchema, reverseLogsResponseSchema, reverseStatusResponseSchema,
} from '../../shared/protocol/schemas.js';
import type { IdentityFiles } from '../state/store.js';
import type { TlsOptions } from '../transport/http-client.js';
import { openStream, sendParsed } from '../transport/http-client.js';

export class ReverseClient {
  private readonly tls: TlsOptions;
  private readonly baseUrl: string;

  constructor(files: Pick<IdentityFiles, 'keyPem' | 'certPem' | 'caPem' | 'identity'>) {
    this.tls = { ca: files.caPem, key: files.keyPem, cert: files.certPem };
    this.baseUrl = files.identity.serviceUrl;
  }

  private url(path: string): string {
    return new URL(path, this.baseUrl).toString();
  }

  private diskPath(vm: string, disk: string, rest: string): string {
    return `/v1/vms/${encodeURIComponent(vm)}/disks/${encodeURIComponent(disk)}${rest}`;
  }

  registerKey(jwk: PublicJwk) {
    return sendParsed(envelopeKeyResponseSchema, { method: 'PUT', url: this.url('/v1/envelope-keys'), json: { jwk }, tls: this.tls });
  }

  keys() {
    return sendParsed(envelopeKeysResponseSchema, { method: 'GET', url: this.url('/v1/envelope-keys'), tls: this.tls });
  }

  status(vm: string) {
    return sendParsed(reverseStatusResponseSchema, { method: 'GET', url: this.url(`/v1/vms/${encodeURIComponent(vm)}/reverse`), tls: this.tls });
  }

  logs(vm: string, disk: string, after: { generation: number; sequence: number }, limit = 100) {
    const qs = new URLSearchParams({ generation: String(after.generation), after: String(after.sequence), limit: String(limit) });
    return sendParsed(reverseLogsResponseSchema, { method: 'GET', url: this.url(this.diskPath(vm, disk, `/reverse/logs?${qs}`)), tls: this.tls });
  }

  applied(vm: string, disk: string, generation: number, sequence: number) {
    return sendParsed(reverseDiskSchema, { method: 'POST', url: this.url(this.diskPath(vm, disk, '/reverse/applied')), json: { generation, sequence }, tls: this.tls });
  }

  /** The log's object, streamed from its grant (the service's own route or the store's URL). */
  download(log: ReverseLog): Promise<Readable> {
    // As for uploads: the client certificate goes only to the service's own origin.
    const sameOrigin = new URL(log.get.url).origin === new URL(this.baseUrl).origin;
    return openStream({
      method: 'GET', url: log.get.url, headers: log.get.headers,
      tls: sameOrigin ? this.tls : { ca: [...rootCertificates, this.tls.ca!].join('\n') }, timeoutMs: 300_000,
    });
  }
}
