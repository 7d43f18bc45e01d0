/**
 * Application-consistency hooks: shell commands run before (quiesce) and after (thaw) the cycle whose
 * log is marked application-consistent. A failing or hanging hook gives a crash-consistent log and a
 * warning, never a stopped replication.
 */
import { spawn } from 'node:child_process';

export const HookTimeoutMs = 300_000;

/** Runs cmd in a shell; resolves undefined on success, or a one-line reason on failure. */
export function runHook(cmd: string, env: Record<string, string>, timeoutMs = HookTimeoutMs): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn(cmd, { shell: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-500); });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => { clearTimeout(timer); resolve(`could not run "${cmd}": ${err.message}`); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(undefined);
      else resolve(`"${cmd}" ${signal ? `was killed (${signal})` : `exited ${code}`}${stderr.trim() ? `: ${stderr.trim().split('\n').at(-1)}` : ''}`);
    });
  });
}
