/**
 * A plan run's report (JSON from the API and `plan report RUN --json`; a printable HTML page from
 * renderReportHtml): each step with its start and end, each VM with the point it used, that point's
 * age at the run's request (RPO), the time from the request to the VM ready (RTO) and to its own
 * failover's ready, its screenshot where the driver gave one, the plan's total RTO (the request to the
 * last VM ready), and every failure with its reason. Read from the catalog as it stands, so a report
 * of a run still going shows where it is.
 */
import type { Queryable } from '../catalog/db.js';
import type { FailoverRow } from '../catalog/failovers.js';
import { latestScreenshot, listFailovers } from '../catalog/failovers.js';
import type { PlanRunRow, RunStepRow } from '../catalog/plans.js';
import { listRunSteps, listRunVms } from '../catalog/plans.js';
import type { PlanDefinition, RunStep } from './definition.js';
import { stepName } from './definition.js';

export interface RunReportStep {
  index: number | null;
  step: string;
  status: RunStepRow['status'];
  startedAt: string;
  endedAt: string | null;
  seconds: number | null;
  detail: string | null;
  by: string | null;
  /** How many times the step was started (more than one: a worker died and the run resumed it). */
  attempts: number;
}

export interface RunReportVm {
  vm: string;
  group: number;
  failover: string;
  state: FailoverRow['state'] | 'not started';
  point: { id: number | null; cycle: number | null; capturedAt: string | null };
  /** The point's age at the run's request: the data a real failover would lose. */
  rpoSeconds: number | null;
  readyAt: string | null;
  /** Seconds from the run's request to this VM ready. */
  rtoSeconds: number | null;
  /** Seconds from this VM's own failover request to ready. */
  bootSeconds: number | null;
  screenshot: { takenAt: string; bytes: number; path: string } | null;
  warnings: string[];
  error: string | null;
}

export interface PlanRunReport {
  id: string;
  tenant: string;
  plan: string;
  mode: PlanRunRow['mode'];
  state: PlanRunRow['state'];
  goal: PlanRunRow['goal'];
  point: string;
  host: string;
  requestedBy: string;
  requestedAt: string;
  startedAt: string | null;
  endedAt: string | null;
  /** The manual step the run waits at, if it does. */
  waiting: { step: number; name: string; message: string; approver: 'tenant' | 'hoster' } | null;
  /** Seconds from the request to the last VM ready (null until one is); `allReady` says whether every VM got there. */
  rtoSeconds: number | null;
  allReady: boolean;
  counts: { vms: number; ready: number; failed: number };
  groups: { index: number; name: string | null; vms: number; onFailure: 'stop' | 'continue' }[];
  steps: RunReportStep[];
  vms: RunReportVm[];
  failures: { what: string; reason: string }[];
  error: string | null;
}

const secondsBetween = (a: Date, b: Date) => Math.round((b.getTime() - a.getTime()) / 10) / 100;
const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);

export function runPath(run: Pick<PlanRunRow, 'tenant' | 'plan' | 'id'>): string {
  return `/v1/tenants/${run.tenant}/plans/${run.plan}/runs/${run.id}`;
}

