/** The engine's context from the enrolled identity in the state directory. */
import { checkJwk } from '../../shared/crypto/keys.js';
import { LifeboatError } from '../../shared/errors.js';
import { renewIfDue } from '../enroll/renew.js';
import { refreshReplicaKey } from '../enroll/replica-key.js';
import type { AgentState } from '../state/store.js';
import { HttpTransport } from '../transport/http.js';
import type { EngineContext, EngineLogger } from './context.js';

/**
 * A clear error when the agent is not enrolled, its certificate expired or its replica key is damaged.
 * Renews the certificate first when it is due (a failed renewal is logged; the current one still works).
 */
export async function engineContext(state: AgentState, logger: EngineLogger, now: () => Date = () => new Date()): Promise<EngineContext> {
  let files = await state.readIdentity();
  if (Date.parse(files.identity.certNotAfter) > now().getTime()) {
    try {
      const renewed = await renewIfDue(state, files, now());
      if (renewed) {
        files = renewed;
        logger.info({ notAfter: renewed.identity.certNotAfter }, 'certificate renewed');
      }
    } catch (err) {
      logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'certificate renewal failed; will retry');
    }
  }
  if (Date.parse(files.identity.certNotAfter) <= now().getTime()) {
    throw new LifeboatError('unauthenticated', `this agent's certificate expired at ${files.identity.certNotAfter}; enroll again with a new token`);
  }
  try {
    files = await refreshReplicaKey(state, files);
  } catch (err) {
    logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not ask the service for the tenant replica key; sealing to the one held');
  }
  let recipient;
  try {
    recipient = checkJwk(JSON.parse(files.tenantKeyJwk), 'public', 'tenant replica key');
  } catch (err) {
    throw new LifeboatError('corrupt', `${state.identityDir}/tenant-key.jwk: not a replica key; enroll again`, { cause: err });
  }
  return { state, transport: HttpTransport.fromIdentity(files), tenant: files.identity.tenant, recipient, logger, now };
}
