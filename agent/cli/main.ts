/**
 * lifeboat-agent: the tenant-side command. Its subcommands are listed in commands.ts and loaded when named.
 */
import { Command } from 'commander';
import { addCommands } from '../../shared/cli/lazy.js';
import { runProgram } from '../../shared/cli/run.js';
import { agentCommands } from './commands.js';

const program = new Command('lifeboat-agent')
  .description('lifeboat agent: protects virtual disks by shipping encrypted change logs to the hoster')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)');

await addCommands(program, agentCommands);
await runProgram(program);
