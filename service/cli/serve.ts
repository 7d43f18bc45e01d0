/**
 * `lifeboat-service serve --config FILE [--api-port N] [--agent-port N]`: the whole service in one
 * process. Logs are JSON lines on stderr; stdout gets exactly one line when ready, with the URLs.
 */
import type { Command } from 'commander';
import pino from 'pino';
import { loadConfig } from '../config/config.js';
import { parsePort, waitForSignal } from './process.js';
import { withConfig } from './common.js';

export function registerServe(program: Command): void {
  withConfig(program.command('serve').description('run the agent endpoint, the operator API and (embedded) the merge workers'))
    .option('--api-port <n>', 'operator API port (default from config, 8080)')
    .option('--agent-port <n>', 'agent endpoint port (default from config, 9443)')
    .option('--no-workers', 'do not run merge workers in this process')
    .option('--no-failover-host', 'do not run a failover host in this process (run lifeboat-service failover-host instead)')
    .action(async (opts: { config?: string; apiPort?: string; agentPort?: string; workers: boolean; failoverHost: boolean }) => {
      const config = await loadConfig(opts.config);
      const log = pino({ level: config.logLevel, base: { service: 'lifeboat' } }, pino.destination(2));
      const { startService } = await import('../runner.js');
      const svc = await startService(config, {
        apiPort: parsePort(opts.apiPort, '--api-port'), agentPort: parsePort(opts.agentPort, '--agent-port'),
        workers: opts.workers ? undefined : false, failoverHost: opts.failoverHost ? undefined : false, log,
      });
      const signalled = waitForSignal(); // before saying ready: a SIGTERM right after must find the handler
      process.stdout.write(`lifeboat-service ready: api ${svc.apiUrl} agents ${svc.agentUrl}\n`);
      await signalled;
      log.info('stopping');
      await svc.stop();
    });
}
