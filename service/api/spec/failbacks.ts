/** Failbacks of failovers and their reports (service/api/failbacks.ts). */
import { z } from 'zod';
import { failbackRequestSchema } from '../failbacks.js';
import { etag, time } from './common.js';
import type { RouteDoc } from './registry.js';

const tag = 'failbacks';
const id = z.string().regex(/^fo-[a-z0-9-]{1,40}$/);

/** The failback report (service/failback/report.ts). */
export const failbackReport = z.object({
  id: z.string(), failover: z.string(), tenant: z.string(), vm: z.string(),
  state: z.enum(['requested', 'stopping', 'final-cycle', 'confirming', 'starting', 'removing', 'adopting', 'resuming', 'done', 'failed']),
  result: z.enum(['in progress', 'done', 'failed']), host: z.string().nullable(), shutdownTimeoutSeconds: z.number().int(), requestedBy: z.string(),
  requestedAt: time(), endedAt: time().nullable(), windowSeconds: z.number().nullable().describe('from the stop at the hoster to the VM started at home'),
  steps: z.array(z.object({ step: z.string(), status: z.enum(['started', 'done', 'failed']), startedAt: time(), endedAt: time().nullable(), seconds: z.number().nullable(), detail: z.string().nullable() })),
  stop: z.unknown().describe('how the VM stopped at the hoster'),
  finalCycle: z.unknown().describe('the final reverse cycle: each disk\'s last log and its bytes'),
  reverse: z.unknown().describe('every reverse log of the failover: count, bytes stored, data bytes'),
  equality: z.unknown().describe('per disk: ranges and bytes compared, bytes written at the hoster, equal'),
  start: z.string().nullable().describe('hook (the start hook started the VM at home) or none'),
  adopted: z.unknown().describe('per disk: the replica\'s new generation made of the hoster\'s disk'),
  error: z.string().nullable(), ...etag,
}).describe('the failback report');

export const failbackRoutes: RouteDoc[] = [
  {
    method: 'post', path: '/v1/failovers/{id}/failback', tag, params: { id }, body: failbackRequestSchema, errors: [409, 503],
    summary: 'fail a committed failover\'s VM back home: stop it here, final reverse cycle, the agent confirms equality, the start hook, the hoster VM removed, its disks the replica, forward replication resumed',
    ok: { 202: failbackReport, 200: failbackReport.describe('the failback already under way') },
  },
  { method: 'get', path: '/v1/failovers/{id}/failback', tag, params: { id }, summary: 'the newest failback of the failover: its report', ok: { 200: failbackReport } },
];
