/** lifeboat-agent resume VM: restart a paused VM's cycles. */
import type { Command } from 'commander';
import { withStateDir } from './agent-options.js';
import type { StateDirOption } from './agent-options.js';
import { setPaused } from './pause.js';

export function registerResume(program: Command): void {
  withStateDir(program
    .command('resume')
    .description('resume replication of a paused VM')
    .argument('<vm>', 'a protected VM'))
    .action((vm: string, opts: StateDirOption) => setPaused(vm, opts, false));
}
