/** Placeholder until the merge job lands: workers that do nothing yet. */
import type { ServiceContext } from '../context.js';
import type { EnqueueMerge } from '../replication/uploads.js';

export async function startMergeWorkers(_ctx: ServiceContext, _options: { redisUrl: string; enqueue: EnqueueMerge }): Promise<{ stop(): Promise<void> }> {
  return { stop: async () => undefined };
}
