/**
 * Processes killed with SIGKILL at random moments, again and again, on a VM of two VHDX replica disks
 * with a history of two hours: worker processes inside runs of merges, and the recovery-points jobs
 * (test/service/pointer-process.ts, the worker's Pointer with the hours handed to it) inside point
 * creation and inside pruning. After every round the replica equals the reference the test keeps,
 * every log is applied, the points the catalog keeps are exactly those in each disk's state.json, and
 * every kept point, exported through the operator API, equals the reference the test kept for that
 * point on every disk. A killed process's locks are removed by the test, as their TTL would expire;
 * the fencing token in state.json keeps order. Everything runs in a Redis database of its own.
 */
import { spawn } from 'node:child_process';
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Merger } from '../../service/workers/merger.js';
import { SimAgent, scribble } from './agent-sim.js';
import type { TestEnv } from './helpers.js';
import { claimRedisDb, enrolledAgent, operator, testEnv, testService } from './helpers.js';

const MiB = 1 << 20;
const DiskBytes = 8 * MiB;
const Disks = ['d0', 'd1'];
const History = 2;
const Rounds = 5;
const LogsPerRound = 3;
const MergeKillsPerRound = 2;
const Hour = 3_600_000;
/** Rounds are a bit over an hour apart, so the first points run of a round finds its point due. */
const RoundMs = Hour + 3 * 60_000;
/** In the future: a worker's own once-a-minute timer never finds a point due or old enough to prune. */
const t0 = Date.parse('2030-01-01T00:00:00.000Z');
const root = join(import.meta.dirname, '..', '..');
const bin = join(root, 'bin', 'lifeboat-service.js');
const pointerScript = join(import.meta.dirname, 'pointer-process.ts');

let env: TestEnv;
let svc: Awaited<ReturnType<typeof testService>>;
let redis: Redis;
let claim: Awaited<ReturnType<typeof claimRedisDb>>;
let childEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  claim = await claimRedisDb();
  env = await testEnv((c) => {
    c.replicaFormat = 'vhdx';
    c.mergeSweepMs = 50;
    c.redis = { url: claim.url };
  });
  childEnv = { ...process.env, REDIS_URL: claim.url };
  svc = await testService(env);
  redis = new Redis(claim.url, { maxRetriesPerRequest: null });
});
afterAll(async () => {
  redis?.disconnect();
  await svc?.stop();
  await env?.cleanup();
  await claim?.drop();
});

/** What a killed process held expires after its TTL; the test does not wait that long. */
async function expireLocks(): Promise<void> {
  const keys = await redis.keys('lifeboat:lock:*');
  if (keys.length > 0) await redis.del(...keys);
}

/**
 * Starts a worker process and SIGKILLs it at a random moment soon after it has applied something
 * more than `after` (so the kill lands inside a run of merges, not before the first).
 */
function runWorkerAndKill(progress: () => Promise<number>, after: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, 'worker', '--config', env.config.path], { stdio: ['ignore', 'ignore', 'ignore'], env: childEnv });
    let exited = false;
    child.on('error', reject);
    child.on('exit', () => {
      exited = true;
      resolve();
    });
    const watch = async () => {
      while (!exited && (await progress()) <= after) await new Promise((r) => setTimeout(r, 10));
      if (!exited) setTimeout(() => child.kill('SIGKILL'), Math.floor(Math.random() * 150));
    };
    watch().catch(reject);
  });
}

interface PointerRun {
  /** The phase the kill landed in, if it landed before the process finished. */
  killedIn: 'startup' | 'points' | 'prune' | undefined;
  made?: number;
  pointsMs?: number;
  pruned?: number;
  pruneMs?: number;
}

/**
 * Runs the points jobs at clock nowMs; with kill, SIGKILLs the process delayMs after it printed the
 * marker that starts the targeted phase (`ready` → points, `points` → prune).
 */
function runPointer(nowMs: number, kill?: { after: 'ready' | 'points'; delayMs: number }): Promise<PointerRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', pointerScript, env.config.path, String(nowMs)], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: childEnv });
    const run: PointerRun = { killedIn: 'startup' };
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const lines = out.split('\n');
      out = lines.pop()!;
      for (const line of lines) {
        const [word, n, ms] = line.split(' ');
        if (word === 'ready') run.killedIn = 'points';
        if (word === 'points') Object.assign(run, { killedIn: 'prune', made: Number(n), pointsMs: Number(ms) });
        if (word === 'done') Object.assign(run, { killedIn: undefined, pruned: Number(n), pruneMs: Number(ms) });
        if (kill && word === kill.after) setTimeout(() => child.kill('SIGKILL'), kill.delayMs);
      }
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve(run);
      else if (code === 0) resolve({ ...run, killedIn: undefined });
      else reject(new Error(`points process exited ${code}: ${err.slice(-2000)}`));
    });
  });
}

