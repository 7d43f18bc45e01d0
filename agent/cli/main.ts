/**
 * lifeboat-agent: the tenant-side command. One file per subcommand registers itself here.
 */
import { Command } from 'commander';
import { runProgram } from '../../shared/cli/run.js';
import { registerDiskCompare } from './disk-compare.js';
import { registerDiskConvert } from './disk-convert.js';
import { registerDiskCreate } from './disk-create.js';
import { registerDiskInfo } from './disk-info.js';
import { registerEnroll } from './enroll.js';
import { registerFailover } from './failover.js';
import { registerLogInspect } from './log-inspect.js';
import { registerPause } from './pause.js';
import { registerProtect } from './protect.js';
import { registerResume } from './resume.js';
import { registerRun } from './run.js';
import { registerStatus } from './status.js';
import { registerUnprotect } from './unprotect.js';

const program = new Command('lifeboat-agent')
  .description('lifeboat agent: protects virtual disks by shipping encrypted change logs to the hoster')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)');

const disk = program.command('disk').description('inspect, create, convert and compare virtual disk images');
registerDiskInfo(disk);
registerDiskCreate(disk);
registerDiskConvert(disk);
registerDiskCompare(disk);
const log = program.command('log').description('inspect change logs (.hrl)');
registerLogInspect(log);
registerEnroll(program);
registerProtect(program);
registerUnprotect(program);
registerPause(program);
registerResume(program);
registerStatus(program);
registerRun(program);
registerFailover(program);

await runProgram(program);
