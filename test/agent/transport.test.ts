/**
 * The agent checks every answer of the service against the protocol's response schemas
 * (shared/protocol/schemas.ts, protocol §12): unknown fields are ignored, an unknown state, action or
 * status or a missing field is one line naming the request and the field. A plain HTTP server stands
 * in for the service here (FAKE: it only replays canned answers); the real service's answers pass the
 * same schemas in test/e2e.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpTransport } from '../../agent/transport/http.js';
import { LifeboatError } from '../../shared/errors.js';

const disk = {
  id: 'disk0', virtualSize: 1 << 20, state: 'replicating', resyncReason: null, generation: 1, baseComplete: true,
  appliedSequence: 4, nextSequence: 5, pendingLogs: 0, pendingBytes: 0, expect: { action: 'logs', generation: 1, nextSequence: 5 },
};
const status = { vm: 'web01', state: 'replicating', health: 'normal', lastAppliedAt: null, disks: [disk] };

let answer: { status: number; body: unknown } = { status: 200, body: {} };
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(answer.status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(answer.body));
  });
});
let transport: HttpTransport;
beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  transport = new HttpTransport(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { keyPem: '', certPem: '', caPem: '' });
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

async function refusal(call: () => Promise<unknown>): Promise<string> {
  const err = await call().then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(LifeboatError);
  expect((err as LifeboatError).code).toBe('corrupt');
  const message = (err as Error).message;
  expect(message.split('\n')).toHaveLength(1);
  return message;
}

describe('the agent checks the service\'s answers against the protocol', () => {
  it('takes a status with fields it does not know, and drops them', async () => {
    answer = { status: 200, body: { ...status, cycles: { expected: 1 }, future: 'x', disks: [{ ...disk, lastAppliedAt: null, other: 1 }] } };
    const s = await transport.vmStatus('web01');
    expect(s).toEqual(status);
  });

  it('refuses an unknown disk state, an unknown action and a missing field, naming the request and the field', async () => {
    answer = { status: 200, body: { ...status, disks: [{ ...disk, state: 'thinking' }] } };
    expect(await refusal(() => transport.vmStatus('web01'))).toMatch(/^service http:\/\/127\.0\.0\.1:\d+: unexpected answer to GET \/v1\/vms\/web01: disks\.0\.state: /);
    answer = { status: 200, body: { ...status, disks: [{ ...disk, expect: { ...disk.expect, action: 'guess' } }] } };
    expect(await refusal(() => transport.vmStatus('web01'))).toMatch(/disks\.0\.expect\.action: /);
    const { generation: _g, ...noGeneration } = disk;
    answer = { status: 200, body: { ...status, disks: [noGeneration] } };
    expect(await refusal(() => transport.vmStatus('web01'))).toMatch(/disks\.0\.generation: /);
  });

  it('refuses an unknown commit status and a grant without a URL', async () => {
    const commit = { generation: 1, key: 'k', size: 1, sha256: 'a'.repeat(64), consistency: 'crash', createdAt: new Date().toISOString() } as const;
    answer = { status: 202, body: { status: 'accepted', generation: 1, sequence: 1 } };
    expect(await transport.commitLog('web01', 'disk0', { ...commit, sequence: 1 })).toBe('accepted');
    answer = { status: 202, body: { status: 'maybe' } };
    expect(await refusal(() => transport.commitLog('web01', 'disk0', { ...commit, sequence: 1 }))).toMatch(/POST \/v1\/vms\/web01\/disks\/disk0\/commits: status: /);
    answer = { status: 200, body: { method: 'PUT', headers: {}, expiresAt: new Date().toISOString(), key: 'k', maxSize: 10 } };
    expect(await refusal(() => transport.grant('web01', 'disk0', { kind: 'log', generation: 1, sequence: 1 }))).toMatch(/grants: url: /);
  });

  it('reads an error answer as the service\'s code and message', async () => {
    answer = { status: 409, body: { error: { code: 'conflict', reason: 'vm_unprotected', message: 'web01 is not protected' } } };
    const err = await transport.vmStatus('web01').then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'conflict', reason: 'vm_unprotected', message: expect.stringMatching(/: web01 is not protected$/) });
  });
});
