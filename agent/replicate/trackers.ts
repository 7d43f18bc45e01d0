/** Where a VM disk's tracker and spool live in the state directory. */
import { join } from 'node:path';
import type { AgentState } from '../state/store.js';
import { ScanTracker } from '../tracker/scan.js';

export function scanTrackerFor(state: AgentState, vm: string, disk: string): ScanTracker {
  return new ScanTracker({ mapPath: state.mapPath(vm, disk), pendingPath: state.mapPath(vm, disk, 'pending') });
}

export function spoolPath(state: AgentState, vm: string, disk: string, kind: 'log' | 'chunk', generation: number, n: number): string {
  return join(state.vmDir(vm), 'spool', `${disk}-${kind}-${generation}-${n}.hrl`);
}
