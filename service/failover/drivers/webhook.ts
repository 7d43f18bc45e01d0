/**
 * The webhook failover driver (docs/failover-drivers.md): every step is handed to the hoster's own
 * orchestrator as an HTTPS POST of JSON, signed as Standard Webhooks (shared/protocol/standard-webhooks.ts). The
 * orchestrator answers at once (2xx with `{state, …}`) or accepts (202, or `{accepted: true}`) and
 * later calls the callback URL with a signed `{requestId, ok, state, reason}`, which the host's HTTP
 * layer hands to handleCallback().
 *
 * Delivery: each attempt has a timeout; 5xx, 408, 429, timeouts and connection errors are retried with
 * exponential backoff and jitter, keeping the webhook-id (the orchestrator's idempotency key) under a
 * new timestamp and signature; any other non-2xx answer (3xx included: no redirects) fails at once.
 * Failure: LifeboatError('unavailable') `webhook <host>: <step> <failover>: <why>`, with the
 * orchestrator's own reason when it gives one; bad configuration is LifeboatError('invalid_argument').
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import ipaddr from 'ipaddr.js';
import { ErrInvalidArgument, ErrUnsupported, LifeboatError } from '../../../shared/errors.js';
import type { NicPlan } from '../network/mappings.js';
import type { PublicIpRule } from '../network/nat.js';
import { readJson, sleep, writeJsonAtomic } from './qemu-files.js';
import type { FailoverDriver, PrepareInput, ReadyProbe, ReadyResult, VmStatus } from './types.js';
import { DefaultToleranceSec, MemoryReplayGuard, newMessageId, parseSecret, type ReplayGuard, signHeaders, verifySignature } from '../../../shared/protocol/standard-webhooks.js';

export interface WebhookDriverConfig {
  /** The orchestrator's endpoint: https, or http to a loopback address only. */
  url: string;
  /** Standard Webhooks secret (`whsec_<base64>`) signing our requests. */
  secret: string;
  /** The secret the orchestrator signs callbacks with (default: `secret`). */
  callbackSecret?: string;
  /** Where the orchestrator calls back; the host routes it to handleCallback(). */
  callbackUrl: string;
  /** PEM CA bundle for an orchestrator behind a private CA. */
  ca?: string;
  /** One attempt (default 30 s, the spec's upper recommendation). */
  requestTimeoutMs?: number;
  /** Attempts in all (default 5). */
  attempts?: number;
  /** First backoff (default 1 s), doubled per attempt, ±25 % jitter. */
  backoffMs?: number;
  /** How long an accepted step waits for its callback (default 10 minutes). */
  callbackTimeoutMs?: number;
  /** Status polling in waitReady (default 5 s). */
  pollMs?: number;
  /** Callback timestamp tolerance (default 300 s). */
  toleranceSec?: number;
  /** Remembers callback ids (default: in this process). */
  replayGuard?: ReplayGuard;
  log?: Logger;
}

/** A disk as the orchestrator gets it: its NBD export, and the point's layer on the replica storage when known. */
export interface WebhookPrepareInput extends PrepareInput {
  kind: 'test' | 'production';
  /** The tenant's VM name. */
  vm: string;
  /** Resolved settings per NIC (by MAC), as the seeds carry them. */
  nicPlans?: NicPlan[];
  /** Per disk id: the point's frozen layer on the replica storage (for orchestrators that read VHDX themselves). */
  replicaPaths?: Record<string, string>;
}

/** What the orchestrator answers, synchronously or in a callback. */
export interface OrchestratorAnswer {
  accepted?: boolean;
  ok?: boolean;
  state?: string;
  reason?: string;
  ready?: boolean;
  /** screenshot: a PNG, base64. */
  png?: string;
}

export type WebhookStep = 'prepare' | 'start' | 'status' | 'screenshot' | 'commit' | 'stop' | 'cleanup' | 'public-ips';

interface Stored { failoverId: string; vm: string; name: string; kind: string }

const StateFile = 'webhook.json';
const MaxAnswerBytes = 8 * 1024 * 1024;
const TlsCertCodes = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS_CERT_ALTNAME_INVALID/;
const Retryable = new Set([408, 429, 500, 502, 503, 504]);

