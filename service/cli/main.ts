/**
 * lifeboat-service: the hoster-side command. One file per subcommand registers itself here.
 */
import { Command } from 'commander';
import { runProgram } from '../../shared/cli/run.js';
import { registerExport } from './export.js';
import { registerGuest } from './guest.js';
import { registerFailover } from './failover.js';
import { registerImportMedia } from './import-media.js';
import { registerInit } from './init.js';
import { registerNetwork } from './network.js';
import { registerPoints } from './points.js';
import { registerPublicIp } from './public-ip.js';
import { registerServe } from './serve.js';
import { registerTenant } from './tenant.js';
import { registerToken } from './token.js';
import { registerVm } from './vm.js';
import { registerWorker } from './worker.js';

const program = new Command('lifeboat-service')
  .description('lifeboat service: receives tenants\' change logs and keeps their replica disks and recovery points')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)');

registerInit(program);
registerServe(program);
registerWorker(program);
registerTenant(program);
registerToken(program);
registerVm(program);
registerPoints(program);
registerExport(program);
registerImportMedia(program);
registerGuest(program);
registerFailover(program);
registerNetwork(program);
registerPublicIp(program);

await runProgram(program);
