/**
 * Fuzz target: the agent endpoint's request bodies, queries and path ids (agent protocol, the zod
 * schemas of shared/protocol/schemas.ts and the handlers behind them), against a running test
 * service over mutual TLS with an enrolled agent that has a registered VM and a command waiting.
 * Each input is one request: a route, its valid body mutated (json-mutate.ts: values replaced, NUL
 * characters, nesting thousands deep, 64 KiB strings…, the text cut), a content type, path ids and
 * a query. The answer is never a 500: a success, or a 4xx (a 503 only where the service says it is
 * unavailable) with the JSON error body of §11.
 */
import { Agent, request } from 'node:https';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queueCommand } from '../../service/commands/commands.js';
import { errorResponseSchema } from '../../shared/protocol/schemas.js';
import { enrolledAgent, newKeyAndCsr, testEnv, testService, type TestEnv, type TlsIdentity } from '../service/helpers.js';
import { fuzz, testTimeout } from './harness.js';
import { bodyText, jsonMutationArb, mutateJson, mutateText, textMutationArb, type JsonMutation, type TextMutation } from './json-mutate.js';

const M = 2 ** 20;
let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let identity: TlsIdentity;
let agent: Agent;
let commandId: string;
let csrPem: string;

const registration = {
  displayName: 'Web 01', disks: [{ id: 'disk0', virtualSize: 4 * M, format: 'vhdx', bus: 'virtio' }], frequency: '30s', history: 2, appConsistentEvery: 0, compression: 'zstd',
  hardware: { firmware: 'uefi', secureBoot: true, cpus: 2, memoryMiB: 2048 }, nics: [{ mac: '52:54:00:12:34:56', model: 'virtio', addresses: ['192.0.2.10/24'] }],
};
const time = '2026-12-07T10:00:00.000Z';
const sha = 'a'.repeat(64);

/** Each route with a body that passes its schema; {vm}, {disk}, {id} are filled per input. */
const routes = () => [
  { method: 'PUT', path: '/v1/vms/{vm}', body: registration },
  { method: 'POST', path: '/v1/vms/{vm}/disks/{disk}/grants', body: { kind: 'log', generation: 1, sequence: 1 } },
  { method: 'POST', path: '/v1/vms/{vm}/disks/{disk}/grants', body: { kind: 'chunk', generation: 1, index: 0 } },
  { method: 'POST', path: '/v1/vms/{vm}/disks/{disk}/commits', body: { generation: 1, sequence: 1, key: 'acme/web01/disk0/1/log/1', size: 10, sha256: sha, consistency: 'crash', createdAt: time, cycle: 1, capturedAt: time } },
  { method: 'POST', path: '/v1/vms/{vm}/disks/{disk}/chunks', body: { generation: 1, index: 0, key: 'acme/web01/disk0/1/chunk/0', size: 10, sha256: sha, createdAt: time } },
  { method: 'POST', path: '/v1/vms/{vm}/disks/{disk}/initial', body: { generation: 1, mode: 'full', chunkCount: 1, consistency: 'crash', createdAt: time } },
  { method: 'GET', path: '/v1/vms/{vm}/disks/{disk}/digests?blockSize=65536&offset=0&length=65536', body: undefined },
  { method: 'GET', path: '/v1/commands?wait=0&instance=fuzz-instance-1', body: undefined },
  { method: 'POST', path: '/v1/commands/{id}/progress', body: { step: 'hold', detail: 'waiting for the final cycle' } },
  { method: 'POST', path: '/v1/commands/{id}/result', body: { ok: true, result: { cycle: 7, capturedAt: time, consistency: 'crash', shutdown: 'hook' } } },
  { method: 'POST', path: '/v1/commands/{id}/result', body: { ok: false, error: 'the guest did not stop' } },
  { method: 'POST', path: '/v1/vms/{vm}/failovers', body: { kind: 'planned' } },
  { method: 'GET', path: '/v1/vms/{vm}', body: undefined },
  { method: 'POST', path: '/v1/renew', body: { csr: csrPem } },
  { method: 'POST', path: '/v1/enroll', body: { token: 'lbt_0000', serverName: 'web01.acme.test', csr: csrPem } },
];

