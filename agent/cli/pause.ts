/** lifeboat-agent pause VM: stop a VM's cycles; changes stay tracked and ship after resume. */
import type { Command } from 'commander';
import { checkVmName } from '../state/store.js';
import { agentState, withStateDir } from './agent-options.js';
import type { StateDirOption } from './agent-options.js';

export function registerPause(program: Command): void {
  withStateDir(program
    .command('pause')
    .description('pause replication of a VM (changes keep being tracked and ship after resume)')
    .argument('<vm>', 'a protected VM'))
    .action((vm: string, opts: StateDirOption) => setPaused(vm, opts, true));
}

/** Sets the VM's pause flag in its config (the engine reads it before every cycle). */
export async function setPaused(vm: string, opts: StateDirOption, paused: boolean): Promise<void> {
  const state = agentState(opts);
  const config = await state.readConfig(checkVmName(vm));
  if (config.paused !== paused) await state.writeConfig({ ...config, paused });
  process.stdout.write(`${vm}: replication ${paused ? 'paused' : 'resumed'}\n`);
}
