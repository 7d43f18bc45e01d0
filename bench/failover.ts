/**
 * Failover bench: the service's own share of a failover, and the whole time to ready of a real guest.
 * - Request to qemu started (the point cut, pinned and exported, the overlays made, qemu running) for a
 *   1 GiB and a 100 GiB sparse replica: goal ≤ 2 s for both; it must not grow with the disk's size.
 * - The test guest (Debian, SeaBIOS, TCG here) from request to ready, and the service's share of it:
 *   request to qemu started, plus the delay between the guest answering a probe and ready being
 *   recorded: goal ≤ 3 s.
 * - N concurrent test failovers of the guest (10; 3 with --quick): time until all are ready, and the
 *   peak RSS of the failover host's process (here the bench process, which also runs the agent).
 * The service runs in this process with its embedded failover host (real PostgreSQL and Redis), as
 * the failover tests run it; nothing here is a pass/fail test.
 */
import { execFileSync } from 'node:child_process';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { cachedGuest } from '../service/guest/cache.js';
import type { FailoverReport } from '../service/failover/report.js';
import { FailoverScenario, must } from '../test/failover/failover-harness.js';
import type { Benchmark, BenchRow } from './lib.js';

const GiB = 2 ** 30;

function stepEnd(r: FailoverReport, step: string): number | undefined {
  const s = r.steps.find((x) => x.step === step && x.status === 'done');
  return s?.endedAt ? Date.parse(s.endedAt) : undefined;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Progress on stderr: the guests' part runs for many minutes under TCG. */
const note = (m: string) => process.stderr.write(`bench: failover: ${m}\n`);
const since = (t0: number) => `${((Date.now() - t0) / 1000).toFixed(0)} s`;

/** A sparse raw disk of size bytes with 64 MiB of data at its start and 16 MiB at its end. */
async function sparseDisk(path: string, size: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
    const chunk = Buffer.alloc(16 << 20, 0x5a);
    for (let i = 0; i < 4; i++) await fh.write(chunk, 0, chunk.length, i * chunk.length);
    await fh.write(chunk, 0, chunk.length, size - chunk.length);
  } finally {
    await fh.close();
  }
}

async function startToQemu(s: FailoverScenario, vm: string, rounds: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const r = must(await s.api('POST', `/v1/tenants/acme/vms/${vm}/failovers`, { kind: 'test', point: 'latest' }), 'test failover');
    const started = await s.waitFor(r.body.id, (x) => stepEnd(x, 'start') !== undefined, 120_000);
    times.push((stepEnd(started, 'start')! - Date.parse(started.requestedAt)) / 1000);
    const t0 = Date.parse(started.requestedAt);
    note(`${vm}: round ${i + 1}: qemu started ${times.at(-1)!.toFixed(2)} s after the request (${started.steps.filter((x) => x.endedAt).map((x) => `${x.step} ${x.status} at ${((Date.parse(x.endedAt!) - t0) / 1000).toFixed(2)}`).join(', ')})`);
    must(await s.api('POST', `/v1/failovers/${r.body.id}/stop`, {}), 'stop');
    await s.waitFor(r.body.id, (x) => x.endedAt !== null, 120_000);
  }
  return times;
}

