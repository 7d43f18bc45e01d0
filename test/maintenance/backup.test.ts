/**
 * Backup and restore on the embedded catalog: a VM replicates with a recovery point, serve stops, the
 * data directory is backed up, restored into a new data directory by the CLI, and a service started
 * on it takes the same agent's next log (same certificate, same replica key) and merges it, with the
 * point still exporting as the agent's disk was. The archive holds no key in the clear, and a wrong
 * passphrase is one line. Real Redis, PGlite, VHDX.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../service/config/config.js';
import { listVms } from '../../service/catalog/vms.js';
import { readBackup, writeBackup } from '../../service/maintenance/backup.js';
import { Merger } from '../../service/workers/merger.js';
import { Pointer } from '../../service/workers/points-job.js';
import { runBin } from '../helpers.js';
import { SimAgent, scribble } from '../service/agent-sim.js';
import type { TestEnv } from '../service/helpers.js';
import { TestRedisUrl, enrolledAgent, operator, testEnv, testService } from '../service/helpers.js';

const MiB = 1 << 20;
let env: TestEnv;
let redis: Redis;
const stops: (() => Promise<void>)[] = [];

beforeAll(async () => {
  env = await testEnv((c) => {
    c.catalog = { kind: 'pglite', dir: 'catalog' };
    c.replicaFormat = 'vhdx';
  });
  redis = new Redis(TestRedisUrl, { maxRetriesPerRequest: null });
}, 120_000);
afterAll(async () => {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
  redis?.disconnect();
  await env?.cleanup();
});

describe('backup and restore', () => {
  it('restores into a new data directory, and replication from the existing agent goes on', async () => {
    const prefix = `lifeboat-test-${env.schema}`;
    const a = await testService(env);
    let stopA = async () => a.stop();
    stops.push(() => stopA());
    const id = await enrolledAgent(a, 'acme', '*', 'hv1.acme.example');
    const agentA = new SimAgent(a, id, 'web');
    await agentA.register([{ id: 'd0', virtualSize: 4 * MiB }], { history: 2 });
    const source = Buffer.alloc(4 * MiB);
    agentA.cycle = { id: 1, capturedMs: Date.now() };
    await agentA.commitBase('d0', 1, 'full', source, [scribble(source, [[0, MiB]])]);
    agentA.cycle = { id: 2, capturedMs: Date.now() };
    await agentA.commitLog('d0', 1, await agentA.sealed('d0', 1, 1, source, scribble(source, [[2 * MiB, 64 * 1024]])));
    await new Merger(a.ctx, redis, prefix).merge();
    const vm = (await listVms(a.ctx.db))[0]!;
    expect(await new Pointer(a.ctx, redis, prefix).makePoint(vm, new Date())).toBe(true);
    const atPoint = Buffer.from(source);
    await a.stop();
    stopA = async () => undefined;

    const pass = join(env.dir, 'pass');
    await writeFile(pass, 'a passphrase of some length\n');
    const out = join(env.dir, 'lifeboat.backup');
    const written = await writeBackup(env.config, out, 'a passphrase of some length');
    expect(written.catalog).toBe('pglite');
    const archive = await readFile(out, 'utf8');
    for (const f of [env.config.trust.masterKeyFile, env.config.trust.caKeyFile]) {
      const secret = (await readFile(f, 'utf8')).trim().split('\n').filter((l) => !l.startsWith('-----')).join('');
      expect(archive.includes(secret.slice(0, 24)), `${f} in the clear`).toBe(false);
    }
    await expect(readBackup(out, 'not the passphrase at all')).rejects.toThrow(`${out}: wrong passphrase, or the backup was altered`);

    const restored = join(env.dir, 'restored');
    const r = await runBin('service', ['restore', out, '--data-dir', restored, '--passphrase-file', pass, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const configB = await loadConfig(JSON.parse(r.stdout).configPath as string);
    expect(configB.catalog).toEqual({ kind: 'pglite', dir: join(restored, 'catalog') });
    expect(configB.replicaRoot).toBe(env.config.replicaRoot);
    const again = await runBin('service', ['restore', out, '--data-dir', restored, '--passphrase-file', pass]);
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toBe(`lifeboat-service: ${join(restored, 'lifeboat.json')} already exists; restore makes a new data directory`);

    const b = await testService({ ...env, config: configB });
    stops.push(() => b.stop());
    const agentB = new SimAgent(b, id, 'web');
    agentB.cycle = { id: 3, capturedMs: Date.now() };
    const c = await agentB.commitLog('d0', 2, await agentB.sealed('d0', 1, 2, source, scribble(source, [[3 * MiB, 64 * 1024]])));
    expect(c.status).toBe('accepted');
    await new Merger(b.ctx, redis, prefix).merge();
    expect(await agentB.diskState('d0')).toMatchObject({ generation: 1, appliedSequence: 2, state: 'replicating' });
    expect((await agentB.replica('d0')).equals(source)).toBe(true);
    const points = await operator<{ points: { id: string; latest: boolean }[] }>(b, 'GET', '/v1/tenants/acme/vms/web/points');
    const point = points.body.points.find((p) => !p.latest)!;
    const exp = join(env.dir, 'point.raw');
    expect((await operator(b, 'POST', '/v1/tenants/acme/vms/web/exports', { disk: 'd0', point: point.id, format: 'raw', path: exp })).status).toBe(201);
    expect((await readFile(exp)).equals(atPoint)).toBe(true);
  }, 900_000);
});
