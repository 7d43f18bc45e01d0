/**
 * lifeboat-agent unprotect VM: stop protecting a VM. The service is told first (its replicas and
 * recovery points stay at the hoster); only then is the local state removed, so a service that does
 * not answer leaves everything as it was. --local forgets the VM here without telling the service.
 */
import type { Command } from 'commander';
import { checkVmName } from '../state/store.js';
import { HttpTransport } from '../transport/http.js';
import { agentState, withStateDir } from './agent-options.js';
import type { StateDirOption } from './agent-options.js';

export function registerUnprotect(program: Command): void {
  withStateDir(program
    .command('unprotect')
    .description('stop protecting a VM (the hoster keeps its replicas and recovery points)')
    .argument('<vm>', 'a protected VM')
    .option('--local', 'forget the VM on this server without telling the service'))
    .action(async (vm: string, opts: StateDirOption & { local?: boolean }) => {
      const state = agentState(opts);
      await state.readConfig(checkVmName(vm));
      const progress = await state.readProgress(vm);
      if (progress.registered && !opts.local) await HttpTransport.fromIdentity(await state.readIdentity()).unregisterVm(vm);
      await state.removeVm(vm);
      process.stdout.write(`${vm}: unprotected\n`);
    });
}