export async function planRunReport(db: Queryable, run: PlanRunRow): Promise<PlanRunReport> {
  const def = run.definition as unknown as PlanDefinition;
  const compiled = run.steps as RunStep[];
  const steps = pairSteps(await listRunSteps(db, run.id));
  const fos = new Map((await listFailovers(db, { planRunId: run.id })).map((f) => [f.id, f]));
  const shots = await db.query<{ id: string; takenAt: Date; bytes: number }>(`SELECT DISTINCT ON (failover_id) failover_id AS id, taken_at AS "takenAt", length(png) AS bytes
    FROM failover_screenshots WHERE failover_id IN (SELECT id FROM failovers WHERE plan_run_id = $1) ORDER BY failover_id, taken_at DESC`, [run.id]);
  const shotOf = new Map(shots.map((s) => [s.id, s]));
  const requestedAt = new Date(run.requestedAt);
  const vms: RunReportVm[] = (await listRunVms(db, run.id)).map((v) => {
    const f = fos.get(v.failoverId);
    const up = f?.readyAt ? new Date(f.readyAt) : null;
    const shot = shotOf.get(v.failoverId);
    return {
      vm: v.vm, group: v.groupIndex, failover: v.failoverId, state: f?.state ?? 'not started',
      point: { id: v.pointId === null ? null : Number(v.pointId), cycle: v.cycle === null ? null : Number(v.cycle), capturedAt: iso(v.capturedAt) },
      rpoSeconds: v.capturedAt ? secondsBetween(new Date(v.capturedAt), requestedAt) : null,
      readyAt: iso(up), rtoSeconds: up ? secondsBetween(requestedAt, up) : null, bootSeconds: up && f ? secondsBetween(new Date(f.requestedAt), up) : null,
      screenshot: shot ? { takenAt: new Date(shot.takenAt).toISOString(), bytes: Number(shot.bytes), path: `/v1/tenants/${run.tenant}/failovers/${v.failoverId}/screenshot.png` } : null,
      warnings: f?.warnings ?? [], error: v.error ?? f?.error ?? null,
    };
  });
  const ready = vms.filter((v) => v.readyAt !== null);
  const last = ready.reduce<number | null>((m, v) => (m === null || v.rtoSeconds! > m ? v.rtoSeconds : m), null);
  const failures = [
    ...steps.filter((s) => s.status === 'failed' && s.index !== null).map((s) => ({ what: s.step, reason: s.detail ?? 'failed' })),
    ...vms.filter((v) => v.error !== null).map((v) => ({ what: `VM ${v.vm}`, reason: v.error! })),
  ];
  const at = compiled[run.cursor];
  return {
    id: run.id, tenant: run.tenant, plan: run.plan, mode: run.mode, state: run.state, goal: run.goal, point: String(def.point), host: run.host,
    requestedBy: run.requestedBy, requestedAt: requestedAt.toISOString(), startedAt: iso(run.startedAt), endedAt: iso(run.endedAt),
    waiting: run.state === 'waiting' && at?.kind === 'manual' ? { step: run.cursor, name: stepName(def, at), message: at.message, approver: at.approver } : null,
    rtoSeconds: last, allReady: vms.length > 0 && ready.length === vms.length,
    counts: { vms: vms.length, ready: ready.length, failed: vms.filter((v) => v.error !== null).length },
    groups: def.groups.map((g, i) => ({ index: i, name: g.name ?? null, vms: g.vms.length, onFailure: g.onFailure })),
    steps, vms, failures, error: run.error,
  };
}

/** A step is its started row with its end written onto it; a step started again (a resumed run) keeps its first start. */
function pairSteps(rows: RunStepRow[]): RunReportStep[] {
  const out: RunReportStep[] = [];
  const open = new Map<number, RunReportStep>();
  for (const r of rows) {
    const at = new Date(r.at);
    const o = r.stepIndex === null ? undefined : open.get(r.stepIndex);
    if (o && r.status === 'started') {
      o.attempts++;
      continue;
    }
    if (o) {
      o.status = r.status;
      o.endedAt = at.toISOString();
      o.seconds = secondsBetween(new Date(o.startedAt), at);
      o.detail = r.detail ?? o.detail;
      o.by = r.cause ?? o.by;
      if (r.status !== 'waiting') open.delete(r.stepIndex!);
      else o.endedAt = null;
      continue;
    }
    const pending = r.status === 'started' || r.status === 'waiting';
    const s: RunReportStep = {
      index: r.stepIndex, step: r.step, status: r.status, startedAt: at.toISOString(), endedAt: pending ? null : at.toISOString(),
      seconds: pending ? null : 0, detail: r.detail, by: r.cause, attempts: 1,
    };
    out.push(s);
    if (pending && r.stepIndex !== null) open.set(r.stepIndex, s);
  }
  return out;
}