export const failoverBench: Benchmark = {
  name: 'failover',
  description: 'test failovers: request to qemu started (1 GiB, 100 GiB sparse), the test guest to ready under TCG and the service\'s share, N at once',
  async run(ctx) {
    const rows: BenchRow[] = [];
    // N guests at once under TCG on a small host take long to boot: an hour before a failover is
    // given up, instead of the tests' 15 minutes.
    const s = await FailoverScenario.start({ configure: (f) => { f['readyTimeoutSeconds'] = 3600; } });
    let peakRss = process.memoryUsage().rss;
    const rss = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss); }, 500);
    try {
      // The service's own share: no guest needs to boot (the disks hold nothing bootable).
      for (const [vm, size] of [['small', GiB], ['large', 100 * GiB]] as const) {
        const disk = join(s.env.dir, `${vm}.raw`);
        await sparseDisk(disk, size);
        await s.protect(vm, [disk]);
      }
      let t0 = Date.now();
      await s.replicate();
      note(`1 GiB and 100 GiB sparse disks replicated (initial copies, merges) in ${since(t0)}`);
      for (const [vm, size] of [['small', GiB], ['large', 100 * GiB]] as const) {
        must(await s.api('PUT', `/v1/tenants/acme/vms/${vm}/hardware`, { firmware: 'bios', cpus: 1, memoryMiB: 128, guestOs: 'other', readyProbes: [{ kind: 'console', pattern: 'never-printed' }] }), 'hardware');
        const times = await startToQemu(s, vm, ctx.quick ? 2 : 5);
        const m = median(times);
        rows.push({ name: `failover: request to qemu started, ${size / GiB} GiB sparse`, ours: `${m.toFixed(2)} s`, peer: '-', ratio: `max ${Math.max(...times).toFixed(2)} s`, goal: '≤ 2 s', ok: m <= 2 });
      }

      // The test guest to ready, one and then N at once.
      const image = await cachedGuest({ firmware: 'bios', format: 'raw', cloudInit: true });
      const disk = join(s.env.dir, 'web01.raw');
      execFileSync('cp', ['--sparse=always', image, disk]);
      await s.protect('web01', [disk]);
      t0 = Date.now();
      await s.replicate();
      note(`the test guest's disk replicated in ${since(t0)}; booting it`);
      must(await s.api('PUT', '/v1/tenants/acme/vms/web01/hardware', { firmware: 'bios', cpus: 1, memoryMiB: 512, guestOs: 'linux' }), 'hardware');
      const one = must(await s.api('POST', '/v1/tenants/acme/vms/web01/failovers', { kind: 'test', point: 'latest' }), 'test failover');
      t0 = Date.now();
      const ready = await s.waitFor(one.body.id, (x) => x.state === 'ready', 60 * 60_000);
      note(`the test guest is ready after ${since(t0)}`);
      const toQemu = (stepEnd(ready, 'start')! - Date.parse(ready.requestedAt)) / 1000;
      const lagMs = Number(/ready recorded (\d+) ms after/.exec(ready.steps.find((x) => x.step === 'wait-ready')?.detail ?? '')?.[1] ?? NaN);
      rows.push({ name: 'failover: test guest to ready (TCG, SeaBIOS)', ours: `${ready.rtoSeconds} s`, peer: '-', ratio: '-', goal: 'report', ok: undefined });
      rows.push({ name: 'failover: service share of time to ready', ours: `${(toQemu + lagMs / 1000).toFixed(2)} s`, peer: '-', ratio: `${toQemu.toFixed(2)} s + ${lagMs} ms`, goal: '≤ 3 s', ok: toQemu + lagMs / 1000 <= 3 });
      must(await s.api('POST', `/v1/failovers/${one.body.id}/stop`, {}), 'stop');
      await s.waitFor(one.body.id, (x) => x.endedAt !== null, 120_000);

      const n = ctx.quick ? 3 : 10;
      t0 = Date.now();
      const ids: string[] = [];
      for (let i = 0; i < n; i++) ids.push(must(await s.api('POST', '/v1/tenants/acme/vms/web01/failovers', { kind: 'test', point: 'latest' }), 'test failover').body.id);
      note(`${n} test failovers of the guest requested at once`);
      let readyCount = 0;
      await Promise.all(ids.map(async (id) => {
        await s.waitFor(id, (x) => x.state === 'ready', 60 * 60_000);
        note(`${++readyCount} of ${n} ready after ${since(t0)}`);
      }));
      const all = (Date.now() - t0) / 1000;
      rows.push({ name: `failover: ${n} test failovers at once, all ready`, ours: `${all.toFixed(0)} s`, peer: '-', ratio: `host RSS ${(peakRss / 2 ** 20).toFixed(0)} MiB`, goal: 'report', ok: undefined });
      for (const id of ids) must(await s.api('POST', `/v1/failovers/${id}/stop`, {}), 'stop');
      for (const id of ids) await s.waitFor(id, (x) => x.endedAt !== null, 300_000);
    } finally {
      clearInterval(rss);
      await s.stop();
    }
    return rows;
  },
};