describe('processes killed mid-merge, mid-point and mid-prune', () => {
  it('leave the replica and every kept recovery point equal to their references', { timeout: 600_000 }, async () => {
    const agent = new SimAgent(svc, await enrolledAgent(svc, 'acme', '*', 'hv1.acme.example'), 'db');
    await agent.register(Disks.map((id) => ({ id, virtualSize: DiskBytes })), { history: History });
    const sources = new Map(Disks.map((d) => [d, Buffer.alloc(DiskBytes)]));
    // Logs of format 2: each round's logs of both disks carry the VM cycle (the sequence here).
    agent.cycle = { id: 1, capturedMs: t0 };
    for (const [d, source] of sources) await agent.commitBase(d, 1, 'full', source, [scribble(source, [[0, 2 * MiB]])]);
    const merger = new Merger(svc.ctx, redis);
    await merger.merge();
    const applied = async () => (await svc.ctx.db.query<{ s: number }>(`SELECT COALESCE(sum(applied_sequence), 0)::int8 AS s FROM disks WHERE vm = 'db'`))[0]!.s;
    /** Reference contents of each disk at each kept point, by the point's catalog id. */
    const refs = new Map<number, Map<string, Buffer>>();
    const kills = { merge: 0, points: 0, prune: 0 };
    const attempts = { points: 0, prune: 0 };
    const phaseMs = { points: 40, prune: 40 };
    const record = (r: PointerRun) => {
      if (r.killedIn === 'points' || r.killedIn === 'prune') kills[r.killedIn]++;
      if (r.made && r.pointsMs !== undefined) phaseMs.points = Math.max(5, r.pointsMs);
      if (r.pruned && r.pruneMs !== undefined) phaseMs.prune = Math.max(5, r.pruneMs);
    };
    let seq = 0;
    for (let round = 1; round <= Rounds; round++) {
      for (let i = 0; i < LogsPerRound; i++) {
        seq++;
        agent.cycle = { id: seq, capturedMs: t0 + seq * 1000 };
        for (const [d, source] of sources) {
          const at = ((seq * 3 + (d === 'd1' ? 2 : 0)) % 7) * MiB;
          const ranges: [number, number][] = [[at, MiB], [(at + 3 * MiB) % (7 * MiB), 256 * 1024]];
          ranges.sort((a, b) => a[0] - b[0]);
          await agent.commitLog(d, seq, await agent.sealed(d, 1, seq, source, scribble(source, ranges)));
        }
      }
      // Merges, with worker processes killed inside them.
      for (let k = 0; k < MergeKillsPerRound; k++) {
        const before = await applied();
        if (before >= seq * Disks.length) break;
        await runWorkerAndKill(applied, before);
        await expireLocks();
        kills.merge++;
      }
      await merger.merge();
      for (const [d, source] of sources) {
        expect(await agent.diskState(d), `round ${round} ${d}`).toMatchObject({ appliedSequence: seq, state: 'replicating', pendingLogs: 0 });
        expect((await agent.replica(d)).equals(source), `round ${round}: replica of ${d}`).toBe(true);
        // Layer files a kill left unnamed (a point's new top, a pruned layer) are gone after a merge.
        const dir = join(env.config.replicaRoot, 'acme', 'db', d);
        const { layers } = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as { layers: string[] };
        expect((await readdir(dir)).filter((f) => f.endsWith('.vhdx')).sort(), `round ${round}: layer files of ${d}`).toEqual([...layers].sort());
      }

      // The hour's point and the prune of points older than the history: killed inside points
      // creation, then (from the round that has a point to prune) inside pruning, then run to the
      // end a minute later, as the worker's next tick would.
      const now = t0 + round * RoundMs;
      attempts.points++;
      record(await runPointer(now, { after: 'ready', delayMs: Math.floor(Math.random() * phaseMs.points) }));
      await expireLocks();
      if (round > History) {
        attempts.prune++;
        record(await runPointer(now + 60_000, { after: 'points', delayMs: Math.floor(Math.random() * phaseMs.prune) }));
        await expireLocks();
      }
      record(await runPointer(now + 120_000));

      const points = await svc.ctx.db.query<{ id: number; layer: string; cycle: number }>(`SELECT id, layer, cycle FROM recovery_points WHERE tenant = 'acme' AND vm = 'db' ORDER BY created_at`);
      // This round's point is at the round's last cycle, on both disks.
      expect(points.at(-1)!.cycle, `round ${round}: the point's cycle`).toBe(seq);
      for (const p of points) if (!refs.has(p.id)) refs.set(p.id, new Map([...sources].map(([d, s]) => [d, Buffer.from(s)])));
      expect(points.length, `round ${round}: points kept`).toBe(Math.min(round, History));
      for (const d of Disks) {
        const state = JSON.parse(await readFile(join(env.config.replicaRoot, 'acme', 'db', d, 'state.json'), 'utf8')) as { layers: string[]; points: { name: string }[] };
        expect(state.points.map((p) => p.name), `round ${round}: points in ${d}'s state.json`).toEqual(points.map((p) => p.layer));
        expect(state.layers.length, `round ${round}: layers of ${d}`).toBeLessThanOrEqual(History + 2);
      }
      for (const p of points) {
        for (const d of Disks) {
          const out = join(env.dir, `export-${p.id}-${d}.raw`);
          const r = await operator(svc, 'POST', '/v1/tenants/acme/vms/db/exports', { disk: d, point: String(p.id), format: 'raw', path: out });
          expect(r.status, JSON.stringify(r.body)).toBe(201);
          expect((await readFile(out)).equals(refs.get(p.id)!.get(d)!), `round ${round}: point ${p.layer} of ${d}`).toBe(true);
          await rm(out);
        }
      }
      for (const [id] of refs) if (!points.some((p) => p.id === id)) refs.delete(id);
    }
    expect(kills.merge).toBeGreaterThanOrEqual(Rounds);
    expect(attempts).toEqual({ points: Rounds, prune: Rounds - History });
    const rows = await svc.ctx.db.query<{ status: string }>(`SELECT status FROM logs WHERE kind = 'log' ORDER BY sequence`);
    expect(rows.every((r) => r.status === 'applied' || r.status === 'skipped')).toBe(true);
    // Where the kills landed depends on the machine's pace; it is reported, not asserted.
    console.info(`kill test: ${kills.merge} workers killed in merges; points jobs killed ${kills.points}× in point creation, ${kills.prune}× in pruning`);
  });
});
