/**
 * The webhook failover driver against a real HTTP receiver on 127.0.0.1 started here (the
 * "orchestrator"), which checks every request's Standard Webhooks signature with its own code
 * (node:crypto below, not our helper) and answers as scripted: synchronously, after a 500, too late,
 * with a 4xx, or with 202 and a signed callback later. The callbacks go through a second real HTTP
 * server standing for the host's HTTP layer, which calls handleCallback.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isLifeboatError } from '../../shared/errors.js';
import { WebhookDriver, type WebhookDriverConfig, type WebhookPrepareInput } from '../../service/failover/drivers/webhook.js';
import { resolveNicPlan } from '../../service/failover/network/mappings.js';
import { parseNicSettings } from '../../service/failover/network/settings.js';
import { execFileP, scratchDir } from '../helpers.js';

const Secret = `whsec_${randomBytes(32).toString('base64')}`;
const CallbackSecret = `whsec_${randomBytes(32).toString('base64')}`;

/** Standard Webhooks, written out here independently of shared/protocol/standard-webhooks.ts. */
function independentSignature(secret: string, id: string, timestamp: string, body: string): string {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
}

function independentVerify(secret: string, headers: IncomingHttpHeaders, body: string): boolean {
  const id = headers['webhook-id'];
  const ts = headers['webhook-timestamp'];
  const sigs = headers['webhook-signature'];
  if (typeof id !== 'string' || typeof ts !== 'string' || typeof sigs !== 'string') return false;
  if (Math.abs(Date.now() / 1000 - Number(ts)) > 300) return false;
  const want = independentSignature(secret, id, ts, body);
  return sigs.split(' ').includes(want);
}

interface Seen { headers: IncomingHttpHeaders; body: Record<string, unknown>; raw: string; verified: boolean }
type Reply = { status: number; body?: string; delayMs?: number; before?: () => Promise<void>; then?: () => Promise<void> | void };

