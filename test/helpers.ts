/** Shared test helpers: scratch directories and the external referees (qemu-img, qemu-io). */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

export const execFileP = promisify(execFile);

/** A fresh directory removed after the test file; use inside describe/it via onTestFinished or afterAll. */
export async function scratchDir(prefix = 'lifeboat-test-'): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** Runs a referee command (qemu-img, qemu-io) and returns stdout; throws with stderr on failure. */
export async function referee(cmd: 'qemu-img' | 'qemu-io', args: string[]): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 << 20 });
  return stdout;
}
