/**
 * The failback report (GET /v1/failovers/{id}/failback): the row's steps paired into times per step,
 * and what the steps measured: how the VM stopped, the final reverse cycle and every reverse log of
 * the failover (bytes), the equality check per disk, how the VM started at home and the failback
 * window (from the stop at the hoster to the VM started at home), and the adopted replica per disk.
 */
import type { FailbackRow } from '../catalog/failbacks.js';

export interface FailbackReportStep {
  step: string;
  status: 'started' | 'done' | 'failed';
  startedAt: string;
  endedAt: string | null;
  seconds: number | null;
  detail: string | null;
}

export interface FailbackReport {
  id: string;
  failover: string;
  tenant: string;
  vm: string;
  state: string;
  result: 'in progress' | 'done' | 'failed';
  host: string | null;
  shutdownTimeoutSeconds: number;
  requestedBy: string;
  requestedAt: string;
  endedAt: string | null;
  /** From the stop at the hoster to the VM started at home (null until then). */
  windowSeconds: number | null;
  steps: FailbackReportStep[];
  stop: unknown;
  finalCycle: unknown;
  reverse: unknown;
  equality: unknown;
  start: string | null;
  adopted: unknown;
  error: string | null;
}

export function failbackReport(fb: FailbackRow): FailbackReport {
  const steps: FailbackReportStep[] = [];
  for (const s of fb.steps) {
    const open = [...steps].reverse().find((x) => x.step === s.step && x.status === 'started');
    if (s.status !== 'started' && open) {
      open.status = s.status;
      open.endedAt = s.at;
      open.seconds = (Date.parse(s.at) - Date.parse(open.startedAt)) / 1000;
      open.detail = s.detail;
      continue;
    }
    steps.push({ step: s.step, status: s.status, startedAt: s.at, endedAt: s.status === 'started' ? null : s.at, seconds: s.status === 'started' ? null : 0, detail: s.detail });
  }
  const r = fb.report;
  return {
    id: fb.id, failover: fb.failoverId, tenant: fb.tenant, vm: fb.vm, state: fb.state,
    result: fb.state === 'done' ? 'done' : fb.state === 'failed' ? 'failed' : 'in progress',
    host: fb.host, shutdownTimeoutSeconds: fb.shutdownTimeoutSeconds, requestedBy: fb.requestedBy,
    requestedAt: new Date(fb.requestedAt).toISOString(), endedAt: fb.endedAt ? new Date(fb.endedAt).toISOString() : null,
    windowSeconds: typeof r.windowSeconds === 'number' ? r.windowSeconds : null, steps,
    stop: r.stop ?? null, finalCycle: r.finalCycle ?? null, reverse: r.reverse ?? null, equality: r.equality ?? null,
    start: typeof r.start === 'string' ? r.start : null, adopted: r.adopted ?? null, error: fb.error,
  };
}
