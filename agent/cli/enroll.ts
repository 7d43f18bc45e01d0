/**
 * lifeboat-agent enroll --service URL --token TOKEN [--name FQDN]: joins the agent to a tenant at the
 * hoster. Makes a key pair and a CSR, pins the service CA by the fingerprint in the token, and keeps
 * the certificate, key (0600), CA chain and the tenant's replica key in the state directory.
 */
import { hostname } from 'node:os';
import type { Command } from 'commander';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { agentState, withStateDir } from './agent-options.js';
import type { StateDirOption } from './agent-options.js';

export function registerEnroll(program: Command): void {
  withStateDir(program
    .command('enroll')
    .description("enroll this server with the hoster's service using a one-time token")
    .requiredOption('--service <url>', 'the agent endpoint of the service, e.g. https://dr.example.net:9443')
    .requiredOption('--token <token>', 'the one-time enrollment token (lifeboat-service token create)')
    .option('--name <fqdn>', "this server's DNS name, as authorized by the hoster", hostname()))
    .action(async (opts: StateDirOption & { service: string; token: string; name: string }) => {
      let url: URL;
      try {
        url = new URL(opts.service);
      } catch {
        throw ErrInvalidArgument(`--service "${opts.service}" is not a URL (example: https://dr.example.net:9443)`);
      }
      if (url.protocol !== 'https:') throw ErrInvalidArgument(`--service "${opts.service}" must be an https:// URL`);
      const state = agentState(opts);
      // Loaded here, not at start-up: X.509 and its polyfills cost every other command ~0.3 s.
      const { enroll } = await import('../enroll/enroll.js');
      const r = await enroll(state, { serviceUrl: url.origin, token: opts.token, serverName: opts.name.toLowerCase() });
      process.stdout.write(`enrolled ${r.serverName} with tenant ${r.tenant}; certificate valid until ${r.notAfter}; state in ${state.dir}\n`);
    });
}