export class WebhookDriver implements FailoverDriver {
  readonly kind = 'webhook';
  private readonly url: URL;
  private readonly key: Buffer;
  private readonly callbackKey: Buffer;
  private readonly guard: ReplayGuard;
  private readonly waiting = new Map<string, { resolve: (a: OrchestratorAnswer) => void }>();

  constructor(private readonly config: WebhookDriverConfig) {
    this.url = checkUrl(config.url, 'webhook url');
    checkUrl(config.callbackUrl, 'webhook callbackUrl');
    this.key = parseSecret(config.secret, 'webhook secret');
    this.callbackKey = config.callbackSecret ? parseSecret(config.callbackSecret, 'webhook callbackSecret') : this.key;
    this.guard = config.replayGuard ?? new MemoryReplayGuard();
  }

  async prepare(input: PrepareInput): Promise<void> {
    const inp = input as WebhookPrepareInput;
    const previous = await readJson<Stored>(join(inp.workDir, StateFile));
    if (previous && previous.failoverId !== inp.failoverId) throw new LifeboatError('conflict', `${inp.workDir} belongs to failover ${previous.failoverId}, not ${inp.failoverId}`);
    const stored: Stored = { failoverId: inp.failoverId, vm: inp.vm ?? inp.name, name: inp.name, kind: inp.kind ?? 'test' };
    await mkdir(inp.workDir, { recursive: true });
    await writeJsonAtomic(join(inp.workDir, StateFile), stored);
    const plans = new Map((inp.nicPlans ?? []).map((p) => [p.mac.toLowerCase(), p]));
    await this.step(stored, 'prepare', {
      hardware: inp.hardware,
      vmGenerationId: inp.vmGenerationId,
      disks: inp.disks.map((d) => ({ id: d.id, bus: d.bus, virtualSize: d.virtualSize, nbd: d.nbd, ...(inp.replicaPaths?.[d.id] ? { replicaPath: inp.replicaPaths[d.id] } : {}) })),
      nics: inp.nics.map((n) => ({ mac: n.mac, model: n.model, attachment: n.attachment, ...(plans.get(n.mac.toLowerCase()) ? { settings: plans.get(n.mac.toLowerCase())!.config, name: plans.get(n.mac.toLowerCase())!.name } : {}) })),
      seeds: inp.seeds,
    });
  }

  async start(workDir: string): Promise<void> {
    await this.step(await this.stored(workDir), 'start', {});
  }

  async status(workDir: string): Promise<VmStatus> {
    const a = await this.step(await this.stored(workDir), 'status', {});
    return toVmStatus(a);
  }

  /** Polls `status` until the orchestrator says ready (it judges readiness; the probes are passed on). */
  async waitReady(workDir: string, probes: ReadyProbe[], timeoutMs: number): Promise<ReadyResult> {
    const st = await this.stored(workDir);
    const from = Date.now();
    const deadline = from + timeoutMs;
    for (;;) {
      const a = await this.step(st, 'status', { probes });
      const vm = toVmStatus(a);
      if (a.ready === true) return { ready: true, detail: `orchestrator: ${a.reason ?? 'ready'}`, elapsedMs: Date.now() - from };
      if (vm.state === 'failed' || vm.state === 'stopped') return { ready: false, detail: vm.reason ?? `the VM is ${vm.state}`, elapsedMs: Date.now() - from };
      if (Date.now() + (this.config.pollMs ?? 5_000) > deadline) return { ready: false, detail: `the orchestrator did not report ready within ${timeoutMs} ms (state ${a.state ?? 'unknown'})`, elapsedMs: Date.now() - from };
      await sleep(this.config.pollMs ?? 5_000);
    }
  }

  async screenshot(workDir: string): Promise<Buffer> {
    const a = await this.step(await this.stored(workDir), 'screenshot', {});
    if (!a.png) throw ErrUnsupported(`webhook ${this.url.host}: the orchestrator sent no screenshot`);
    return Buffer.from(a.png, 'base64');
  }

  async commit(workDir: string): Promise<void> {
    await this.step(await this.stored(workDir), 'commit', {});
  }