async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('webhook driver against an orchestrator on loopback', () => {
  let dir: Awaited<ReturnType<typeof scratchDir>>;
  let orchestrator: Server;
  let hostHttp: Server;
  let orchestratorUrl: string;
  let callbackUrl: string;
  let seen: Seen[];
  let replies: ((s: Seen) => Reply)[];
  let driver: WebhookDriver;
  let callbackStatuses: number[];

  /** Sends a callback as the orchestrator would, signed with its own code. */
  async function callback(body: object, options: { secret?: string; id?: string; timestamp?: number; tamper?: boolean } = {}): Promise<number> {
    const raw = JSON.stringify(body);
    const id = options.id ?? `msg_${randomBytes(9).toString('hex')}`;
    const ts = String(options.timestamp ?? Math.floor(Date.now() / 1000));
    let sig = independentSignature(options.secret ?? CallbackSecret, id, ts, raw);
    if (options.tamper) sig = `v1,${Buffer.alloc(32, 7).toString('base64')}`;
    const res = await fetch(callbackUrl, { method: 'POST', headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': ts, 'webhook-signature': sig }, body: raw });
    callbackStatuses.push(res.status);
    return res.status;
  }

  beforeAll(async () => {
    dir = await scratchDir('lifeboat-webhook-');
    orchestrator = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (b: Buffer) => parts.push(b));
      req.on('end', () => {
        const raw = Buffer.concat(parts).toString('utf8');
        const s: Seen = { headers: req.headers, raw, body: JSON.parse(raw) as Record<string, unknown>, verified: independentVerify(Secret, req.headers, raw) };
        seen.push(s);
        const reply = (replies.length > 1 ? replies.shift()! : replies[0]!)(s);
        void (reply.before ?? (async () => undefined))().then(() => setTimeout(() => {
          if (res.destroyed) return;
          res.writeHead(reply.status, { 'content-type': 'application/json' }).end(reply.body ?? '');
          void reply.then?.();
        }, reply.delayMs ?? 0));
      });
    });
    orchestratorUrl = await listen(orchestrator);
    // The host's HTTP layer: the callback route hands headers and the raw body to the driver.
    hostHttp = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (b: Buffer) => parts.push(b));
      req.on('end', () => {
        driver.handleCallback(req.headers, Buffer.concat(parts)).then(
          () => res.writeHead(204).end(),
          (err: unknown) => res.writeHead(isLifeboatError(err) ? err.status : 500).end(String((err as Error).message)),
        );
      });
    });
    callbackUrl = `${await listen(hostHttp)}/v1/failover-callbacks`;
  });
  afterAll(async () => {
    orchestrator?.closeAllConnections();
    hostHttp?.closeAllConnections();
    await new Promise((r) => orchestrator?.close(r));
    await new Promise((r) => hostHttp?.close(r));
    await dir?.remove();
  });
  beforeEach(() => {
    seen = [];
    replies = [() => ({ status: 200, body: '{"state":"running"}' })];
    callbackStatuses = [];
    driver = new WebhookDriver(config());
  });

  function config(extra: Partial<WebhookDriverConfig> = {}): WebhookDriverConfig {
    return { url: `${orchestratorUrl}/lifeboat`, secret: Secret, callbackSecret: CallbackSecret, callbackUrl, requestTimeoutMs: 2_000, attempts: 3, backoffMs: 20, pollMs: 10, callbackTimeoutMs: 3_000, ...extra };
  }

  function input(id: string): WebhookPrepareInput {
    const settings = [parseNicSettings({ mac: '52:54:00:aa:00:01', test: { mode: 'static', addresses: ['10.60.0.7/24', '2001:db8:60::7/64'], gateway4: '10.60.0.1', dns: ['10.60.0.2'], search: ['dr.example'] } })];
    return {
      failoverId: id, workDir: join(dir.path, id), name: `lifeboat-${id}-web1`, vm: 'web1', kind: 'test',
      hardware: { firmware: 'uefi', secureBoot: false, cpus: 2, memoryMiB: 2048, guestOs: 'linux' },
      disks: [
        { id: 'd0', bus: 'virtio', virtualSize: 1 << 30, nbd: { socket: '/var/lib/lifeboat/failover/nbd.sock', exportName: `t1/web1/d0/7/${id}` } },
        { id: 'd1', bus: 'virtio', virtualSize: 1 << 29, nbd: { host: '10.0.0.5', port: 10809, exportName: `t1/web1/d1/7/${id}` } },
      ],
      nics: [{ mac: '52:54:00:aa:00:01', model: 'virtio', attachment: { kind: 'bridge', bridge: 'br-dr', vlan: 30 } }],
      nicPlans: resolveNicPlan(settings, [], 'test'),
      replicaPaths: { d0: '/srv/replica/t1/web1/d0/point-0007.vhdx' },
      seeds: ['/var/lib/lifeboat/failover/vms/x/cidata.iso'],
      vmGenerationId: '8f2a1c3e-1b2d-4c5e-9f00-112233445566',
    };
  }

  it('delivers every step, each signed (checked by the receiver\'s own code), with the VM, disks, NICs, seeds and callback', async () => {
    replies = [
      () => ({ status: 200, body: '{"state":"prepared"}' }),
      () => ({ status: 200, body: '{"state":"running"}' }),
      () => ({ status: 200, body: '{"state":"running","ready":false}' }),
      () => ({ status: 200, body: '{"state":"running","ready":true,"reason":"guest agent answered"}' }),
      () => ({ status: 200, body: '{"state":"running","reason":"heartbeat ok"}' }),
      () => ({ status: 200, body: JSON.stringify({ png: Buffer.from('PNGDATA').toString('base64') }) }),
      () => ({ status: 200, body: '{"state":"running"}' }),
      () => ({ status: 200, body: '{"state":"stopped"}' }),
      () => ({ status: 204 }),
    ];
    const inp = input('fo-w1');
    await driver.prepare(inp);
    await driver.start(inp.workDir);
    expect(await driver.waitReady(inp.workDir, [{ kind: 'guest-agent' }], 5_000)).toMatchObject({ ready: true, detail: 'orchestrator: guest agent answered' });
    expect(await driver.status(inp.workDir)).toEqual({ state: 'running', reason: 'heartbeat ok' });
    expect((await driver.screenshot(inp.workDir)).toString()).toBe('PNGDATA');
    await driver.commit(inp.workDir);
    await driver.stop(inp.workDir, { graceful: true, timeoutMs: 30_000 });
    await driver.cleanup(inp.workDir);
    await driver.cleanup(inp.workDir); // nothing left: no request

    expect(seen.map((s) => s.body.step)).toEqual(['prepare', 'start', 'status', 'status', 'status', 'screenshot', 'commit', 'stop', 'cleanup']);
    expect(seen.every((s) => s.verified)).toBe(true);
    expect(new Set(seen.map((s) => s.headers['webhook-id'])).size).toBe(seen.length);
    for (const s of seen) {
      expect(s.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
      expect(s.body).toMatchObject({ type: `failover.${String(s.body.step)}`, failoverId: 'fo-w1', vm: 'web1', kind: 'test', callbackUrl, requestId: s.headers['webhook-id'] });
    }
    const prepare = seen[0]!.body;
    expect(prepare.disks).toEqual([
      { id: 'd0', bus: 'virtio', virtualSize: 1 << 30, nbd: { socket: '/var/lib/lifeboat/failover/nbd.sock', exportName: 't1/web1/d0/7/fo-w1' }, replicaPath: '/srv/replica/t1/web1/d0/point-0007.vhdx' },
      { id: 'd1', bus: 'virtio', virtualSize: 1 << 29, nbd: { host: '10.0.0.5', port: 10809, exportName: 't1/web1/d1/7/fo-w1' } },
    ]);
    expect(prepare.nics).toEqual([{ mac: '52:54:00:aa:00:01', model: 'virtio', name: 'dr0', attachment: { kind: 'bridge', bridge: 'br-dr', vlan: 30 }, settings: expect.objectContaining({ mode: 'static', addresses: ['10.60.0.7/24', '2001:db8:60::7/64'], gateway4: '10.60.0.1', dns: ['10.60.0.2'], search: ['dr.example'] }) }]);
    expect(prepare.seeds).toEqual(['/var/lib/lifeboat/failover/vms/x/cidata.iso']);
    expect(prepare.hardware).toEqual({ firmware: 'uefi', secureBoot: false, cpus: 2, memoryMiB: 2048, guestOs: 'linux' });
    expect(seen[7]!.body).toMatchObject({ graceful: true, timeoutMs: 30_000 });
    // A tampered body would not verify with the receiver's code: the check can fail.
    expect(independentVerify(Secret, seen[0]!.headers, seen[0]!.raw.replace('web1', 'web2'))).toBe(false);
  });

  it('retries a 500 and succeeds on the 200, keeping the webhook-id under a fresh signature', async () => {
    replies = [() => ({ status: 500, body: 'busy' }), () => ({ status: 200, body: '{"state":"prepared"}' })];
    await driver.prepare(input('fo-w2'));
    expect(seen).toHaveLength(2);
    expect(seen.every((s) => s.verified)).toBe(true);
    expect(seen[0]!.headers['webhook-id']).toBe(seen[1]!.headers['webhook-id']);
  });

  it('gives up after timeouts with one clear line, having tried every attempt', async () => {
    replies = [() => ({ status: 200, body: '{}', delayMs: 1_500 })];
    driver = new WebhookDriver(config({ requestTimeoutMs: 200, attempts: 2 }));
    const t0 = Date.now();
    const err = await driver.prepare(input('fo-w3')).catch((e: unknown) => e);
    expect(isLifeboatError(err) && err.code).toBe('unavailable');
    expect((err as Error).message).toMatch(/^webhook 127\.0\.0\.1:\d+: prepare fo-w3: no answer after 2 attempt\(s\): timed out after 200 ms$/);
    expect(seen).toHaveLength(2);
    expect(Date.now() - t0).toBeLessThan(1_400);
  });

  it('refuses a 4xx or a redirect at once, with the orchestrator\'s words, and a non-JSON 200', async () => {
    replies = [() => ({ status: 400, body: 'unknown VM web1' })];
    await expect(driver.prepare(input('fo-w4'))).rejects.toThrow(/prepare fo-w4: refused with HTTP 400: unknown VM web1$/);
    expect(seen).toHaveLength(1);
    replies = [() => ({ status: 302 })];
    await expect(driver.start(join(dir.path, 'fo-w4'))).rejects.toThrow(/start fo-w4: refused with HTTP 302$/);
    replies = [() => ({ status: 200, body: '<html>' })];
    await expect(driver.start(join(dir.path, 'fo-w4'))).rejects.toThrow(/start fo-w4: the answer is not JSON: <html>$/);
    replies = [() => ({ status: 200, body: '{"ok":false,"reason":"no capacity in pool A"}' })];
    await expect(driver.start(join(dir.path, 'fo-w4'))).rejects.toThrow(/start fo-w4: no capacity in pool A$/);
  });

  it('waits for a signed callback after a 202; refuses a bad signature, a late timestamp and a replay', async () => {
    const inp = input('fo-w5');
    replies = [() => ({ status: 200, body: '{"state":"prepared"}' })];
    await driver.prepare(inp);

    let requestId = '';
    let replayId = '';
    replies = [(s) => {
      requestId = String(s.body.requestId);
      return {
        status: 202,
        then: async () => {
          const answer = { requestId, ok: true, state: 'running' };
          // Refused: signed with the wrong secret, tampered, too old, and not for a waiting step.
          expect(await callback({ ...answer, state: 'failed' }, { secret: Secret })).toBe(401);
          expect(await callback({ ...answer, state: 'failed' }, { tamper: true })).toBe(401);
          expect(await callback({ ...answer, state: 'failed' }, { timestamp: Math.floor(Date.now() / 1000) - 301 })).toBe(401);
          replayId = `msg_${randomBytes(9).toString('hex')}`;
          expect(await callback(answer, { id: replayId })).toBe(204);
        },
      };
    }];
    await driver.start(inp.workDir);
    expect(seen.at(-1)!.body.step).toBe('start');
    // The same callback again (same id, same signature) is a replay.
    expect(await callback({ requestId, ok: true, state: 'running' }, { id: replayId })).toBe(409);
    expect(await callback({ nothing: true })).toBe(400);
    expect(callbackStatuses).toEqual([401, 401, 401, 204, 409, 400]);
    callbackStatuses = [];

    // A callback reporting failure fails the step with its reason.
    replies = [(s) => ({ status: 202, then: async () => { await callback({ requestId: s.body.requestId, ok: false, reason: 'hypervisor pool out of memory' }); } })];
    await expect(driver.commit(inp.workDir)).rejects.toThrow(/commit fo-w5: hypervisor pool out of memory$/);

    // A callback that arrives before the 202 itself is kept for the step.
    replies = [(s) => ({ status: 202, before: async () => { expect(await callback({ requestId: s.body.requestId, ok: true, state: 'stopped' })).toBe(204); } })];
    await driver.stop(inp.workDir);

    // No callback at all: the step gives up after callbackTimeoutMs.
    driver = new WebhookDriver(config({ callbackTimeoutMs: 200 }));
    replies = [() => ({ status: 202 })];
    await expect(driver.stop(inp.workDir)).rejects.toThrow(/stop fo-w5: accepted, but no callback within 0 s/);
  });

  it('speaks HTTPS to an orchestrator behind a private CA, and refuses one it cannot verify', async () => {
    const key = join(dir.path, 'tls.key');
    const cert = join(dir.path, 'tls.crt');
    await execFileP('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
    const pem = await readFile(cert, 'utf8');
    const bodies: boolean[] = [];
    const tls = createHttpsServer({ key: await readFile(key), cert: pem }, (req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (b: Buffer) => parts.push(b));
      req.on('end', () => {
        bodies.push(independentVerify(Secret, req.headers, Buffer.concat(parts).toString('utf8')));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"state":"prepared"}');
      });
    });
    await new Promise<void>((r) => tls.listen(0, '127.0.0.1', r));
    try {
      const url = `https://127.0.0.1:${(tls.address() as AddressInfo).port}/lifeboat`;
      await new WebhookDriver(config({ url, ca: pem })).prepare(input('fo-tls'));
      expect(bodies).toEqual([true]);
      await expect(new WebhookDriver(config({ url })).prepare(input('fo-tls2'))).rejects.toThrow(/prepare fo-tls2: TLS: self[- ]signed certificate$/);
      expect(bodies).toEqual([true]);
    } finally {
      tls.closeAllConnections();
      await new Promise((r) => tls.close(r));
    }
  });

  it('refuses bad configuration in one line', () => {
    expect(() => new WebhookDriver(config({ url: 'http://orchestrator.example/x' }))).toThrow('webhook url: http:// is allowed only to a loopback address; use https');
    expect(() => new WebhookDriver(config({ url: 'https://u:p@orchestrator.example/x' }))).toThrow(/credentials in the URL/);
    expect(() => new WebhookDriver(config({ secret: 'hunter2' }))).toThrow('webhook secret: expected whsec_ followed by base64');
    expect(() => new WebhookDriver(config({ secret: `whsec_${Buffer.alloc(8).toString('base64')}` }))).toThrow(/8 bytes/);
    expect(() => new WebhookDriver(config({ url: 'https://orchestrator.example/x' }))).not.toThrow();
  });
});
