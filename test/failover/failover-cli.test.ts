/**
 * `lifeboat-service failover …` through the real binary against a running service with its failover
 * host (real PostgreSQL, Redis, qemu): hardware, test, list, show, wait, stop, and each mistake as one
 * line on stderr with exit 1 and nothing changed. The VM's disk holds nothing bootable and its only
 * readiness probe never answers, so the failover stays booting until it is stopped: what is checked
 * here is the command line, not a guest (failover-e2e.test.ts boots one).
 *
 * Skipped only where qemu-system-x86_64 is missing (said on stderr).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FailoverReport } from '../../service/failover/report.js';
import { referee, runBin } from '../helpers.js';
import { refused } from '../cli-expect.js';
import type { CommandOutput } from '../helpers.js';
import { FailoverScenario, qemuAvailable } from './failover-harness.js';

const hasQemu = qemuAvailable('the failover CLI tests');
let s: FailoverScenario;
let config: string;

const cli = (...args: string[]): Promise<CommandOutput> => runBin('service', [...args, '--config', config]);


describe.skipIf(!hasQemu)('lifeboat-service failover', () => {
  // Each run of the binary loads the TypeScript sources afresh: seconds apiece on a busy machine.
  const slow = 600_000;

  beforeAll(async () => {
    s = await FailoverScenario.start();
    const disk = join(s.env.dir, 'web1.vhdx');
    await referee('qemu-img', ['create', '-q', '-f', 'vhdx', disk, '8M']);
    await s.protect('web1', [disk]);
    await s.replicate();
    // The CLI finds the service by the config's api.port; the test service listens on a port of its own.
    const file = JSON.parse(await readFile(s.env.config.path, 'utf8')) as { api: { port: number } };
    file.api.port = Number(new URL(s.svc.apiUrl).port);
    config = join(dirname(s.env.config.path), 'cli.json');
    await writeFile(config, JSON.stringify(file));
  }, 180_000);

  afterAll(async () => {
    await s?.stop();
  }, 120_000);

  it('records the VM\'s hardware and refuses bad values in one line', async () => {
    const set = await cli('failover', 'hardware', 'web1', '--tenant', 'acme', '--firmware', 'bios', '--cpus', '1', '--memory', '128', '--ready', 'console:never-printed', '--json');
    expect(set.code, set.stderr).toBe(0);
    const hw = JSON.parse(set.stdout) as { firmware: string; cpus: number; memoryMiB: number; readyProbes: unknown[] };
    expect(hw).toMatchObject({ firmware: 'bios', cpus: 1, memoryMiB: 128, readyProbes: [{ kind: 'console', pattern: 'never-printed' }] });
    const shown = await cli('failover', 'hardware', 'web1', '--tenant', 'acme');
    expect(shown.stdout).toMatch(/^firmware\s+bios$/m);
    expect(shown.stdout).toMatch(/^cpus\s+1$/m);
    await Promise.all([
      refused(cli('failover', 'hardware', 'web1', '--tenant', 'acme', '--cpus', 'many'), /^lifeboat-service: --cpus "many" is not a whole number\n$/),
      refused(cli('failover', 'hardware', 'web1', '--tenant', 'acme', '--disk', 'disk0=floppy'), /^lifeboat-service: --disk "disk0=floppy": expected ID=BUS\[:ORDER\]/),
      refused(cli('failover', 'hardware', 'web1', '--tenant', 'acme', '--ready', 'ping:x'), /^lifeboat-service: --ready "ping:x": guest-agent, console:REGEX or tcp:HOST:PORT\n$/),
      refused(cli('failover', 'hardware', 'web1', '--tenant', 'acme', '--firmware', 'coreboot'), /^lifeboat-service: .*firmware/),
      refused(cli('failover', 'hardware', 'nosuch', '--tenant', 'acme'), /^lifeboat-service: .*nosuch/),
    ]);
    const after = JSON.parse((await cli('failover', 'hardware', 'web1', '--tenant', 'acme', '--json')).stdout) as typeof hw;
    expect(after).toEqual(hw);
  }, slow);

  it('starts a test failover, lists and shows it, waits with a timeout, and stops it leaving nothing', async () => {
    const started = await cli('failover', 'test', 'web1', '--tenant', 'acme');
    expect(started.code, started.stderr).toBe(0);
    const [id, kind] = started.stdout.trim().split('\t');
    expect(kind).toBe('test');
    expect(id).toMatch(/\S/);

    const listed = JSON.parse((await cli('failover', 'list', '--tenant', 'acme', '--active', '--json')).stdout) as { id: string; vm: string; kind: string }[];
    expect(listed.map((f) => [f.id, f.vm, f.kind])).toEqual([[id, 'web1', 'test']]);
    expect((await cli('failover', 'list', '--tenant', 'other', '--json')).stdout.trim()).toBe('[]');

    // The disk holds nothing bootable: the failover waits for its probe until stopped.
    await s.waitFor(id!, (r) => r.steps.some((st) => st.step === 'start' && st.status === 'done'), 300_000);
    const shown = await cli('failover', 'show', id!);
    expect(shown.stdout).toMatch(new RegExp(`^failover\\s+${id}$`, 'm'));
    expect(shown.stdout).toMatch(/^kind\s+test$/m);
    expect(shown.stdout).toMatch(/^vm\s+acme\/web1$/m);
    expect(shown.stdout).toMatch(/^\s+\S+\s+start\s+done/m);
    const waited = await cli('failover', 'wait', id!, '--timeout', '2s');
    expect(waited.code).toBe(1);
    expect(waited.stderr).toMatch(new RegExp(`^lifeboat-service: failover ${id} is still booting after 2s$`, 'm'));
    // A test failover is not committed, nor reverted: one line naming its state.
    await refused(cli('failover', 'commit', id!), /^lifeboat-service: .*test/);

    const stopped = await cli('failover', 'stop', id!);
    expect(stopped.stdout).toBe(`${id}\tbooting\tasked: stopped\n`);
    const ended = await cli('failover', 'wait', id!, '--for', 'ended', '--timeout', '5m', '--json');
    expect(ended.code, ended.stderr).toBe(0);
    const report = JSON.parse(ended.stdout) as FailoverReport;
    expect(report.state).toBe('stopped');
    expect(report.endedAt).not.toBeNull();
    expect(await s.svc.ctx.db.query('SELECT * FROM point_pins')).toEqual([]);
    expect(JSON.parse((await cli('failover', 'list', '--active', '--json')).stdout)).toEqual([]);
  }, slow);

  it('answers mistakes in one line and starts nothing', async () => {
    await Promise.all([
      refused(cli('failover', 'test', 'nosuch', '--tenant', 'acme'), /^lifeboat-service: .*nosuch/),
      refused(cli('failover', 'test', 'web1', '--tenant', 'acme', '--point', '999999'), /^lifeboat-service: .*999999/),
      refused(cli('failover', 'planned', 'web1', '--tenant', 'acme', '--point', 'latest'), /^lifeboat-service: a planned failover starts from the final cycle: it takes no --point\n$/),
      refused(cli('failover', 'show', 'fo-nosuch'), /^lifeboat-service: .*fo-nosuch/),
      refused(cli('failover', 'wait', 'fo-nosuch', '--for', 'lunch'), /^lifeboat-service: --for lunch: ready or ended\n$/),
    ]);
    // A missing option is commander's line, with the pointer to --help.
    const noPoint = await cli('failover', 'start', 'web1', '--tenant', 'acme');
    expect(noPoint.code).toBe(1);
    expect(noPoint.stderr).toBe('error: required option \'--point <point>\' not specified\n(run with --help for usage)\n');
    expect(JSON.parse((await cli('failover', 'list', '--active', '--json')).stdout)).toEqual([]);
  }, slow);
});
