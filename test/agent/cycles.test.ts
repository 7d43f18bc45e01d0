/**
 * VM cycles in the agent: every disk's log of one VM cycle carries one cycle id and one capture time,
 * in its authenticated header and in its commit; a base carries the cycle it started in; ids only
 * rise, across restarts and a cycle that died after sealing (its log is shipped later with its own
 * id). The clock is fixed, so the ids come from the state, not from the time. Against the fake service
 * of local-service.ts over a real file object store.
 */
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EngineContext } from '../../agent/replicate/context.js';
import { silentLogger } from '../../agent/replicate/context.js';
import { Replicator } from '../../agent/replicate/engine.js';
import type { VmConfig } from '../../agent/state/schema.js';
import { AgentState } from '../../agent/state/store.js';
import type { AgentTransport, ObjectCommit } from '../../agent/transport/types.js';
import { generateKeyPair } from '../../shared/crypto/keys.js';
import type { KeyPair } from '../../shared/crypto/keys.js';
import { createDisk, openDisk } from '../../shared/disk/index.js';
import { readLog } from '../../shared/log/index.js';
import { FileStore } from '../../shared/objectstore/file.js';
import { chunkKey } from '../../shared/objectstore/keys.js';
import { scratchDir } from '../helpers.js';
import { LocalService } from './local-service.js';

const MiB = 1 << 20;
/** The agent's clock, fixed: a cycle's id is max(nextCycle, this), so after the first they come from the state. */
const Now = Date.parse('2026-12-01T10:00:00.000Z');

let dir: string;
let remove: () => Promise<void>;
let keys: KeyPair;
beforeAll(async () => {
  ({ path: dir, remove } = await scratchDir('lifeboat-agent-cycles-'));
  keys = await generateKeyPair();
});
afterAll(() => remove());

type LogCommit = ObjectCommit & { sequence: number; cycle?: number; capturedAt?: string };

describe('VM cycles', () => {
  it('gives every disk of a cycle one id and capture time, rising across cycles, failures and restarts', async () => {
    const state = new AgentState(join(dir, 'state'));
    await state.init();
    await mkdir(join(dir, 'replicas'), { recursive: true });
    const paths = ['disk0', 'disk1'].map((d) => join(dir, `${d}.raw`));
    for (const p of paths) {
      const disk = await createDisk(p, 'raw', { virtualSize: 8 * MiB });
      await disk.write(MiB, randomBytes(MiB));
      await disk.close();
    }
    const store = new FileStore(join(dir, 'store'));
    const service = new LocalService(store, 'acme', keys.privateKey, join(dir, 'replicas'));
    const commits: { disk: string; commit: LogCommit }[] = [];
    let failLogGrants = false;
    // The fake service, with the log commits recorded and log grants failing on demand.
    const transport = new Proxy(service, {
      get(target, prop, receiver) {
        if (prop === 'commitLog') {
          return async (vm: string, disk: string, c: LogCommit) => {
            commits.push({ disk, commit: c });
            return target.commitLog(vm, disk, c);
          };
        }
        if (prop === 'grant') {
          return async (vm: string, disk: string, r: Parameters<AgentTransport['grant']>[2]) => {
            if (failLogGrants && r.kind === 'log') throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
            return target.grant(vm, disk, r);
          };
        }
        const v: unknown = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const config: VmConfig = {
      version: 1, name: 'db', disks: paths.map((path, i) => ({ id: `disk${i}`, path })), frequencyMs: 300_000, history: 0, appConsistentEveryMs: null,
      preSnapshot: null, postSnapshot: null, compression: 'zstd', initial: { mode: 'network' }, startAt: null,
      bandwidthBytesPerSec: null, paused: false, createdAt: new Date(Now).toISOString(),
    };
    await state.writeConfig(config);
    const engine = () => {
      const ctx: EngineContext = { state, transport, tenant: 'acme', recipient: keys.publicKey, logger: silentLogger, now: () => new Date(Now), retry: { attempts: 1 }, sealThreads: 0 };
      return new Replicator(ctx);
    };
    const write = async (i: number, offset: number) => {
      const d = await openDisk(paths[i]!);
      await d.write(offset, randomBytes(4096));
      await d.close();
    };
    /** The cycle and capture time in the authenticated header of a stored log, read as the merge worker does. */
    const headerOf = async (key: string) => (await readLog(await store.get(key), { key: keys.privateKey })).header;

    // The first cycle: both bases, then a log of each disk, all of one cycle.
    expect((await engine().cycle('db')).outcome).toBe('ok');
    expect(commits.map((c) => [c.disk, c.commit.cycle, c.commit.capturedAt])).toEqual([['disk0', Now, new Date(Now).toISOString()], ['disk1', Now, new Date(Now).toISOString()]]);
    for (const c of commits) expect(await headerOf(c.commit.key)).toMatchObject({ cycle: Now, capturedMs: Now });
    const chunk = await headerOf(chunkKey({ tenant: 'acme', vm: 'db', disk: 'disk1' }, 1, 0));
    expect(chunk).toMatchObject({ kind: 'full', cycle: Now, capturedMs: Now });

    // The next cycle, with the clock standing still: the next id.
    await write(0, 0);
    expect((await engine().cycle('db')).outcome).toBe('ok');
    expect(commits.slice(2).map((c) => [c.disk, c.commit.cycle])).toEqual([['disk0', Now + 1], ['disk1', Now + 1]]);

    // A cycle that dies after disk0's log was sealed and recorded in flight: its id is never taken again.
    await write(1, 2 * MiB);
    failLogGrants = true;
    await expect(engine().cycle('db')).rejects.toThrow();
    expect((await state.readProgress('db')).nextCycle).toBe(Now + 3);
    const inflight = (await state.readProgress('db')).disks.disk0!.inflight;
    expect(inflight.map((o) => [o.kind, o.cycle])).toEqual([['log', Now + 2]]);

    // Restarted (a new engine over the same state): the log in flight ships with its own cycle, then a new cycle.
    failLogGrants = false;
    expect((await engine().cycle('db')).outcome).toBe('ok');
    const after = commits.slice(4).map((c) => [c.disk, c.commit.sequence, c.commit.cycle]);
    expect(after).toEqual([['disk0', 3, Now + 2], ['disk0', 4, Now + 3], ['disk1', 3, Now + 3]]);
    for (const c of commits.slice(4)) expect((await headerOf(c.commit.key)).cycle).toBe(c.commit.cycle);
    const ids = commits.map((c) => `${c.disk}:${c.commit.cycle}`);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
