/**
 * `lifeboat-service plan …`: recovery plans and their runs, a client of the running service's API
 * (docs/plans.md).
 *   plan create [FILE] --tenant T [--name N] [--group VM,VM…]… [--point P] [--on-failure stop|continue]
 *                                         from a JSON or YAML file, or from flags (one --group per group, in order)
 *   plan list --tenant T | plan show NAME --tenant T | plan delete NAME --tenant T
 *   plan run NAME --tenant T --mode test|planned|unplanned [--wait]   --wait prints each step until the run ends or waits
 *   plan runs NAME --tenant T
 *   plan report NAME RUN --tenant T [--json | --html FILE]
 *   plan approve|cancel|stop NAME RUN --tenant T
 * Every command takes --json (machine-readable output) and --help.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument, LifeboatError, userMessage } from '../../shared/errors.js';
import { parseDuration } from '../../shared/units.js';
import type { PlanRunReport } from '../plans/report.js';
import type { ApiClient } from './common.js';
import { apiClient, withConfig } from './common.js';

type Opts = { config?: string; json?: boolean; tenant: string };
const seg = encodeURIComponent;
const many = (v: string, acc: string[]) => [...acc, v];
const base = (o: Opts) => `/v1/tenants/${seg(o.tenant)}/plans`;

interface PlanOut { name: string; description: string; point: string; groups: { name?: string; vms: string[]; onFailure: string; before: { kind: string }[]; after: { kind: string }[] }[]; webhookSecret?: string }

/** The plan body from a file (JSON or YAML, by its first character) or from flags. */
async function planBody(file: string | undefined, o: { name?: string; group: string[]; point?: string; onFailure?: string; description?: string }): Promise<Record<string, unknown>> {
  if (file !== undefined) {
    if (o.group.length > 0) throw ErrInvalidArgument('give the groups in the file or with --group, not both');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw ErrInvalidArgument(userMessage(err) ?? `${file}: cannot be read`);
    }
    let body: unknown;
    try {
      body = /^\s*[{[]/.test(text) ? JSON.parse(text) : parseYaml(text);
    } catch (err) {
      throw ErrInvalidArgument(`${file}: not JSON or YAML (${(err as Error).message.split('\n')[0]})`);
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw ErrInvalidArgument(`${file}: a plan is an object with name and groups`);
    return { ...(body as Record<string, unknown>), ...(o.name ? { name: o.name } : {}) };
  }
  if (!o.name) throw ErrInvalidArgument('--name is required without a file');
  if (o.group.length === 0) throw ErrInvalidArgument('at least one --group VM,VM… is required without a file');
  return {
    name: o.name, ...(o.description ? { description: o.description } : {}), ...(o.point ? { point: o.point } : {}),
    groups: o.group.map((g) => ({ vms: g.split(',').map((v) => v.trim()).filter(Boolean), ...(o.onFailure ? { onFailure: o.onFailure } : {}) })),
  };
}

function printPlan(p: PlanOut): void {
  process.stdout.write(`plan          ${p.name}\npoint         ${p.point}\n${p.description ? `description   ${p.description}\n` : ''}`);
  p.groups.forEach((g, i) => {
    const acts = (a: { kind: string }[]) => a.map((x) => x.kind).join(', ') || '-';
    process.stdout.write(`group ${i + 1}${g.name ? ` (${g.name})` : ''}  on failure ${g.onFailure}; before: ${acts(g.before)}; after: ${acts(g.after)}\n  ${g.vms.join(' ')}\n`);
  });
}

function printRun(r: PlanRunReport): void {
  const line = (k: string, v: unknown) => process.stdout.write(`${k.padEnd(14)}${v === null || v === undefined ? '-' : String(v)}\n`);
  line('run', r.id);
  line('plan', `${r.tenant}/${r.plan}`);
  line('mode', r.mode);
  line('state', `${r.state}${r.goal === 'cancelled' && r.state !== 'cancelled' ? ' (cancel asked)' : ''}`);
  line('point', r.point);
  line('vms', `${r.counts.vms}: ${r.counts.ready} ready, ${r.counts.failed} failed`);
  line('rto', r.rtoSeconds === null ? null : `${r.rtoSeconds} s${r.allReady ? '' : ' (not every VM ready)'}`);
  if (r.waiting) line('waiting', `${r.waiting.name}: ${r.waiting.message} (approve: plan approve ${r.plan} ${r.id})`);
  if (r.error) line('error', r.error);
  for (const s of r.steps) process.stdout.write(`  ${s.startedAt}  ${s.step.padEnd(34)} ${s.status.padEnd(8)}${s.seconds !== null ? ` ${s.seconds} s` : ''}${s.detail ? `  ${s.detail}` : ''}\n`);
  for (const v of r.vms) {
    process.stdout.write(`  vm ${v.vm.padEnd(20)} group ${v.group + 1}  ${v.state.padEnd(11)} point ${v.point.id ?? '-'}  rpo ${v.rpoSeconds ?? '-'} s  rto ${v.rtoSeconds ?? '-'} s${v.error ? `  ${v.error}` : ''}\n`);
  }
}

/** Polls the run, printing each new step on stderr, until it ends or waits for an approval. */
async function follow(api: ApiClient, path: string, timeoutMs: number): Promise<PlanRunReport> {
  const deadline = Date.now() + timeoutMs;
  let seen = 0;
  for (;;) {
    const r = await api.call<PlanRunReport>('GET', path);
    for (const s of r.steps.slice(seen)) process.stderr.write(`${s.startedAt}  ${s.step} ${s.status}${s.detail ? `  ${s.detail}` : ''}\n`);
    seen = r.steps.length;
    if (r.endedAt !== null || r.state === 'waiting') return r;
    if (Date.now() > deadline) throw new LifeboatError('unavailable', `run ${r.id} is still ${r.state} after ${Math.round(timeoutMs / 1000)} s`);
    await new Promise((res) => setTimeout(res, 1000));
  }
}

export function registerPlan(program: Command): void {
  const plan = program.command('plan').description('recovery plans: ordered groups of VMs with actions between them, run as a test, planned or unplanned failover');
  const cmd = (spec: string, description: string) => withConfig(plan.command(spec).description(description)).requiredOption('--tenant <name>', 'the plan\'s tenant').option('--json', 'print JSON');

  cmd('create [file]', 'create a plan from a JSON or YAML file, or from flags; prints the webhook secret its webhook actions are signed with (shown once)')
    .option('--name <name>', 'the plan\'s name (overrides the file\'s)')
    .option('--group <vms>', 'a group: its VMs, comma-separated (repeatable, in start order)', many, [] as string[])
    .option('--point <point>', 'latest (default), latest-consistent, or an ISO 8601 time')
    .option('--on-failure <policy>', 'each group\'s failure policy: stop (default) or continue')
    .option('--description <text>', 'what the plan is for')
    .action(async (file: string | undefined, o: Opts & { name?: string; group: string[]; point?: string; onFailure?: string; description?: string }) => {
      const body = await planBody(file, o);
      const r = await (await apiClient(o.config)).call<PlanOut>('POST', base(o), body);
      if (o.json) return printJson(r);
      printPlan(r);
      process.stdout.write(`webhook secret ${r.webhookSecret} (shown once: the plan's webhook actions are signed with it)\n`);
    });
  cmd('list', 'list the tenant\'s plans').action(async (o: Opts) => {
    const { plans } = await (await apiClient(o.config)).call<{ plans: PlanOut[] }>('GET', base(o));
    if (o.json) return printJson(plans);
    for (const p of plans) process.stdout.write(`${p.name}\t${p.groups.length} group(s)\t${p.groups.reduce((n, g) => n + g.vms.length, 0)} VM(s)\tpoint ${p.point}\n`);
  });
  cmd('show <name>', 'show a plan').action(async (name: string, o: Opts) => {
    const p = await (await apiClient(o.config)).call<PlanOut>('GET', `${base(o)}/${seg(name)}`);
    if (o.json) return printJson(p);
    printPlan(p);
  });
  cmd('delete <name>', 'delete a plan and its ended runs').action(async (name: string, o: Opts) => {
    await (await apiClient(o.config)).call('DELETE', `${base(o)}/${seg(name)}`);
    if (o.json) return printJson({ deleted: name });
    process.stdout.write(`deleted plan ${name}\n`);
  });
  cmd('run <name>', 'run a plan: test (replication goes on), planned (the sources shut down first, no data loss) or unplanned')
    .requiredOption('--mode <mode>', 'test, planned or unplanned')
    .option('--wait', 'print each step until the run ends or waits for an approval')
    .option('--timeout <duration>', 'with --wait: give up after this long', '2h')
    .action(async (name: string, o: Opts & { mode: string; wait?: boolean; timeout: string }) => {
      if (!['test', 'planned', 'unplanned'].includes(o.mode)) throw ErrInvalidArgument(`--mode ${o.mode}: test, planned or unplanned`);
      const timeoutMs = parseDuration(o.timeout, '--timeout');
      const api = await apiClient(o.config);
      let r = await api.call<PlanRunReport>('POST', `${base(o)}/${seg(name)}/runs`, { mode: o.mode });
      if (o.wait) r = await follow(api, `${base(o)}/${seg(name)}/runs/${r.id}`, timeoutMs);
      if (o.json) printJson(r); else if (o.wait) printRun(r); else process.stdout.write(`${r.id}\t${r.mode}\t${r.state}\n`);
      if (r.state === 'failed') throw new LifeboatError('conflict', `run ${r.id} failed: ${r.error ?? 'see its steps'}`);
    });
  cmd('runs <name>', 'list a plan\'s runs').action(async (name: string, o: Opts) => {
    const { runs } = await (await apiClient(o.config)).call<{ runs: { id: string; mode: string; state: string; step: number; steps: number; requestedAt: string; error: string | null }[] }>('GET', `${base(o)}/${seg(name)}/runs`);
    if (o.json) return printJson(runs);
    for (const r of runs) process.stdout.write(`${r.id}\t${r.mode}\t${r.state}\tstep ${Math.min(r.step + 1, r.steps)}/${r.steps}\t${r.requestedAt}${r.error ? `\t${r.error}` : ''}\n`);
  });
  cmd('report <name> <run>', 'a run\'s report: every step, each VM\'s point, RPO and RTO, failures; --html writes the printable page')
    .option('--html <file>', 'write the printable HTML report to FILE (- for stdout)')
    .action(async (name: string, run: string, o: Opts & { html?: string }) => {
      const api = await apiClient(o.config);
      const path = `${base(o)}/${seg(name)}/runs/${seg(run)}`;
      if (o.html !== undefined) {
        const page = await api.getText(`${path}/report.html`, 'text/html');
        if (o.html === '-') process.stdout.write(page);
        else await writeFile(o.html, page);
        return;
      }
      const r = await api.call<PlanRunReport>('GET', `${path}/report`);
      if (o.json) return printJson(r);
      printRun(r);
    });
  for (const [verb, description] of [
    ['approve', 'approve the manual step the run waits at'], ['cancel', 'stop a run (a test run\'s VMs are cleaned up)'], ['stop', 'stop every VM of a test run with one call'],
  ] as const) {
    const c = cmd(`${verb} <name> <run>`, description);
    if (verb === 'approve') c.option('--note <text>', 'a note kept with the approval');
    c.action(async (name: string, run: string, o: Opts & { note?: string }) => {
        const r = await (await apiClient(o.config)).call<PlanRunReport>('POST', `${base(o)}/${seg(name)}/runs/${seg(run)}/${verb}`, verb === 'approve' && o.note ? { note: o.note } : {});
        if (o.json) return printJson(r);
        process.stdout.write(`${r.id}\t${r.state}${r.goal === 'cancelled' ? '\tcancel asked' : ''}\n`);
      });
  }
}
