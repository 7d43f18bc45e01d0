/**
 * The drill report of a failover (JSON from the API, `failover show ID --json`; the portal renders
 * it later): the VM, kind, host, the point and its capture time, RPO (request time minus the agent's
 * capture time of the point's cycle), each step with its start and end, RTO (request to ready), the
 * screenshot taken at ready, warnings and the result.
 */
import type { Queryable } from '../catalog/db.js';
import type { FailoverRow, FailoverStepRow } from '../catalog/failovers.js';
import { latestScreenshot, listSteps } from '../catalog/failovers.js';
import { listAppliedPublicIps } from '../catalog/public-ips.js';

export interface ReportStep {
  step: string;
  status: FailoverStepRow['status'];
  startedAt: string;
  endedAt: string | null;
  seconds: number | null;
  detail: string | null;
  cause: string | null;
}

export interface FailoverReport {
  id: string;
  tenant: string;
  vm: string;
  kind: FailoverRow['kind'];
  state: FailoverRow['state'];
  goal: FailoverRow['goal'];
  result: 'in progress' | 'ready' | 'running' | 'committed' | 'stopped' | 'reverted' | 'failed' | 'failed back';
  host: string | null;
  point: { requested: string; id: number | null; cycle: number | null; capturedAt: string | null };
  /** Seconds from the point's capture time to the request: the data a real failover would lose. */
  rpoSeconds: number | null;
  requestedAt: string;
  readyAt: string | null;
  endedAt: string | null;
  /** A test failover is stopped at this time (its tenant's maximum duration), with its report. */
  expiresAt: string | null;
  /** Seconds from the request to ready. */
  rtoSeconds: number | null;
  vmGenerationId: string;
  hardware: unknown;
  steps: ReportStep[];
  screenshot: { takenAt: string; bytes: number; path: string } | null;
  /** The IP plan (intent, each value with its origin) beside what the guest reported (result). */
  network: unknown;
  /** The public addresses the failover's host applied (nftables), each with when it was applied and removed. */
  publicIps: { address: string; drAddress: string; mac: string | null; allow: string[]; appliedAt: string; removedAt: string | null }[];
  warnings: string[];
  error: string | null;
}

const secondsBetween = (a: Date, b: Date) => Math.round((b.getTime() - a.getTime()) / 10) / 100;

export async function failoverReport(db: Queryable, f: FailoverRow, screenshotPath: string): Promise<FailoverReport> {
  const rows = await listSteps(db, f.id);
  const steps: ReportStep[] = [];
  const open = new Map<string, ReportStep>();
  for (const r of rows) {
    const at = new Date(r.at);
    const started = open.get(r.step);
    if (started && r.status !== 'started') {
      started.status = r.status;
      started.endedAt = at.toISOString();
      started.seconds = secondsBetween(new Date(started.startedAt), at);
      started.detail = r.detail ?? started.detail;
      open.delete(r.step);
      continue;
    }
    const s: ReportStep = { step: r.step, status: r.status, startedAt: at.toISOString(), endedAt: r.status === 'started' ? null : at.toISOString(), seconds: r.status === 'started' ? null : 0, detail: r.detail, cause: r.cause };
    steps.push(s);
    if (r.status === 'started') open.set(r.step, s);
  }
  const shot = await latestScreenshot(db, f.id);
  const requestedAt = new Date(f.requestedAt);
  const result: FailoverReport['result'] = f.state === 'failed' ? 'failed' : f.state === 'failed-back' ? 'failed back'
    : (['ready', 'running', 'committed', 'stopped', 'reverted'] as const).find((s) => s === f.state) ?? 'in progress';
  return {
    id: f.id, tenant: f.tenant, vm: f.vm, kind: f.kind, state: f.state, goal: f.goal, result, host: f.host,
    point: { requested: f.pointRequest, id: f.pointId, cycle: f.cycle, capturedAt: f.capturedAt ? new Date(f.capturedAt).toISOString() : null },
    rpoSeconds: f.capturedAt ? secondsBetween(new Date(f.capturedAt), requestedAt) : null,
    requestedAt: requestedAt.toISOString(),
    readyAt: f.readyAt ? new Date(f.readyAt).toISOString() : null,
    endedAt: f.endedAt ? new Date(f.endedAt).toISOString() : null,
    expiresAt: f.expiresAt ? new Date(f.expiresAt).toISOString() : null,
    rtoSeconds: f.readyAt ? secondsBetween(requestedAt, new Date(f.readyAt)) : null,
    vmGenerationId: f.vmGenerationId,
    hardware: (f.spec as { hardware?: unknown }).hardware ?? null,
    steps,
    screenshot: shot ? { takenAt: shot.takenAt.toISOString(), bytes: shot.png.length, path: screenshotPath } : null,
    network: f.network ?? null,
    publicIps: (await listAppliedPublicIps(db, f.id)).map((p) => ({ ...p, appliedAt: new Date(p.appliedAt).toISOString(), removedAt: p.removedAt ? new Date(p.removedAt).toISOString() : null })),
    warnings: f.warnings, error: f.error,
  };
}
