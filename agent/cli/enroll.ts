/**
 * lifeboat-agent enroll [TOKEN] [--token TOKEN] [--service URL] [--name FQDN] [--force]: joins the agent to a
 * tenant at the hoster. Makes a key pair and a CSR, pins the service CA by the fingerprint in the
 * token, and keeps the certificate, key (0600), CA chain and the tenant's replica key in the state
 * directory. The endpoint defaults to the one the token names. An enrolled agent is refused unless
 * --force, which starts every protected VM over with a base of a new generation.
 */
import { hostname } from 'node:os';
import type { Command } from 'commander';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { readEnrollmentToken } from '../enroll/token.js';
import { agentState, withStateDir } from './agent-options.js';
import type { StateDirOption } from './agent-options.js';

export function registerEnroll(program: Command): void {
  withStateDir(program
    .command('enroll')
    .description("enroll this server with the hoster's service using a one-time token")
    .option('--service <url>', 'the agent endpoint of the service, e.g. https://dr.example.net:9443 (default: the one the token names)')
    .argument('[token]', 'the one-time enrollment token (lifeboat-service token create)')
    .option('--token <token>', 'the enrollment token, as an option')
    .option('--name <fqdn>', "this server's DNS name, as authorized by the hoster", hostname())
    .option('--force', 'replace an existing enrollment; every protected VM then starts over with a new base'))
    .action(async (positional: string | undefined, opts: StateDirOption & { service?: string; token?: string; name: string; force?: boolean }) => {
      if (positional !== undefined && opts.token !== undefined) throw ErrInvalidArgument('give the enrollment token once: as TOKEN or as --token, not both');
      const token = positional ?? opts.token;
      if (token === undefined) throw ErrInvalidArgument('no enrollment token: run lifeboat-agent enroll TOKEN (the hoster makes one with: lifeboat-service token create)');
      const service = opts.service ?? readEnrollmentToken(token).endpoint;
      if (service === undefined) throw ErrInvalidArgument('the token names no service endpoint; give it with --service URL (example: https://dr.example.net:9443)');
      const option = opts.service === undefined ? "the token's endpoint" : '--service';
      let url: URL;
      try {
        url = new URL(service);
      } catch {
        throw ErrInvalidArgument(`${option} "${service}" is not a URL (example: https://dr.example.net:9443)`);
      }
      if (url.protocol !== 'https:') throw ErrInvalidArgument(`${option} "${service}" must be an https:// URL`);
      const state = agentState(opts);
      // Loaded here, not at start-up: X.509 and its polyfills cost every other command ~0.3 s.
      const { enroll } = await import('../enroll/enroll.js');
      const r = await enroll(state, { serviceUrl: url.origin, token, serverName: opts.name.toLowerCase(), force: opts.force === true });
      process.stdout.write(`enrolled ${r.serverName} with tenant ${r.tenant}; certificate valid until ${r.notAfter}; envelope key ${r.envelopeKey}; state in ${state.dir}\n`);
    });
}
