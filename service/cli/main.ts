/**
 * lifeboat-service: the hoster-side command. One file per subcommand registers itself here.
 */
import { Command } from 'commander';
import { runProgram } from '../../shared/cli/run.js';

const program = new Command('lifeboat-service')
  .description('lifeboat service: receives tenants\' change logs and keeps their replica disks and recovery points')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)');

await runProgram(program);
