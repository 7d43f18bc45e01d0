/**
 * A failover host whose driver is the webhook driver (failover.host.driver "webhook"): the engine
 * hands every step of a test failover to the hoster's orchestrator, here a real HTTP receiver on
 * loopback that checks each request's Standard Webhooks signature with its own node:crypto code and
 * answers at once. The steps arrive in order with the point's NBD export, the replica layer and the
 * NIC's resolved settings; the VM's public address (a mapping that asks for test failovers) is handed
 * over in its own signed step once the VM started, and taken back before it stops; the failover
 * becomes ready and stopping it reaches the orchestrator.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { putVmNic } from '../../service/catalog/failovers.js';
import { referee } from '../helpers.js';
import { FailoverScenario, must } from './failover-harness.js';

const key = randomBytes(32);
const secret = `whsec_${key.toString('base64')}`;

interface Received { step: string; body: Record<string, unknown> }

describe('failover through the webhook driver', () => {
  let s: FailoverScenario;
  const received: Received[] = [];
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (d: Buffer) => { raw += d.toString(); });
    req.on('end', () => {
      const id = String(req.headers['webhook-id']);
      const ts = String(req.headers['webhook-timestamp']);
      const expected = createHmac('sha256', key).update(`${id}.${ts}.${raw}`).digest();
      const given = String(req.headers['webhook-signature']).split(' ').map((v) => Buffer.from(v.replace(/^v1,/, ''), 'base64'));
      if (!given.some((g) => g.length === expected.length && timingSafeEqual(g, expected)) || Math.abs(Date.now() / 1000 - Number(ts)) > 300) {
        res.writeHead(401).end();
        return;
      }
      const body = JSON.parse(raw) as Record<string, unknown>;
      received.push({ step: String(body.step), body });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, state: 'running', ready: true, reason: 'orchestrator says so' }));
    });
  });

  beforeAll(async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as AddressInfo).port;
    const secretFile = join(await mkdtemp('/tmp/lbwh-'), 'secret');
    await writeFile(secretFile, secret, { mode: 0o600 });
    s = await FailoverScenario.start({
      configure: (f) => {
        (f.host as Record<string, unknown>).driver = 'webhook';
        f.webhook = { url: `http://127.0.0.1:${port}/lifeboat`, secretFile, callbackUrl: 'http://127.0.0.1:9/v1/failover-callbacks/x' };
      },
    });
    const disk = join(s.env.dir, 'app01.vhdx');
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '16M']);
    await referee('qemu-io', ['-c', 'write -P 0x5a 0 1M', disk]);
    await s.protect('app01', [disk]);
    await s.replicate();
    await putVmNic(s.svc.ctx.db, 'acme', 'app01', {
      mac: '52:54:00:aa:bb:cc', position: 0, model: 'virtio', reportedAddresses: [],
      settings: { test: { mode: 'static', addresses: ['192.0.2.40/24'], gateway4: '192.0.2.1', dns: ['192.0.2.53'], search: [] } },
    });
    must(await s.api('POST', '/v1/public-ip-pools', { name: 'edge', addresses: ['203.0.113.10'] }), 'pool');
    must(await s.api('POST', '/v1/public-ip-pools/edge/grants', { tenant: 'acme', count: 1 }), 'grant');
    must(await s.api('POST', '/v1/tenants/acme/public-ip-mappings', { address: '203.0.113.10', vm: 'app01', mac: '52:54:00:aa:bb:cc', allow: ['tcp/443', 'icmp'], test: true }), 'map');
  }, 120_000);

  afterAll(async () => {
    await s?.stop();
    server.close();
  });

  it('hands each step to the orchestrator, signed, and follows its answers', async () => {
    const r = must(await s.api('POST', '/v1/tenants/acme/vms/app01/failovers', { kind: 'test' }), 'test failover');
    const ready = await s.waitFor(r.body.id, (x) => x.state === 'ready', 120_000);
    expect(ready.steps.find((x) => x.step === 'wait-ready')?.detail).toMatch(/orchestrator says so/);
    const text = JSON.stringify(received.find((x) => x.step === 'prepare')!.body);
    expect(text).toContain(`acme/app01/disk0/${ready.point.id}/${ready.id}`);
    expect(text).toContain('192.0.2.40/24');
    expect(text).toMatch(/replicaPath/);
    // The public address, resolved to the NIC's test address, in a signed step of its own after start.
    const pub = received.filter((x) => x.step === 'public-ips');
    expect(pub.map((x) => x.body.publicIps)).toEqual([[{ address: '203.0.113.10', drAddress: '192.0.2.40', mac: '52:54:00:aa:bb:cc', allow: ['tcp/443', 'icmp'] }]]);
    expect(pub[0]!.body).toMatchObject({ type: 'failover.public-ips', failoverId: ready.id, vm: 'app01', kind: 'test' });
    expect(received.findIndex((x) => x.step === 'start')).toBeLessThan(received.indexOf(pub[0]!));
    expect(ready.steps.find((x) => x.step === 'public-ips')).toMatchObject({ status: 'done', detail: 'webhook driver: 203.0.113.10 → 192.0.2.40 (tcp/443, icmp)' });
    // A mapping changed while the VM runs reaches the orchestrator at the next tick, once.
    must(await s.api('PUT', '/v1/tenants/acme/public-ip-mappings/203.0.113.10', { vm: 'app01', mac: '52:54:00:aa:bb:cc', allow: ['tcp/443', 'tcp/80'], test: true }), 'change');
    await s.svc.failoverHost!.tick();
    await s.svc.failoverHost!.tick();
    expect(received.filter((x) => x.step === 'public-ips').map((x) => (x.body.publicIps as { allow: string[] }[])[0]?.allow)).toEqual([['tcp/443', 'icmp'], ['tcp/443', 'tcp/80']]);
    must(await s.api('POST', `/v1/failovers/${ready.id}/stop`, {}), 'stop');
    const done = await s.waitFor(ready.id, (x) => x.endedAt !== null, 60_000);
    expect(done.state).toBe('stopped');
    const steps = received.map((x) => x.step);
    expect(steps.indexOf('prepare')).toBeLessThan(steps.indexOf('start'));
    expect(steps).toEqual(expect.arrayContaining(['prepare', 'start', 'status', 'stop', 'cleanup']));
    expect(steps.lastIndexOf('stop')).toBeLessThan(steps.lastIndexOf('cleanup'));
    // Taken back before the VM stops; the report says it was released.
    expect(received.filter((x) => x.step === 'public-ips').at(-1)!.body.publicIps).toEqual([]);
    expect(steps.lastIndexOf('public-ips')).toBeLessThan(steps.lastIndexOf('stop'));
    expect(done.publicIps).toMatchObject([{ address: '203.0.113.10', drAddress: '192.0.2.40' }]);
    expect(done.publicIps[0]!.removedAt).not.toBeNull();
  }, 180_000);
});