/** The PNG of each VM's screenshot, for the printable page. */
export async function reportScreenshots(db: Queryable, report: PlanRunReport): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const v of report.vms) {
    if (!v.screenshot) continue;
    const shot = await latestScreenshot(db, v.failover);
    if (shot) out.set(v.vm, shot.png);
  }
  return out;
}

const esc = (s: unknown) => String(s ?? '—').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const secs = (n: number | null) => (n === null ? '—' : `${n} s`);

/** A self-contained printable page (inline CSS, screenshots as data: URLs; nothing fetched from elsewhere). */
export function renderReportHtml(r: PlanRunReport, screenshots: ReadonlyMap<string, Buffer>): string {
  const row = (cells: unknown[]) => `<tr>${cells.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`;
  const head = (cells: string[]) => `<tr>${cells.map((c) => `<th>${esc(c)}</th>`).join('')}</tr>`;
  const shots = r.vms.filter((v) => screenshots.has(v.vm)).map((v) => `<figure><img alt="console of ${esc(v.vm)}" src="data:image/png;base64,${screenshots.get(v.vm)!.toString('base64')}"><figcaption>${esc(v.vm)} at ${esc(v.screenshot?.takenAt)}</figcaption></figure>`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Plan run ${esc(r.id)} — ${esc(r.plan)}</title>
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:2em;color:#111}
table{border-collapse:collapse;width:100%;margin:0 0 1.5em}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eee}
.failed{color:#a00}
figure{display:inline-block;margin:0 1em 1em 0;page-break-inside:avoid}
img{max-width:320px;border:1px solid #999}
@media print{body{margin:0}a{color:inherit}}
</style></head><body>
<h1>Recovery plan ${esc(r.plan)}: ${esc(r.mode)} run ${esc(r.id)}</h1>
<table>
${row(['Tenant', r.tenant])}${row(['Result', `${r.state}${r.error ? ` — ${r.error}` : ''}`])}${row(['Point', r.point])}
${row(['Requested', `${r.requestedAt} by ${r.requestedBy}`])}${row(['Ended', r.endedAt])}
${row(['Total RTO (request to the last VM ready)', `${secs(r.rtoSeconds)}${r.allReady ? '' : ' (not every VM became ready)'}`])}
${row(['VMs', `${r.counts.vms} in ${r.groups.length} group(s); ${r.counts.ready} ready, ${r.counts.failed} failed`])}
${r.waiting ? row(['Waiting for approval', `${r.waiting.name}: ${r.waiting.message}`]) : ''}
</table>
<h2>Failures</h2>
${r.failures.length === 0 ? '<p>None.</p>' : `<table>${head(['What', 'Reason'])}${r.failures.map((f) => `<tr class="failed"><td>${esc(f.what)}</td><td>${esc(f.reason)}</td></tr>`).join('')}</table>`}
<h2>Steps</h2>
<table>${head(['#', 'Step', 'Status', 'Started', 'Ended', 'Seconds', 'Detail'])}
${r.steps.map((s) => row([s.index === null ? '' : s.index + 1, s.step, s.status, s.startedAt, s.endedAt, s.seconds, `${s.detail ?? ''}${s.by ? ` (${s.by})` : ''}${s.attempts > 1 ? ` [started ${s.attempts} times]` : ''}`])).join('\n')}
</table>
<h2>VMs</h2>
<table>${head(['VM', 'Group', 'Failover', 'State', 'Point', 'Captured', 'RPO', 'RTO', 'Boot', 'Error'])}
${r.vms.map((v) => row([v.vm, v.group + 1, v.failover, v.state, v.point.id, v.point.capturedAt, secs(v.rpoSeconds), secs(v.rtoSeconds), secs(v.bootSeconds), v.error ?? ''])).join('\n')}
</table>
${shots.length ? `<h2>Screenshots</h2>\n${shots.join('\n')}` : ''}
</body></html>
`;
}
