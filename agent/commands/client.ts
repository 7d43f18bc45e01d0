/**
 * The agent's side of the command channel (docs/formats/agent-protocol.md §13) over mutual TLS: the
 * long-poll, progress and result of a command, and the planned-failover request the CLI makes. Every
 * answer is checked against the protocol's response schemas before it is used.
 */
import { request } from 'node:https';
import type { z } from 'zod';
import { LifeboatError } from '../../shared/errors.js';
import type { ErrorCode } from '../../shared/errors.js';
import {
  agentFailoverResponseSchema, commandStateResponseSchema, commandsResponseSchema, errorResponseSchema,
} from '../../shared/protocol/schemas.js';
import type { AgentCommand, AgentFailoverResponse, CommandResultBody, CommandState } from '../../shared/protocol/schemas.js';
import type { IdentityFiles } from '../state/store.js';
import { ServiceError, sendParsed } from '../transport/http-client.js';
import type { TlsOptions } from '../transport/http-client.js';

/** A long-poll's answer may take the wait plus this long before the agent gives up on it. */
export const PollSlackMs = 15_000;

export class CommandClient {
  private readonly tls: TlsOptions;

  constructor(private readonly baseUrl: string, identity: Pick<IdentityFiles, 'keyPem' | 'certPem' | 'caPem'>) {
    this.tls = { ca: identity.caPem, key: identity.keyPem, cert: identity.certPem };
  }

  static fromIdentity(files: IdentityFiles): CommandClient {
    return new CommandClient(files.identity.serviceUrl, files);
  }

  private call<S extends z.ZodType>(schema: S, method: string, path: string, json?: unknown, timeoutMs?: number): Promise<z.output<S>> {
    return sendParsed(schema, { method, url: new URL(path, this.baseUrl).toString(), tls: this.tls, ...(json === undefined ? {} : { json }), ...(timeoutMs ? { timeoutMs } : {}) });
  }

  /**
   * §13.1: this agent's deliverable commands, waiting up to waitSeconds for one. An abort ends the
   * request at once (the daemon stopping does not wait for the long-poll) and resolves with none.
   */
  poll(instance: string, waitSeconds: number, signal?: AbortSignal): Promise<AgentCommand[]> {
    const url = new URL(`/v1/commands?${new URLSearchParams({ wait: String(waitSeconds), instance })}`, this.baseUrl);
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return resolve([]);
      const onAbort = () => { req.destroy(); resolve([]); };
      const req = request(url, { method: 'GET', ca: this.tls.ca, key: this.tls.key, cert: this.tls.cert, agent: false, headers: { accept: 'application/json' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => reject(new LifeboatError('unavailable', `service ${url.origin} does not answer: ${err.message}`, { cause: err })));
        res.on('end', () => {
          signal?.removeEventListener('abort', onAbort);
          let body: unknown;
          try {
            body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            body = undefined;
          }
          const status = res.statusCode ?? 0;
          if (status < 200 || status >= 300) {
            const e = errorResponseSchema.safeParse(body);
            const code: ErrorCode = status === 401 ? 'unauthenticated' : status >= 500 ? 'unavailable' : status === 404 ? 'not_found' : 'invalid_argument';
            return reject(new ServiceError(code, `service ${url.origin}: ${e.success ? e.data.error.message : `HTTP ${status}`}`, e.success ? e.data.error.reason : undefined, status));
          }
          const parsed = commandsResponseSchema.safeParse(body);
          if (!parsed.success) return reject(new LifeboatError('corrupt', `service ${url.origin}: unexpected answer to GET /v1/commands: ${parsed.error.issues[0]?.message ?? 'does not match the protocol'}`));
          resolve(parsed.data.commands);
        });
      });
      req.setTimeout(waitSeconds * 1000 + PollSlackMs, () => req.destroy(new Error('timed out')));
      req.on('error', (err) => {
        signal?.removeEventListener('abort', onAbort);
        if (signal?.aborted) resolve([]);
        else reject(new LifeboatError('unavailable', `service ${url.origin} does not answer: ${err.message}`, { cause: err }));
      });
      signal?.addEventListener('abort', onAbort);
      req.end();
    });
  }

  /** §13.2: a step of a running command; answers its state (cancelled: stop before the next step). */
  async progress(id: string, step: string, detail?: string): Promise<CommandState> {
    return (await this.call(commandStateResponseSchema, 'POST', `/v1/commands/${encodeURIComponent(id)}/progress`, { step, ...(detail === undefined ? {} : { detail: detail.slice(0, 1024) }) })).state;
  }

  /** §13.3: the command's one result. */
  async result(id: string, body: CommandResultBody): Promise<CommandState> {
    return (await this.call(commandStateResponseSchema, 'POST', `/v1/commands/${encodeURIComponent(id)}/result`, body)).state;
  }

  /** §13.5: asks the service for a planned failover of the VM. */
  requestPlannedFailover(vm: string): Promise<AgentFailoverResponse> {
    return this.call(agentFailoverResponseSchema, 'POST', `/v1/vms/${encodeURIComponent(vm)}/failovers`, { kind: 'planned' });
  }

  /** §13.6: a failover of one of this agent's VMs, with its steps. */
  failover(id: string): Promise<AgentFailoverResponse> {
    return this.call(agentFailoverResponseSchema, 'GET', `/v1/failovers/${encodeURIComponent(id)}`);
  }
}
