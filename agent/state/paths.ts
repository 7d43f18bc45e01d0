/**
 * Where the agent keeps its state: a per-OS default, overridden by LIFEBOAT_AGENT_STATE and then by
 * --state-dir. The directory holds secrets (the agent's private key), so it is created 0700.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export const StateDirEnv = 'LIFEBOAT_AGENT_STATE';

export interface StateDirContext {
  platform: NodeJS.Platform;
  env: NodeJS.ProcessEnv;
  /** Effective user id; undefined where the platform has none (Windows). */
  uid: number | undefined;
  home: string;
}

function currentContext(): StateDirContext {
  return { platform: process.platform, env: process.env, uid: process.getuid?.(), home: homedir() };
}

/** The default state directory of this OS and user (no override applied). */
export function defaultStateDir(ctx: StateDirContext = currentContext()): string {
  if (ctx.platform === 'win32') {
    const programData = ctx.env.ProgramData ?? ctx.env.PROGRAMDATA ?? 'C:\\ProgramData';
    return `${programData}\\lifeboat\\agent`;
  }
  if (ctx.uid === 0) return '/var/lib/lifeboat-agent';
  const xdgState = ctx.env.XDG_STATE_HOME;
  return join(xdgState && xdgState.startsWith('/') ? xdgState : join(ctx.home, '.local', 'state'), 'lifeboat-agent');
}

/** --state-dir wins, then LIFEBOAT_AGENT_STATE, then the OS default. */
export function resolveStateDir(flag: string | undefined, ctx: StateDirContext = currentContext()): string {
  if (flag) return resolve(flag);
  const fromEnv = ctx.env[StateDirEnv];
  if (fromEnv) return resolve(fromEnv);
  return defaultStateDir(ctx);
}
