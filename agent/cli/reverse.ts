/**
 * lifeboat-agent reverse VM --disk PATH… [--target-dir DIR] [--once] [--interval 10s] [--json]:
 * applies the service's reverse logs of a failed-over VM (docs/reverse.md) to its disks here, or to
 * copies in DIR, in order, each verified whole first; polls until interrupted, or once with --once.
 */
import type { Command } from 'commander';
import { parseDuration } from '../../shared/units.js';
import { applyReverse } from '../reverse/apply.js';
import { ReverseClient } from '../reverse/client.js';
import { checkVmName } from '../state/store.js';
import { agentState, withStateDir } from './agent-options.js';
import type { StateDirOption } from './agent-options.js';

interface ReverseOptions extends StateDirOption {
  disk: string[];
  targetDir?: string;
  once?: boolean;
  interval: string;
  json?: boolean;
}

export function registerReverse(program: Command): void {
  withStateDir(program
    .command('reverse')
    .description('apply what a failed-over VM writes at the hoster to its disks here (reverse replication)')
    .argument('<vm>', 'the VM, as protected')
    .requiredOption('--disk <path...>', "the VM's disks in order (disk0 first)")
    .option('--target-dir <dir>', 'apply to copies of the disks made in this directory, leaving the disks as they are')
    .option('--once', 'apply what the service has now and exit')
    .option('--interval <duration>', 'time between polls', '10s')
    .option('--json', 'print each pass as JSON'))
    .action((vm: string, opts: ReverseOptions) => reverse(checkVmName(vm), opts));
}

async function reverse(vm: string, opts: ReverseOptions): Promise<void> {
  const state = agentState(opts);
  const files = await state.readIdentity();
  const client = new ReverseClient(files);
  const intervalMs = parseDuration(opts.interval, '--interval');
  let stop = false;
  const onSignal = () => { stop = true; };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (;;) {
      const passes = await applyReverse({
        state, files, client, vm, disks: opts.disk, ...(opts.targetDir ? { targetDir: opts.targetDir } : {}),
        onApplied: (e) => { if (!opts.json) process.stdout.write(`${vm}/${e.disk}: applied reverse log ${e.generation}/${e.sequence} (${e.bytes} bytes) to ${e.path}\n`); },
      });
      if (opts.json) process.stdout.write(`${JSON.stringify({ vm, disks: passes })}\n`);
      else for (const p of passes) process.stdout.write(`${vm}/${p.disk}: at ${p.generation}/${p.sequence}${p.waiting ? `; ${p.waiting}` : ''}\n`);
      if (opts.once || stop) return;
      await new Promise((r) => setTimeout(r, intervalMs));
      if (stop) return;
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
