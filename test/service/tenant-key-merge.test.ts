/**
 * A tenant's replica key rotated while a log sealed to the old key waits for its merge (docs/security.md,
 * "A tenant's replica key"): the real agent learns the new key at its next pass and seals to it, the old
 * key cannot be retired while the old log is unmerged, both logs merge, and the replica equals the source
 * (qemu-img compare). Real PostgreSQL, mutual TLS, the file object store and the merge worker.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enroll } from '../../agent/enroll/enroll.js';
import { silentLogger } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import { engineContext } from '../../agent/replicate/from-state.js';
import { AgentState } from '../../agent/state/store.js';
import type { Merger } from '../../service/workers/merger.js';
import { referee } from '../helpers.js';
import type { MergeHarness, TestEnv } from './helpers.js';
import { mergeHarness, operator } from './helpers.js';

let h: MergeHarness | undefined;
let env: TestEnv;
let svc: MergeHarness['svc'];
let merger: Merger;

beforeAll(async () => {
  h = await mergeHarness();
  ({ env, svc, merger } = h);
  await h.acme();
});
afterAll(async () => {
  await h?.close();
});

describe('tenant replica key rotation under replication', () => {
  it('merges a log sealed to the old key and the next one sealed to the new key; retirement waits for the merge', async () => {
    const state = new AgentState(join(env.dir, 'agent'));
    const { token } = (await operator<{ token: string }>(svc, 'POST', '/v1/tenants/acme/tokens', {})).body;
    await enroll(state, { serviceUrl: svc.agentUrl, token, serverName: 'hv01.acme.test' });
    const source = join(env.dir, 'web01.vhdx');
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', source, '48M']);
    await referee('qemu-io', ['-c', 'write -P 0x5a 1M 2M', source]);
    await state.writeConfig({
      version: 1, name: 'web01', disks: [{ id: 'disk0', path: source }], frequencyMs: 30_000, history: 0, appConsistentEveryMs: null, preSnapshot: null,
      postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null, bandwidthBytesPerSec: null, paused: false, createdAt: new Date().toISOString(),
    });
    const before = await engineContext(state, silentLogger);
    const oldKid = before.recipient.kid;
    expect((await new Replicator({ ...before, retry: { attempts: 1 } }).runOnce())[0]).toMatchObject({ outcome: 'ok' });
    await merger.merge();

    // A cycle sealed to the old key, left unmerged.
    await referee('qemu-io', ['-c', 'write -P 0x77 5M 128k', source]);
    expect((await new Replicator({ ...before, retry: { attempts: 1 } }).runOnce())[0]).toMatchObject({ outcome: 'ok' });

    const rotated = await operator<{ previous: string; current: string }>(svc, 'POST', '/v1/keys/tenant/rotations', { tenant: 'acme' });
    expect(rotated.status).toBe(201);
    expect(rotated.body.previous).toBe(oldKid);

    // The next pass learns the new key and seals to it.
    const after = await engineContext(state, silentLogger);
    expect(after.recipient.kid).toBe(rotated.body.current);
    await referee('qemu-io', ['-c', 'write -P 0x23 40M 1M', source]);
    expect((await new Replicator({ ...after, retry: { attempts: 1 } }).runOnce())[0]).toMatchObject({ outcome: 'ok' });

    const early = await operator<{ detail: string }>(svc, 'POST', '/v1/keys/tenant/retirements', { tenant: 'acme', id: oldKid });
    expect(early.status).toBe(409);
    expect(early.body.detail).toMatch(/not merged yet/);

    await merger.merge();
    const logs = await svc.ctx.db.query<{ kind: string; sequence: string; status: string }>("SELECT kind, sequence::text, status FROM logs WHERE tenant = 'acme' AND kind = 'log' ORDER BY sequence");
    expect(logs.map((l) => `${l.sequence} ${l.status}`)).toEqual(['1 applied', '2 applied', '3 applied']);
    const [disk] = await svc.ctx.db.query<{ state: string }>("SELECT state FROM disks WHERE tenant = 'acme' AND vm = 'web01'");
    expect(disk!.state).toBe('replicating');
    await h!.expectReplicaEquals(source, 'after-rotation');
    expect((await operator(svc, 'POST', '/v1/keys/tenant/retirements', { tenant: 'acme', id: oldKid })).status).toBe(200);
  });
});
