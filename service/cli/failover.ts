/**
 * `lifeboat-service failover …` (a client of the running service's API) and
 * `lifeboat-service failover-host` (a failover host process of its own):
 *   failover test VM --tenant T [--point ID|latest|latest-consistent]   start a test failover
 *   failover start VM --tenant T --point …                               an unplanned failover
 *   failover planned VM --tenant T                                       a planned failover
 *   failover stop ID | commit ID | revert ID
 *   failover list [--tenant T] [--active] [--json]
 *   failover show ID [--json]                                            the drill report
 *   failover wait ID [--for ready|ended] [--timeout 15m]                 waits, printing each step
 *   failover hardware VM --tenant T [--firmware …] [--cpus N] …         the VM's recorded configuration
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import pino from 'pino';
import { printJson } from '../../shared/cli/run.js';
import { ErrInvalidArgument, ErrUnsupported, LifeboatError } from '../../shared/errors.js';
import { parseDuration } from '../../shared/units.js';
import { loadConfig } from '../config/config.js';
import type { FailoverReport } from '../failover/report.js';
import { apiClient, withConfig } from './common.js';
import { waitForSignal } from './process.js';

type Opts = { config?: string; json?: boolean };
const seg = encodeURIComponent;

function printReport(r: FailoverReport): void {
  const line = (k: string, v: unknown) => process.stdout.write(`${k.padEnd(14)}${v === null || v === undefined ? '-' : String(v)}\n`);
  line('failover', r.id);
  line('vm', `${r.tenant}/${r.vm}`);
  line('kind', r.kind);
  line('state', `${r.state}${r.goal !== 'ready' && r.state !== r.goal ? ` (asked: ${r.goal})` : ''}`);
  line('host', r.host);
  line('point', r.point.id === null ? r.point.requested : `${r.point.id} (cycle ${r.point.cycle ?? '-'}, captured ${r.point.capturedAt})`);
  line('rpo', r.rpoSeconds === null ? null : `${r.rpoSeconds} s`);
  line('rto', r.rtoSeconds === null ? null : `${r.rtoSeconds} s`);
  if (r.screenshot) line('screenshot', r.screenshot.path);
  for (const w of r.warnings) line('warning', w);
  if (r.error) line('error', r.error);
  for (const s of r.steps) process.stdout.write(`  ${s.startedAt}  ${s.step.padEnd(16)} ${s.status.padEnd(8)}${s.seconds !== null ? ` ${s.seconds} s` : ''}${s.detail ? `  ${s.detail}` : ''}\n`);
}

export function registerFailover(program: Command): void {
  const fo = program.command('failover').description('start, inspect and end failovers (test, planned, unplanned)');
  const request = (name: string, kind: 'test' | 'unplanned' | 'planned', description: string, pointRequired: boolean) => {
    const cmd = withConfig(fo.command(`${name} <vm>`).description(description)).requiredOption('--tenant <name>', 'the VM\'s tenant');
    (pointRequired ? cmd.requiredOption('--point <point>', 'latest, latest-consistent or a point id') : cmd.option('--point <point>', 'latest (default), latest-consistent or a point id'))
      .option('--idempotency-key <key>', 'a repeated request with the same key returns the first failover')
      .option('--json', 'print the report as JSON')
      .action(async (vm: string, opts: Opts & { tenant: string; point?: string; idempotencyKey?: string }) => {
        if (kind === 'planned' && opts.point !== undefined) throw ErrInvalidArgument('a planned failover starts from the final cycle: it takes no --point');
        const api = await apiClient(opts.config);
        const r = await api.call<FailoverReport>('POST', `/v1/tenants/${seg(opts.tenant)}/vms/${seg(vm)}/failovers`, { kind, point: opts.point ?? 'latest' },
          opts.idempotencyKey ? { 'idempotency-key': opts.idempotencyKey } : undefined);
        if (opts.json) return printJson(r);
        process.stdout.write(`${r.id}\t${r.kind}\t${r.state}\thost ${r.host}\n`);
      });
  };
  request('test', 'test', 'start a test failover: the VM boots from a point on an isolated network while replication goes on', false);
  request('start', 'unplanned', 'start an unplanned failover (the primary is gone): the VM runs at the hoster from the point', true);
  request('planned', 'planned', 'a planned failover: the source VM is shut down, its final cycle applied, then it starts here', false);
  for (const [name, description] of [['stop', 'end a test failover (the VM, its overlays and exports go)'], ['commit', 'keep an unplanned failover: the VM stops depending on the replica'],
    ['revert', 'throw away what a failed-over VM wrote and return to replicating']] as const) {
    withConfig(fo.command(`${name} <id>`).description(description)).option('--json', 'print the report as JSON')
      .action(async (id: string, opts: Opts) => {
        const r = await (await apiClient(opts.config)).call<FailoverReport>('POST', `/v1/failovers/${seg(id)}/${name}`, {});
        if (opts.json) return printJson(r);
        process.stdout.write(`${r.id}\t${r.state}\tasked: ${r.goal}\n`);
      });
  }
  withConfig(fo.command('list').description('list failovers'))
    .option('--tenant <name>', 'only this tenant\'s').option('--active', 'only those not ended').option('--json', 'print JSON')
    .action(async (opts: Opts & { tenant?: string; active?: boolean }) => {
      const q = new URLSearchParams({ ...(opts.tenant ? { tenant: opts.tenant } : {}), ...(opts.active ? { active: 'true' } : {}) });
      const { failovers } = await (await apiClient(opts.config)).call<{ failovers: { id: string; tenant: string; vm: string; kind: string; state: string; host: string; requestedAt: string }[] }>('GET', `/v1/failovers?${q}`);
      if (opts.json) return printJson(failovers);
      for (const f of failovers) process.stdout.write(`${f.id}\t${f.tenant}/${f.vm}\t${f.kind}\t${f.state}\t${f.host}\t${f.requestedAt}\n`);
    });
  withConfig(fo.command('show <id>').description('a failover\'s drill report: point, RPO, RTO, steps, screenshot, warnings'))
    .option('--json', 'print JSON')
    .action(async (id: string, opts: Opts) => {
      const r = await (await apiClient(opts.config)).call<FailoverReport>('GET', `/v1/failovers/${seg(id)}`);
      if (opts.json) return printJson(r);
      printReport(r);
    });
  withConfig(fo.command('wait <id>').description('wait until a failover is ready (or running, committed) or has ended; each new step is printed'))
    .option('--for <what>', 'ready (default) or ended', 'ready').option('--timeout <duration>', 'give up after this long', '15m').option('--json', 'print the final report as JSON')
    .action(async (id: string, opts: Opts & { for: string; timeout: string }) => {
      if (opts.for !== 'ready' && opts.for !== 'ended') throw ErrInvalidArgument(`--for ${opts.for}: ready or ended`);
      const deadline = Date.now() + parseDuration(opts.timeout, '--timeout');
      const api = await apiClient(opts.config);
      let seen = 0;
      for (;;) {
        const r = await api.call<FailoverReport>('GET', `/v1/failovers/${seg(id)}`);
        if (!opts.json) for (const s of r.steps.slice(seen)) process.stderr.write(`${s.startedAt}  ${s.step} ${s.status}${s.detail ? `  ${s.detail}` : ''}\n`);
        seen = r.steps.length;
        const ended = r.endedAt !== null;
        if (ended || (opts.for === 'ready' && ['ready', 'running', 'committed'].includes(r.state))) {
          if (opts.json) printJson(r); else printReport(r);
          if (r.state === 'failed') throw new LifeboatError('conflict', `failover ${id} failed: ${r.error ?? 'see its steps'}`);
          return;
        }
        if (Date.now() > deadline) throw new LifeboatError('unavailable', `failover ${id} is still ${r.state} after ${opts.timeout}`);
        await new Promise((res) => setTimeout(res, 1000));
      }
    });
  withConfig(fo.command('hardware <vm>').description('show or set the configuration the failed-over VM gets (firmware, vCPUs, memory, guest OS, disk buses, readiness)'))
    .requiredOption('--tenant <name>', 'the VM\'s tenant')
    .option('--firmware <bios|uefi>').option('--secure-boot <on|off>').option('--cpus <n>').option('--memory <MiB>').option('--guest-os <linux|windows|other>')
    .option('--disk <id=bus[:order]...>', 'a disk\'s bus and boot order, e.g. d0=virtio:0 (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--ready <probe...>', 'readiness probes: guest-agent, console:REGEX, tcp:HOST:PORT (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--nvram <file>', 'the VM\'s UEFI NVRAM (OVMF VARS file on this host): failovers boot with its boot entries')
    .option('--json', 'print JSON')
    .action(async (vm: string, opts: Opts & { tenant: string; firmware?: string; secureBoot?: string; cpus?: string; memory?: string; guestOs?: string; disk: string[]; ready: string[]; nvram?: string }) => {
      const api = await apiClient(opts.config);
      const path = `/v1/tenants/${seg(opts.tenant)}/vms/${seg(vm)}/hardware`;
      if (opts.nvram) await api.call('POST', `/v1/tenants/${seg(opts.tenant)}/vms/${seg(vm)}/nvram`, { path: resolve(opts.nvram) });
      const current = await api.call<Record<string, unknown>>('GET', path);
      const changed = opts.firmware || opts.secureBoot || opts.cpus || opts.memory || opts.guestOs || opts.disk.length || opts.ready.length;
      let out = current;
      if (changed) {
        const int = (v: string, what: string) => {
          if (!/^\d{1,9}$/.test(v)) throw ErrInvalidArgument(`${what} ${JSON.stringify(v)} is not a whole number`);
          return Number(v);
        };
        const disks = { ...(current.disks as Record<string, unknown>) };
        for (const d of opts.disk) {
          const m = /^([a-z0-9][a-z0-9_-]{0,63})=(virtio|scsi|sata|ide)(?::(\d{1,2}))?$/.exec(d);
          if (!m) throw ErrInvalidArgument(`--disk ${JSON.stringify(d)}: expected ID=BUS[:ORDER] with BUS virtio, scsi, sata or ide`);
          disks[m[1]!] = { bus: m[2], order: m[3] === undefined ? Object.keys(disks).length : Number(m[3]) };
        }
        const probes = opts.ready.map((p) => {
          if (p === 'guest-agent') return { kind: 'guest-agent' };
          if (p.startsWith('console:')) return { kind: 'console', pattern: p.slice(8) };
          const t = /^tcp:(.+):(\d{1,5})$/.exec(p);
          if (t) return { kind: 'tcp', host: t[1], port: Number(t[2]) };
          throw ErrInvalidArgument(`--ready ${JSON.stringify(p)}: guest-agent, console:REGEX or tcp:HOST:PORT`);
        });
        const { source: _source, ...rest } = current;
        out = await api.call('PUT', path, {
          ...rest, disks,
          ...(opts.firmware ? { firmware: opts.firmware } : {}),
          ...(opts.secureBoot ? { secureBoot: opts.secureBoot === 'on' } : {}),
          ...(opts.cpus ? { cpus: int(opts.cpus, '--cpus') } : {}),
          ...(opts.memory ? { memoryMiB: int(opts.memory, '--memory') } : {}),
          ...(opts.guestOs ? { guestOs: opts.guestOs } : {}),
          ...(probes.length ? { readyProbes: probes } : {}),
        });
      }
      if (opts.json) return printJson(out);
      for (const [k, v] of Object.entries(out)) process.stdout.write(`${k.padEnd(12)}${typeof v === 'object' ? JSON.stringify(v) : String(v)}\n`);
    });

  withConfig(program.command('failover-host').description('run a failover host alone: it owns failed-over VMs (qemu) and their NBD exports (needs a PostgreSQL catalog)'))
    .action(async (opts: { config?: string }) => {
      const config = await loadConfig(opts.config);
      if (config.catalog.kind === 'pglite') throw ErrUnsupported('failover-host needs a PostgreSQL catalog (catalog.kind "postgres"); with the embedded PGlite catalog, serve runs the failover host');
      const log = pino({ level: config.logLevel, base: { service: 'lifeboat-failover-host' } }, pino.destination(2));
      const { openContext } = await import('../context.js');
      const { startFailoverHost } = await import('../failover/host.js');
      const { planRunExtension } = await import('../plans/job.js');
      const { failbackExtension } = await import('../failback/job.js');
      const { reverseCycleExtension } = await import('../reverse/schedule.js');
      const ctx = await openContext(config, { log });
      const host = await startFailoverHost(ctx, { extensions: [planRunExtension(), failbackExtension(), reverseCycleExtension()] });
      const signalled = waitForSignal(); // before saying ready: a SIGTERM right after must find the handler
      process.stdout.write(`lifeboat-service failover-host ready: ${host.name} (${config.failover.host.dir})\n`);
      await signalled;
      await host.stop();
      await ctx.close();
    });
}