  async stop(workDir: string, options: { graceful?: boolean; timeoutMs?: number } = {}): Promise<void> {
    const st = await readJson<Stored>(join(workDir, StateFile));
    if (st) await this.step(st, 'stop', { graceful: options.graceful === true, ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}) });
  }

  /**
   * Hands the failover's public addresses to the orchestrator, which puts them in force on its own
   * network: `failover.public-ips` with `publicIps: [{address, drAddress, mac, allow}]`, the whole set
   * each time (an empty list: none any more). Sent when the VM has started, whenever a tenant changes
   * a mapping while it runs, and empty before it stops. After cleanup (no state left) an empty set has
   * nothing to tell.
   */
  async publicIps(workDir: string, rules: readonly (PublicIpRule & { mac: string | null })[]): Promise<string[]> {
    const st = await readJson<Stored>(join(workDir, StateFile));
    if (!st && rules.length === 0) return [];
    if (!st) throw new LifeboatError('not_found', `${workDir}: no webhook failover was prepared here`);
    await this.step(st, 'public-ips', { publicIps: rules.map((r) => ({ address: r.address, drAddress: r.drAddress, mac: r.mac, allow: [...r.allow] })) });
    return [];
  }

  async cleanup(workDir: string): Promise<void> {
    const st = await readJson<Stored>(join(workDir, StateFile));
    if (!st) return;
    await this.step(st, 'cleanup', {});
    await rm(join(workDir, StateFile), { force: true });
  }

  /**
   * For the host's HTTP layer, on a POST to the callback URL: verifies the signature (callback secret),
   * the timestamp (within the tolerance) and that the webhook-id is new, then hands the answer to the
   * step waiting for it (body `{requestId, ok, state, reason, ready}`; requestId is our request's
   * webhook-id). Throws LifeboatError: 'unauthenticated' (401) for a bad signature or timestamp,
   * 'conflict' (409) for a replay, 'invalid_argument' (400) for a body that is not such JSON.
   */
  async handleCallback(headers: Headers | IncomingHttpHeaders | Record<string, string | string[] | undefined>, body: string | Buffer): Promise<void> {
    const tolerance = this.config.toleranceSec ?? DefaultToleranceSec;
    const { id } = verifySignature(this.callbackKey, headers, body, { toleranceSec: tolerance });
    if (!(await this.guard.firstSeen(id, 2 * tolerance))) throw new LifeboatError('conflict', `webhook callback ${id}: already received (replay)`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString());
    } catch {
      throw ErrInvalidArgument('webhook callback: the body is not JSON');
    }
    const answer = parsed as OrchestratorAnswer & { requestId?: unknown };
    if (typeof answer !== 'object' || answer === null || typeof answer.requestId !== 'string') throw ErrInvalidArgument('webhook callback: requestId (the webhook-id of our request) is required');
    const w = this.waiting.get(answer.requestId);
    // A callback no step waits for (its host restarted, or it gave up) is taken and logged: the next
    // status call asks the orchestrator again.
    if (w) w.resolve(answer);
    else this.config.log?.info({ requestId: answer.requestId }, 'webhook callback for no waiting step');
  }

  /** One step: POST, then the answer or, when accepted, the callback. */
  private async step(st: Stored, step: WebhookStep, extra: Record<string, unknown>): Promise<OrchestratorAnswer> {
    const id = newMessageId();
    const body = JSON.stringify({
      type: `failover.${step}`, step, failoverId: st.failoverId, vm: st.vm, name: st.name, kind: st.kind,
      callbackUrl: this.config.callbackUrl, requestId: id, ...extra,
    });
    const where = `webhook ${this.url.host}: ${step} ${st.failoverId}`;
    // Registered before sending: an orchestrator may call back before its 202 reaches us.
    const callback = new Promise<OrchestratorAnswer>((resolve) => this.waiting.set(id, { resolve }));
    try {
      let answer = await this.deliver(id, body, where);
      if (answer.accepted === true) {
        const timeoutMs = this.config.callbackTimeoutMs ?? 10 * 60_000;
        answer = await withTimeout(callback, timeoutMs, `${where}: accepted, but no callback within ${Math.round(timeoutMs / 1000)} s`);
      }
      if (answer.ok === false || (answer.state === 'failed' && step !== 'status')) throw new LifeboatError('unavailable', `${where}: ${answer.reason ?? 'the orchestrator reports failure'}`);
      return answer;
    } finally {
      this.waiting.delete(id);
    }
  }

  /** POSTs with retries; the parsed 2xx answer (202 or an empty body counts as accepted). */
  private async deliver(id: string, body: string, where: string): Promise<OrchestratorAnswer> {
    const attempts = this.config.attempts ?? 5;
    let backoff = this.config.backoffMs ?? 1_000;
    let last = '';
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const r = await this.post(id, body).catch((err: NodeJS.ErrnoException) => ({ status: 0, text: '', error: err.message, code: err.code }));
      if ('error' in r) {
        // A certificate that does not verify will not verify on the next attempt either.
        if (r.code && TlsCertCodes.test(r.code)) throw new LifeboatError('unavailable', `${where}: TLS: ${r.error}`);
        last = r.error;
      }
      else if (r.status >= 200 && r.status < 300) return parseAnswer(r.status, r.text, where);
      else {
        last = `HTTP ${r.status}${r.text ? `: ${oneLine(r.text)}` : ''}`;
        if (!Retryable.has(r.status)) throw new LifeboatError('unavailable', `${where}: refused with ${last}`);
      }
      if (attempt < attempts) {
        this.config.log?.warn({ attempt, why: last }, `${where}: retrying`);
        await sleep(Math.round(backoff * (0.75 + Math.random() * 0.5)));
        backoff *= 2;
      }
    }
    throw new LifeboatError('unavailable', `${where}: no answer after ${attempts} attempt(s): ${last}`);
  }

  private post(id: string, body: string): Promise<{ status: number; text: string }> {
    const headers = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'user-agent': 'lifeboat-failover', ...signHeaders(this.key, body, id) };
    const timeoutMs = this.config.requestTimeoutMs ?? 30_000;
    const send = this.url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(this.url, { method: 'POST', headers, ...(this.config.ca ? { ca: this.config.ca } : {}) }, (res) => {
        const parts: Buffer[] = [];
        let size = 0;
        res.on('data', (b: Buffer) => {
          size += b.length;
          if (size > MaxAnswerBytes) req.destroy(new Error(`answer larger than ${MaxAnswerBytes} bytes`));
          else parts.push(b);
        });
        res.on('end', () => { clearTimeout(timer); resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8') }); });
        res.on('error', (e) => { clearTimeout(timer); reject(e); });
      });
      const timer = setTimeout(() => req.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      req.on('error', (e) => { clearTimeout(timer); reject(e); });
      req.end(body);
    });
  }

  private async stored(workDir: string): Promise<Stored> {
    const st = await readJson<Stored>(join(workDir, StateFile));
    if (!st) throw new LifeboatError('not_found', `${workDir}: no webhook failover was prepared here`);
    return st;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new LifeboatError('unavailable', message)), ms); });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function parseAnswer(status: number, text: string, where: string): OrchestratorAnswer {
  if (text.trim() === '') return status === 202 ? { accepted: true } : {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new LifeboatError('unavailable', `${where}: the answer is not JSON: ${oneLine(text)}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new LifeboatError('unavailable', `${where}: the answer is not a JSON object`);
  const a = parsed as OrchestratorAnswer;
  return status === 202 ? { ...a, accepted: true } : a;
}

/** The orchestrator's state words as a VmStatus: running, paused, stopped, failed (anything else: running with the word as reason). */
export function toVmStatus(a: OrchestratorAnswer): VmStatus {
  const reason = a.reason !== undefined ? String(a.reason).slice(0, 500) : undefined;
  switch (a.state) {
    case 'running': case 'paused': case 'stopped': case 'failed':
      return { state: a.state, ...(reason ? { reason } : {}) };
    case undefined:
      return { state: 'failed', reason: 'the orchestrator gave no state' };
    default:
      return { state: 'running', reason: `orchestrator state ${String(a.state).slice(0, 60)}${reason ? `: ${reason}` : ''}` };
  }
}

function checkUrl(text: string, field: string): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw ErrInvalidArgument(`${field}: ${JSON.stringify(text)} is not a URL`);
  }
  if (u.username || u.password) throw ErrInvalidArgument(`${field}: credentials in the URL are not allowed (the requests are signed)`);
  if (u.protocol === 'https:') return u;
  if (u.protocol === 'http:' && isLoopback(u.hostname)) return u;
  throw ErrInvalidArgument(`${field}: ${u.protocol}// is allowed only to a loopback address; use https`);
}

function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '');
  if (h === 'localhost') return true;
  return ipaddr.isValid(h) && ipaddr.process(h).range() === 'loopback';
}

function oneLine(text: string): string {
  const t = text.replace(/\s+/g, ' ').trim();
  return t.length > 300 ? `${t.slice(0, 300)}…` : t;
}
