/**
 * `lifeboat-service plan …` through the real binary against a running service whose failover host
 * runs the webhook driver (a real orchestrator on loopback): create from a YAML file and from flags,
 * list, show, run --wait, runs, report as JSON and as the printable HTML page, stop; each mistake one
 * line on stderr with exit 1.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlanRunReport } from '../../service/plans/report.js';
import { refused } from '../cli-expect.js';
import { runBin } from '../helpers.js';
import type { CommandOutput } from '../helpers.js';
import { PlanScenario } from './plan-harness.js';

let p: PlanScenario;
let config: string;
const cli = (...args: string[]): Promise<CommandOutput> => runBin('service', [...args, '--config', config]);


describe('lifeboat-service plan', () => {
  // Each run of the binary loads the TypeScript sources afresh: seconds apiece on a busy machine.
  const slow = 600_000;

  beforeAll(async () => {
    p = await PlanScenario.start();
    await p.vms(['db1', 'web1']);
    const file = JSON.parse(await readFile(p.s.env.config.path, 'utf8')) as { api: { port: number } };
    file.api.port = Number(new URL(p.s.svc.apiUrl).port);
    config = join(dirname(p.s.env.config.path), 'cli.json');
    await writeFile(config, JSON.stringify(file));
  }, 180_000);

  afterAll(async () => {
    await p?.stop();
  }, 120_000);

  it('creates plans from YAML and from flags, lists and shows them, refuses mistakes in one line', async () => {
    const yamlFile = join(p.s.env.dir, 'site.yaml');
    await writeFile(yamlFile, 'name: site\npoint: latest\ngroups:\n  - name: db\n    vms: [db1]\n    after:\n      - kind: wait-ready\n        timeoutSeconds: 60\n  - vms: [web1]\n');
    const created = await cli('plan', 'create', yamlFile, '--tenant', 'acme');
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/^group 1 \(db\)\s+on failure stop; before: -; after: wait-ready$/m);
    expect(created.stdout).toMatch(/^webhook secret whsec_/m);
    const flags = await cli('plan', 'create', '--tenant', 'acme', '--name', 'quick', '--group', 'db1', '--group', 'web1', '--on-failure', 'continue', '--json');
    expect(flags.code, flags.stderr).toBe(0);
    expect(JSON.parse(flags.stdout)).toMatchObject({ name: 'quick', groups: [{ vms: ['db1'], onFailure: 'continue' }, { vms: ['web1'] }] });
    const list = await cli('plan', 'list', '--tenant', 'acme', '--json');
    expect((JSON.parse(list.stdout) as { name: string }[]).map((x) => x.name)).toEqual(['quick', 'site']);
    const shown = await cli('plan', 'show', 'site', '--tenant', 'acme');
    expect(shown.stdout).toMatch(/^ {2}db1$/m);
    await refused(cli('plan', 'create', '--tenant', 'acme', '--name', 'bad', '--group', 'db1,nope'), /tenant acme has no VM nope/);
    await refused(cli('plan', 'create', join(p.s.env.dir, 'missing.yaml'), '--tenant', 'acme'), /missing\.yaml/);
    await refused(cli('plan', 'run', 'nope', '--tenant', 'acme', '--mode', 'test'), /tenant acme has no plan nope/);
    await refused(cli('plan', 'run', 'site', '--tenant', 'acme', '--mode', 'drill'), /--mode drill: test, planned or unplanned/);
    const help = await cli('plan', '--help');
    expect(help.stdout).toMatch(/create.*\n(.|\n)*report/);
  }, slow);

  it('runs a plan and waits, lists its runs, reports as JSON and HTML, stops its VMs', async () => {
    const run = await cli('plan', 'run', 'site', '--tenant', 'acme', '--mode', 'test', '--wait', '--json');
    expect(run.code, run.stderr).toBe(0);
    const r = JSON.parse(run.stdout) as PlanRunReport;
    expect(r.state).toBe('completed');
    expect(run.stderr).toMatch(/group 1 \(db\) after: wait-ready done/);
    const runs = await cli('plan', 'runs', 'site', '--tenant', 'acme');
    expect(runs.stdout).toMatch(new RegExp(`^${r.id}\ttest\tcompleted\tstep 4/4\t`, 'm'));
    const report = await cli('plan', 'report', 'site', r.id, '--tenant', 'acme');
    expect(report.stdout).toMatch(/^vms\s+2: 2 ready, 0 failed$/m);
    expect(report.stdout).toMatch(/^ {2}vm db1\s+group 1\s+ready/m);
    const html = join(p.s.env.dir, 'report.html');
    expect((await cli('plan', 'report', 'site', r.id, '--tenant', 'acme', '--html', html)).code).toBe(0);
    expect(await readFile(html, 'utf8')).toMatch(/<h1>Recovery plan site: test run/);
    const stop = await cli('plan', 'stop', 'site', r.id, '--tenant', 'acme');
    expect(stop.code, stop.stderr).toBe(0);
    await p.waitRun('acme', 'site', r.id, (x) => x.vms.every((v) => v.state === 'stopped'), 60_000);
    await refused(cli('plan', 'approve', 'site', r.id, '--tenant', 'acme'), /is completed/);
  }, 600_000);
});
