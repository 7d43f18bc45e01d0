/** Small process helpers for the long-running subcommands. */
import { ErrInvalidArgument } from '../../shared/errors.js';

/** Resolves at the first SIGINT or SIGTERM. */
export function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

export function parsePort(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw ErrInvalidArgument(`${what} ${JSON.stringify(text)} is not a port (0 to 65535)`);
  return Number(text);
}
