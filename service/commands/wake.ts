/**
 * Wake-ups of waiting long-polls. A command queued in this process wakes the agent's waiting
 * GET /v1/commands at once; one queued by another process (a failover host of its own, a second API
 * process) is found by the long-poll's own look at the catalog every CommandPollMs. No Redis: the
 * catalog is the authority and the poll is one indexed query per waiting agent per second.
 */
import { EventEmitter } from 'node:events';

/** How often a waiting long-poll looks at the catalog for commands queued by another process. */
export const CommandPollMs = 1000;

const emitter = new EventEmitter();
emitter.setMaxListeners(0);

const keyOf = (tenant: string, fqdn: string) => `${tenant}\u0000${fqdn}`;

/** Wakes the long-polls of this agent waiting in this process. */
export function wakeAgent(tenant: string, fqdn: string): void {
  emitter.emit(keyOf(tenant, fqdn));
}

/** Resolves when this agent is woken, after ms, or when signal aborts, whichever comes first. */
export function sleepUntilWoken(tenant: string, fqdn: string, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const key = keyOf(tenant, fqdn);
    const done = () => {
      clearTimeout(timer);
      emitter.off(key, done);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    emitter.on(key, done);
    signal?.addEventListener('abort', done);
    if (signal?.aborted) done();
  });
}
