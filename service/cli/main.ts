/**
 * lifeboat-service: the hoster-side command. Its subcommands are listed in commands.ts and loaded when named.
 */
import { Command } from 'commander';
import { addCommands } from '../../shared/cli/lazy.js';
import { runProgram } from '../../shared/cli/run.js';
import { serviceCommands } from './commands.js';

const program = new Command('lifeboat-service')
  .description('lifeboat service: receives tenants\' change logs and keeps their replica disks and recovery points')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)');

await addCommands(program, serviceCommands);
await runProgram(program);
