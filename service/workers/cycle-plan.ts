/**
 * Which VM cycle a recovery point can be cut at (docs/service.md, "Recovery points"). A point is one
 * agent cycle on every disk of the VM: each disk's replica must hold exactly the logs up to that
 * cycle. Every disk whose base is complete ships one log per cycle (agent protocol §10), so a cycle is
 * whole when every disk has a log of it; a disk is at cycle C when the last log (or base) it applied
 * was of cycle C (state.json's appliedCycle).
 *
 * The plan reads each disk's state.json (the authority) and its pending logs:
 * - ready: every disk is at one cycle, which the point takes. A VM whose disks all applied version-1
 *   logs only (no cycle: an agent older than log format 2) is ready at cycle null, each disk as applied,
 *   as points were made before cycles existed.
 * - wait: no such cycle yet, but cycle C, the oldest one that no disk has passed and that every disk
 *   has applied or has pending, can be reached: the lagging disks merge up to it while the others wait
 *   at it behind the VM's barrier (barrier.ts).
 * - none: no cycle is whole yet beyond what some disk applied (a disk missed a cycle, or its logs of
 *   the newer cycles are not committed yet): wait for commits.
 * - unready: a disk has no complete base or is not replicating.
 */
import type { Queryable } from '../catalog/db.js';
import type { DiskRow } from '../catalog/vms.js';
import type { AppliedState } from '../replication/replica.js';
import { readState } from '../replication/replica.js';

export type CyclePlan =
  | { kind: 'ready'; cycle: number | null; states: Map<string, AppliedState> }
  | { kind: 'wait'; cycle: number; floor: number; lagging: string[]; states: Map<string, AppliedState> }
  | { kind: 'none'; floor: number; states: Map<string, AppliedState> }
  | { kind: 'unready'; reason: string };

export async function planCycle(db: Queryable, disks: DiskRow[]): Promise<CyclePlan> {
  if (disks.length === 0) return { kind: 'unready', reason: 'the VM has no disks' };
  const notReady = disks.find((d) => !d.baseComplete || d.state !== 'replicating');
  if (notReady) return { kind: 'unready', reason: `disk ${notReady.id} is ${notReady.baseComplete ? notReady.state : 'without a complete base'}` };
  const states = new Map<string, AppliedState>();
  for (const d of disks) states.set(d.id, await readState(d.replicaDir));
  const applied = [...states.values()].map((s) => s.appliedCycle);
  if (applied.every((c) => c === applied[0])) return { kind: 'ready', cycle: applied[0]!, states };

  const floor = Math.max(0, ...applied.filter((c): c is number => c !== null));
  let common: Set<number> | undefined;
  for (const d of disks) {
    const s = states.get(d.id)!;
    const rows = await db.query<{ cycle: number }>(`SELECT DISTINCT cycle FROM logs WHERE tenant = $1 AND vm = $2 AND disk = $3 AND kind = 'log'
      AND generation = $4 AND sequence > $5 AND status = 'pending' AND cycle >= $6`, [d.tenant, d.vm, d.id, s.generation, s.appliedSequence, floor]);
    const reachable = new Set(rows.map((r) => r.cycle));
    if (s.appliedCycle !== null && s.appliedCycle >= floor) reachable.add(s.appliedCycle);
    common = common === undefined ? reachable : new Set([...common].filter((c) => reachable.has(c)));
  }
  if (!common || common.size === 0) return { kind: 'none', floor, states };
  const cycle = Math.min(...common);
  return { kind: 'wait', cycle, floor, lagging: disks.filter((d) => states.get(d.id)!.appliedCycle !== cycle).map((d) => d.id), states };
}

/** Each disk's applied cycle, for messages: "d0 at cycle 7, d1 at cycle 5". */
export function describeCycles(states: Map<string, AppliedState>): string {
  return [...states.entries()].map(([id, s]) => `${id} at cycle ${s.appliedCycle ?? 'none'}`).join(', ');
}
