/**
 * Recovery plan runs for tests: a FailoverScenario whose failover host runs the webhook driver, its
 * orchestrator a real HTTP server on loopback that checks every Standard Webhooks signature with its
 * own node:crypto code and answers at once (ready), and a second receiver for the plans' webhook
 * actions, checking them against the plan's own secret. VMs are protected and replicated by the
 * agent (tiny VHDX disks made by qemu-img).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { referee } from '../helpers.js';
import type { PlanRunReport } from '../../service/plans/report.js';
import { FailoverScenario, must } from '../failover/failover-harness.js';

/** Whether a delivery's Standard Webhooks headers hold a v1 signature of id.timestamp.body under key. */
export function signedBy(key: Buffer, req: IncomingMessage, raw: string): boolean {
  const id = String(req.headers['webhook-id']);
  const ts = String(req.headers['webhook-timestamp']);
  const expected = createHmac('sha256', key).update(`${id}.${ts}.${raw}`).digest();
  const given = String(req.headers['webhook-signature']).split(' ').map((v) => Buffer.from(v.replace(/^v1,/, ''), 'base64'));
  return given.some((g) => g.length === expected.length && timingSafeEqual(g, expected)) && Math.abs(Date.now() / 1000 - Number(ts)) <= 300;
}

/** A loopback HTTP server handing each request's body to handler. */
export async function receiver(handler: (req: IncomingMessage, raw: string, res: ServerResponse) => void): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (d: Buffer) => { raw += d.toString(); });
    req.on('end', () => handler(req, raw, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** A run's figures (the scale test prints them, npm run bench -- plans reports them): never asserted. */
export interface RunFigures { vms: number; wallSeconds: number; perVmMs: number; rtoSeconds: number | null; cutSeconds: number; cutPerVmMs: number; startSeconds: number[]; boot: { median: number; p90: number; max: number } }

export function runFigures(r: PlanRunReport, wallSeconds: number): RunFigures {
  const cut = r.steps.find((s) => s.step === 'cut')?.seconds ?? 0;
  const boots = r.vms.map((v) => v.bootSeconds ?? Number.NaN).sort((a, b) => a - b);
  const at = (q: number) => boots[Math.min(boots.length - 1, Math.floor(q * boots.length))]!;
  return {
    vms: r.vms.length, wallSeconds, perVmMs: Math.round((wallSeconds * 1000) / r.vms.length), rtoSeconds: r.rtoSeconds,
    cutSeconds: cut, cutPerVmMs: Math.round((cut * 1000) / r.vms.length),
    startSeconds: r.steps.filter((s) => s.step.endsWith(': start')).map((s) => s.seconds ?? 0), boot: { median: at(0.5), p90: at(0.9), max: boots.at(-1)! },
  };
}

/** A plan of `groups` groups of `perGroup` VMs (vm000…), each group followed by wait-ready. */
export function bigPlan(name: string, groups: number, perGroup: number): { names: string[]; body: Record<string, unknown> } {
  const names = Array.from({ length: groups * perGroup }, (_, i) => `vm${String(i).padStart(3, '0')}`);
  return { names, body: { name, groups: Array.from({ length: groups }, (_, g) => ({ name: `g${g}`, vms: names.slice(g * perGroup, (g + 1) * perGroup), after: [{ kind: 'wait-ready', timeoutSeconds: 600 }] })) } };
}

const OnePixelPng = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';

export class PlanScenario {
  private constructor(readonly s: FailoverScenario, private readonly orchestrator: Server, readonly driverSteps: string[]) {}

  /** The scenario with the webhook driver; options as FailoverScenario's (externalHost: a failover-host process). */
  static async start(options: { externalHost?: boolean; capacity?: number } = {}): Promise<PlanScenario> {
    const key = randomBytes(32);
    const steps: string[] = [];
    const { server, url } = await receiver((req, raw, res) => {
      if (!signedBy(key, req, raw)) return res.writeHead(401).end();
      steps.push(String((JSON.parse(raw) as { step?: unknown }).step));
      // Every answer carries a console screenshot (a 1x1 PNG): the driver takes it at ready.
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, state: 'running', ready: true, reason: 'orchestrator says ready', png: OnePixelPng }));
    });
    const secretFile = join(await mkdtemp('/tmp/lbplan-'), 'secret');
    await writeFile(secretFile, `whsec_${key.toString('base64')}`, { mode: 0o600 });
    const s = await FailoverScenario.start({
      externalHost: options.externalHost ?? false,
      configure: (f) => {
        const host = f.host as Record<string, unknown>;
        host.driver = 'webhook';
        // Room for every VM of the plan: placement reserves each VM's vCPUs and memory.
        if (options.capacity) Object.assign(host, { cpus: options.capacity, memoryMiB: options.capacity * 1024, storageBytes: options.capacity * 2 ** 30 });
        f.webhook = { url: `${url}/lifeboat`, secretFile, callbackUrl: 'http://127.0.0.1:9/v1/failover-callbacks/x' };
      },
    });
    // The plans' webhook receivers here are on loopback: a lab, as far as the public-only rule goes.
    const file = JSON.parse(await readFile(s.env.config.path, 'utf8')) as Record<string, unknown>;
    await writeFile(s.env.config.path, JSON.stringify({ ...file, webhooks: { ...(file.webhooks as object | undefined), allowPrivateTargets: true } }));
    s.svc.ctx.config.webhooks.allowPrivateTargets = true;
    return new PlanScenario(s, server, steps);
  }

  /** Protects and replicates VMs (one 16 MiB VHDX each, 1 MiB written), all in one agent cycle. */
  async vms(names: string[]): Promise<void> {
    for (const vm of names) {
      const disk = join(this.s.env.dir, `${vm}.vhdx`);
      await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '16M']);
      await referee('qemu-io', ['-c', 'write -P 0x5a 0 1M', disk]);
      await this.s.protect(vm, [disk]);
    }
    await this.s.replicate();
  }

  /** Polls the run's report until pred holds; throws with the report when time ran out. */
  async waitRun(tenant: string, plan: string, id: string, pred: (r: PlanRunReport) => boolean, timeoutMs: number): Promise<PlanRunReport> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = must(await this.s.api<PlanRunReport>('GET', `/v1/tenants/${tenant}/plans/${plan}/runs/${id}`), `run ${id}`).body;
      if (pred(r)) return r;
      if (Date.now() > deadline) throw new Error(`run ${id} is ${r.state} (${r.error ?? 'no error'}) after ${timeoutMs} ms: ${JSON.stringify(r.steps)} ${JSON.stringify(r.vms.slice(0, 5))}`);
      await new Promise((res) => setTimeout(res, 250));
    }
  }

  async stop(): Promise<void> {
    await this.s.stop();
    this.orchestrator.close();
  }
}
