/**
 * Commit of one disk: QMP `block-stream` of its overlay node ovN copies what the guest reads from the
 * NBD export into the overlay and drops the backing, so the VM no longer needs the export.
 * Idempotent: a job already running (after a host restart) is waited for, not started again, and an
 * overlay with no backing left is done. Failure: the job's error, or an overlay still backed after
 * the job ended, as a LifeboatError naming the disk.
 */
import type { Logger } from 'pino';
import { LifeboatError } from '../../../shared/errors.js';
import type { QmpClient, QmpEvent } from '../../../shared/qmp/client.js';
import { sleep } from './qemu-files.js';

const PollMs = 200;

export async function streamDisk(qmp: QmpClient, index: number, diskId: string, log?: Logger): Promise<void> {
  const node = `ov${index}`;
  const job = `stream-${node}`;
  if (!(await hasBacking(qmp, node))) return;
  let failure: string | undefined;
  const onEvent = (ev: QmpEvent) => {
    if ((ev.event === 'BLOCK_JOB_COMPLETED' || ev.event === 'BLOCK_JOB_ERROR') && ev.data.device === job && ev.data.error) failure = String(ev.data.error);
  };
  qmp.on('event', onEvent);
  try {
    if (!(await jobRunning(qmp, job))) await qmp.execute('block-stream', { 'job-id': job, device: node });
    log?.info({ disk: diskId, job }, 'block-stream running');
    // Jobs are dismissed when they end (auto-dismiss): polled until it is gone, events give its error.
    while (await jobRunning(qmp, job)) {
      if (failure) break;
      await sleep(PollMs);
    }
    if (failure) throw new LifeboatError('io', `commit disk ${diskId}: block-stream failed: ${failure}`);
    if (await hasBacking(qmp, node)) throw new LifeboatError('io', `commit disk ${diskId}: block-stream ended and the overlay still has its backing`);
  } finally {
    qmp.off('event', onEvent);
  }
}

/**
 * Puts every block node's data on disk: qcow2 keeps new mappings in memory until a flush, and QMP has
 * no flush of its own; stopping the VM flushes every node, and `cont` follows at once.
 */
export async function flushAll(qmp: QmpClient): Promise<void> {
  const { status } = await qmp.execute<{ status: string }>('query-status');
  await qmp.execute('stop');
  if (status === 'running') await qmp.execute('cont');
}

/** Whether a node still has a backing. One given as a node reference shows as backing_file only. */
export async function hasBacking(qmp: QmpClient, node: string): Promise<boolean> {
  const nodes = await qmp.execute<{ 'node-name': string; backing_file?: string; image?: { 'backing-image'?: unknown } }[]>('query-named-block-nodes', { flat: true });
  const n = nodes.find((x) => x['node-name'] === node);
  if (!n) throw new LifeboatError('corrupt', `qemu has no block node ${node}`);
  return n.backing_file !== undefined || n.image?.['backing-image'] !== undefined;
}

async function jobRunning(qmp: QmpClient, job: string): Promise<boolean> {
  return (await qmp.execute<{ device: string }[]>('query-block-jobs')).some((j) => j.device === job);
}
