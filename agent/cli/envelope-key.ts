/**
 * lifeboat-agent envelope-key register [--json]: makes a new envelope key pair, keeps the private key
 * in the state directory and registers the public key (agent protocol §14): the service seals reverse
 * logs to it from then on. For an agent enrolled before envelope keys existed, and to rotate.
 */
import type { Command } from 'commander';
import { registerNewEnvelopeKey } from '../reverse/keys.js';
import { agentState, withStateDir } from './agent-options.js';
import type { StateDirOption } from './agent-options.js';

export function registerEnvelopeKeyCommands(group: Command): void {
  withStateDir(group
    .command('register')
    .description('make a new envelope key and register it with the service (the newest is the one reverse logs are sealed to)')
    .option('--json', 'print as JSON'))
    .action(async (opts: StateDirOption & { json?: boolean }) => {
      const state = agentState(opts);
      const r = await registerNewEnvelopeKey(state.dir, await state.readIdentity());
      process.stdout.write(opts.json ? `${JSON.stringify(r)}\n` : `envelope key ${r.kid} registered${r.newest ? ' (newest: reverse logs are sealed to it)' : ''}\n`);
    });
}
