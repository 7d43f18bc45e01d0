/**
 * run.lock: one replication engine per state directory. The lock file holds the owner's process id;
 * a lock whose process is gone (killed agent) is taken over.
 */
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LifeboatError } from '../../shared/errors.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the engine lock of the state directory; returns its release function. */
export async function takeRunLock(stateDir: string): Promise<() => Promise<void>> {
  const path = join(stateDir, 'run.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o600);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return () => rm(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new LifeboatError('conflict', `another lifeboat-agent run (pid ${pid}) is using ${stateDir}`);
      }
      await rm(path, { force: true });
    }
  }
  throw new LifeboatError('conflict', `cannot take ${path}`);
}