beforeAll(async () => {
  env = await testEnv();
  svc = await testService(env);
  identity = await enrolledAgent(svc, 'acme', '*.acme.test', 'hv01.acme.test');
  agent = new Agent({ keepAlive: true, maxSockets: 1, ca: svc.ctx.ca.certPem, key: identity.keyPem, cert: identity.certPem });
  const put = await send('PUT', '/v1/vms/web01', JSON.stringify(registration), 'application/json');
  expect(put.status).toBe(201);
  commandId = (await queueCommand(svc.ctx.db, { tenant: 'acme', vm: 'web01', kind: 'planned-failover', payload: { failover: 'fo-fuzz' } })).id;
  csrPem = (await newKeyAndCsr('hv01.acme.test')).csrPem;
}, 120_000);
afterAll(async () => {
  agent?.destroy();
  await svc?.stop();
  await env?.cleanup();
});

/**
 * One request on the kept-alive connection. A reset is a failure: the server must answer, and say
 * Connection: close when it will not read the rest of a body (the 413; regressions.test.ts).
 */
function send(method: string, path: string, body: string | undefined, contentType: string | undefined): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = {};
    if (contentType !== undefined) headers['content-type'] = contentType;
    if (body !== undefined) headers['content-length'] = Buffer.byteLength(body);
    const req = request(`${svc.agentUrl}${path}`, { method, agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const pathId = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined) },
  fc.constantFrom('WEB01', 'web01x', '..', '%2e%2e', '%00', 'a'.repeat(65), '-web', 'web%2F01', 'web%20', '%F0%9F%92%A9', 'x'.repeat(3000)),
  fc.string({ maxLength: 20 }).map(encodeURIComponent),
);
const query = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined) },
  fc.constantFrom('blockSize=0', 'blockSize=65537', 'blockSize=1e400', 'offset=-1', 'length=99999999999999999999', 'wait=abc', 'wait=-1', 'wait=1',
    'instance=short', 'instance=%00%00%00%00%00%00%00%00', 'blockSize=65536&blockSize=131072', 'extra=1', '', 'offset=__proto__'),
  fc.string({ maxLength: 30 }).map((s) => `${encodeURIComponent(s)}=${encodeURIComponent(s)}`),
);
const contentType = fc.oneof(
  { weight: 8, arbitrary: fc.constant('application/json') },
  fc.constantFrom(undefined, 'text/plain', 'application/json; charset=latin1', 'application/merge-patch+json', 'APPLICATION/JSON', 'multipart/form-data; boundary=x', ''),
);

interface Input { route: number; muts: JsonMutation[]; text: TextMutation; type: string | undefined; vm: string | undefined; disk: string | undefined; id: string | undefined; query: string | undefined }
const input: fc.Arbitrary<Input> = fc.record({
  route: fc.nat({ max: 14 }), muts: fc.array(jsonMutationArb, { maxLength: 3 }), text: textMutationArb, type: contentType,
  vm: pathId, disk: pathId, id: pathId, query,
});

function build(i: Input): { method: string; path: string; body: string | undefined; type: string | undefined } {
  const all = routes();
  const r = all[i.route % all.length]!;
  let path = r.path.replace('{vm}', i.vm ?? 'web01').replace('{disk}', i.disk ?? 'disk0').replace('{id}', i.id ?? commandId);
  if (i.query !== undefined) path = path.includes('?') ? `${path}&${i.query}` : `${path}?${i.query}`;
  const body = r.body === undefined ? undefined : mutateText(bodyText(mutateJson(r.body, i.muts)), i.text);
  return { method: r.method, path, body, type: r.body === undefined ? undefined : i.type };
}

describe('agent endpoint under hostile requests', () => {
  it('answers every request with a success or a 4xx JSON error, never a 500', async () => {
    const statuses = new Map<number, number>();
    await fuzz<[Input]>('agent-api', 'requests', [input], async (i) => {
      const { method, path, body, type } = build(i);
      const res = await send(method, path, body, type);
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const json = res.text.length === 0 ? undefined : JSON.parse(res.text) as unknown;
      if (res.status >= 400) {
        const err = errorResponseSchema.safeParse(json);
        if (!err.success) throw new Error(`${method} ${path}: ${res.status} without the JSON error body: ${res.text.slice(0, 200)}`);
        const unavailable = res.status === 503 && err.data.error.code === 'unavailable';
        if (res.status >= 500 && !unavailable) throw new Error(`${method} ${path}: ${res.status} ${res.text.slice(0, 300)}`);
      } else if (res.status !== 204 && json === undefined) {
        throw new Error(`${method} ${path}: ${res.status} with an empty body`);
      }
    }, { maxAllocation: 8 * M, describe: (i) => JSON.stringify(build(i)) });
    console.log(`agent-api statuses: ${[...statuses].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}×${n}`).join(' ')}`);
    // The seeds' own requests must get through somewhere, or the mutations only met the front door.
    expect([...statuses.keys()].some((s) => s < 300)).toBe(true);
  }, testTimeout());
});
