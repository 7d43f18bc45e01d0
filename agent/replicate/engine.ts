/**
 * The replication engine: cycle(vm) does what is due for one VM now (registration with the service,
 * a pending or resumed base, else one change-log cycle per disk) and runOnce() does it for every
 * protected VM. The daemon (daemon.ts) is a timer around cycle(); tests call it directly.
 *
 * A failure leaves the VM's replication position untouched: the tracker keeps its changes, spooled
 * objects stay recorded, and the next cycle carries everything.
 */
import type { DiskImage } from '../../shared/disk/index.js';
import { openDisk } from '../../shared/disk/index.js';
import { LifeboatError, userMessage } from '../../shared/errors.js';
import type { CycleStats, DiskProgress, VmConfig } from '../state/schema.js';
import type { DiskStatus } from '../transport/types.js';
import type { EngineContext } from './context.js';
import { ProgressBook } from './context.js';
import { isOutOfStepRefusal, outOfStep, restartDisk } from './continuity.js';
import { diskCycle, recoverLogs } from './cycle.js';
import { runHook } from './hooks.js';
import { DefaultChunkSize, recoverAdoptedBase, runBase, startBase } from './initial.js';
import { registrationDigest, vmRegistration } from './registration.js';
import { withRetry } from './retry.js';
import { isLive, noteMachine, noteTracking, openLiveView, sourceQuiesces } from './live.js';
import type { LiveView } from '../sources/live-view.js';

/** How often each disk is compared with its replica through the service's digests. */
export const DefaultVerifyEveryMs = 7 * 24 * 3_600_000;

export interface VmCycleResult {
  vm: string;
  outcome: 'ok' | 'missed' | 'skipped' | 'failed';
  stats?: CycleStats;
  /** Bytes of disk covered by bases (initial copies, resynchronizations) shipped in this cycle. */
  baseBytes?: number;
  error?: string;
}

function freshDisk(): DiskProgress {
  return {
    generation: 0, nextSequence: 1, virtualSize: 0, resyncReason: null, inflight: [],
    initial: { state: 'pending', mode: 'full', generation: 0, virtualSize: 0, chunkSize: DefaultChunkSize, chunksDone: '', bytesTotal: 0, bytesDone: 0, bytesSent: 0 },
  };
}

/**
 * Takes this VM cycle's id: max(nextCycle, the cycle's start in ms), recorded (id + 1) durably before
 * anything of the cycle is sealed, so no id is used twice, across restarts and a killed engine too;
 * starting from the clock keeps ids rising even after the agent's state was lost and rebuilt.
 */
async function takeCycleId(book: ProgressBook, started: Date): Promise<number> {
  const id = Math.max(book.progress.nextCycle, started.getTime());
  await book.update((p) => { p.nextCycle = id + 1; });
  return id;
}

function awaitsNothing(sd: DiskStatus | undefined, p: DiskProgress): boolean {
  return sd !== undefined && sd.baseComplete && sd.generation >= p.generation;
}

export class Replicator {
  constructor(readonly ctx: EngineContext) {}

  /** One pass over every protected VM; failures are logged and reported, not thrown. */
  async runOnce(): Promise<VmCycleResult[]> {
    const results: VmCycleResult[] = [];
    for (const vm of await this.ctx.state.listVms()) {
      try {
        results.push(await this.cycle(vm));
      } catch (err) {
        const error = userMessage(err) ?? (err instanceof Error ? err.message : String(err));
        this.ctx.logger.error({ vm, err: error }, 'cycle failed');
        if (userMessage(err) === undefined) this.ctx.logger.error({ vm, stack: (err as Error).stack }, 'bug');
        results.push({ vm, outcome: 'failed', error });
      }
    }
    return results;
  }

  /** Does what is due for the VM now. Throws when the cycle failed (the daemon retries with backoff). */
  async cycle(vm: string): Promise<VmCycleResult> {
    const { ctx } = this;
    const config = await ctx.state.readConfig(vm);
    if (config.paused) return { vm, outcome: 'skipped' };
    if (config.startAt && Date.parse(config.startAt) > ctx.now().getTime()) return { vm, outcome: 'skipped' };
    const started = ctx.now();
    const book = await ProgressBook.load(ctx.state, vm);
    const disks = new Map<string, DiskImage>();
    let live: LiveView | undefined;
    try {
      const warnings: string[] = [];
      // A live source: one point-in-time view of every disk, quiesced when an application-consistent point is due.
      let liveConsistency: 'crash' | 'application' = 'crash';
      if (isLive(config)) {
        const hooked = await this.quiesce(config, book, warnings);
        try {
          live = await openLiveView(ctx.state, config, sourceQuiesces(config) && this.appDue(config, book), ctx.hypervRunner);
        } finally {
          if (hooked === 'application' && config.postSnapshot) {
            const why = await runHook(config.postSnapshot, { LIFEBOAT_VM: vm });
            if (why) warnings.push(`post-snapshot hook failed: ${why}`);
          }
        }
        warnings.push(...live.warnings);
        liveConsistency = live.consistency === 'application' || hooked === 'application' ? 'application' : 'crash';
        for (const [id, d] of live.disks) disks.set(id, d.image);
      } else {
        for (const d of config.disks) disks.set(d.id, await openDisk(d.path, { readOnly: true }));
      }
      if (live && isLive(config)) await noteMachine(book, live, config, started.toISOString());
      const service = await this.register(book, config, disks);
      if (live) {
        for (const id of await noteTracking(book, live, started.toISOString())) ctx.logger.warn({ vm, disk: id }, 'change tracking lost: resynchronizing against the replica');
      }
      const cycleId = await takeCycleId(book, started);
      let changedBytes = 0;
      let sentBytes = 0;
      let logs = 0;

      // Bases first: a new disk, an initial copy in progress, a resynchronization the service asked for.
      book.progress.lastVerifiedAt ??= started.toISOString();
      let verified = false;
      let baseBytes = 0;
      for (const d of config.disks) {
        const p = book.progress.disks[d.id]!;
        const sd = service.get(d.id);
        try {
          sentBytes += await recoverLogs(ctx, book, config, d.id);
        } catch (err) {
          if (!isOutOfStepRefusal(err)) throw err;
          await this.restart(book, d.id, `${userMessage(err) ?? String(err)}; this agent's state is older than the service's: sending a base of a new generation`);
        }
        if (await recoverAdoptedBase(ctx, book, config, d.id)) {
          ctx.logger.info({ vm, disk: d.id, generation: p.initial.generation }, 'base completed before the restart; recorded');
          if (p.initial.mode === 'delta') verified = true;
        }
        // The service's expectations rule: a base it never received, or a position it is past, means a new generation.
        const behind = config.initial.mode === 'media' ? undefined : outOfStep(sd, p);
        if (behind !== undefined) await this.restart(book, d.id, behind);
        if (sd?.state === 'resync_required' && p.initial.state === 'done') {
          ctx.logger.warn({ vm, disk: d.id, reason: sd.resyncReason }, 'service asks for a resynchronization');
          await book.update((x) => { x.disks[d.id]!.resyncReason = sd.resyncReason ?? 'service asked for resynchronization'; x.disks[d.id]!.initial.state = 'pending'; });
        } else if (this.verificationDue(book, config, sd)) {
          // Periodic verification: bounds how long a block the scan tracker missed (a digest
          // collision) can stay wrong at the hoster. Only when the service has applied everything,
          // so its digests describe the latest replica.
          ctx.logger.info({ vm, disk: d.id }, 'verifying the replica against its block digests');
          await book.update((x) => { x.disks[d.id]!.resyncReason = 'periodic verification'; x.disks[d.id]!.initial.state = 'pending'; });
        }
        if (p.initial.state !== 'done') {
          // A delta against the replica whenever the service holds one (existing copies, resync,
          // verification, re-protection after lost state); otherwise the whole disk.
          const delta = sd?.baseComplete === true;
          const baseCycle = { id: cycleId, capturedMs: live?.capturedMs ?? ctx.now().getTime() };
          await startBase(ctx, book, d.id, disks.get(d.id)!, delta ? 'delta' : 'full', sd?.generation ?? 0, baseCycle);
          ctx.logger.info({ vm, disk: d.id, mode: book.progress.disks[d.id]!.initial.mode, generation: book.progress.disks[d.id]!.initial.generation }, 'base');
          if (book.progress.disks[d.id]!.initial.mode === 'delta') verified = true;
          baseBytes += book.progress.disks[d.id]!.initial.virtualSize;
          const othersReplicate = config.disks.some((x) => x.id !== d.id && book.progress.disks[x.id]?.initial.state === 'done');
          const deadline = ctx.boundBases && othersReplicate ? started.getTime() + config.frequencyMs / 2 : undefined;
          sentBytes += await runBase(ctx, book, config, d.id, disks.get(d.id)!, deadline, baseCycle);
        }
      }

      // Then one log per disk, application-consistent when due and the hooks succeed (a live
      // source's view was quiesced and thawed when it was taken).
      const consistency = live ? liveConsistency : await this.quiesce(config, book, warnings);
      // One capture time for every disk's log of this cycle: the application is quiesced (when it is
      // due) and no disk has been read for this cycle's logs yet (a live source: its view's instant).
      // RPO is measured from it.
      const vmCycle = { id: cycleId, capturedMs: live?.capturedMs ?? ctx.now().getTime() };
      let thawed = consistency === 'crash' || live !== undefined;
      const thaw = async () => {
        if (thawed) return;
        thawed = true;
        const why = config.postSnapshot ? await runHook(config.postSnapshot, { LIFEBOAT_VM: vm }) : undefined;
        if (why) warnings.push(`post-snapshot hook failed: ${why}`);
      };
      try {
        // A base shipped on media counts only once the hoster imported it; until then changes stay tracked.
        // A base still under way (bounded, above) resumes in the next cycle; its disk has no log yet.
        const ready = config.disks.filter((d) => book.progress.disks[d.id]!.initial.state === 'done'
          && (config.initial.mode !== 'media' || awaitsNothing(service.get(d.id), book.progress.disks[d.id]!)));
        for (const [i, d] of ready.entries()) {
          const tracked = live?.disks.get(d.id)!.cycle;
          if (tracked?.bitmapLost) {
            // Its bitmap was lost: the delta base just shipped the view whole; the new bitmap records from its instant.
            await tracked.commit();
            continue;
          }
          const r = await diskCycle(ctx, book, config, d.id, disks.get(d.id)!, consistency, i === ready.length - 1 ? thaw : async () => {}, vmCycle, tracked).catch(async (err: unknown) => {
            if (!isOutOfStepRefusal(err)) throw err;
            // Refused for good: the next cycle sends a base of a new generation instead of this log again.
            const why = `${userMessage(err) ?? String(err)}; this agent's state is older than the service's: the next cycle sends a base of a new generation`;
            await this.restart(book, d.id, why);
            throw new LifeboatError('conflict', `${d.id}: ${why}`, { cause: err });
          });
          changedBytes += r.changedBytes;
          sentBytes += r.sentBytes;
          logs++;
        }
      } finally {
        await thaw();
      }
      for (const w of warnings) ctx.logger.warn({ vm }, w);

      const finished = ctx.now();
      const missed = finished.getTime() - started.getTime() > config.frequencyMs;
      const stats: CycleStats = {
        startedAt: started.toISOString(), finishedAt: finished.toISOString(), consistency, changedBytes, sentBytes, logs,
        outcome: missed ? 'missed' : 'ok', error: null, warnings,
      };
      await book.update((p) => {
        if (verified) p.lastVerifiedAt = started.toISOString();
        p.lastCycle = stats;
        p.lastCapturedAt = started.toISOString();
        if (consistency === 'application') p.lastAppConsistentAt = started.toISOString();
        if (missed) p.counts.missed++;
        else p.counts.ok++;
      });
      ctx.logger.info({ vm, changedBytes, sentBytes, logs, consistency, outcome: stats.outcome }, 'cycle');
      return { vm, outcome: stats.outcome, stats, baseBytes };
    } catch (err) {
      // Recorded for status (what failed and when); the replication position stays as it was.
      const error = userMessage(err) ?? (err instanceof Error ? err.message : String(err));
      await book.update((p) => {
        p.lastCycle = {
          startedAt: started.toISOString(), finishedAt: ctx.now().toISOString(), consistency: 'crash', changedBytes: 0, sentBytes: 0, logs: 0,
          outcome: 'failed', error, warnings: [],
        };
        p.counts.failed++;
      }).catch(() => undefined);
      throw err;
    } finally {
      for (const disk of disks.values()) await disk.close();
      // Cycles not committed (a failure, a base still under way) keep their changes in the live bitmap.
      await live?.close();
    }
  }

  /** Registers the VM (again when a disk was added or grew) and returns the service's view of its disks. */
  private async register(book: ProgressBook, config: VmConfig, disks: Map<string, DiskImage>): Promise<Map<string, DiskStatus>> {
    const { ctx } = this;
    const p = book.progress;
    // Registered again when a disk was added or grew, or protect changed a setting, the hardware or the NICs.
    const registration = vmRegistration(config, disks, p.machine);
    const digest = registrationDigest(registration);
    let changed = !p.registered || p.registeredDigest !== digest || config.disks.some((d) => p.disks[d.id]?.virtualSize !== disks.get(d.id)!.virtualSize);
    const register = () => withRetry(() => ctx.transport.registerVm(config.name, registration), ctx.retry);
    const status = changed ? await register() : await withRetry(() => ctx.transport.vmStatus(config.name), ctx.retry).catch((err: unknown) => {
      // The service does not know the VM (another identity's service, or the hoster removed it): register it again.
      if (!(err instanceof LifeboatError && err.code === 'not_found')) throw err;
      changed = true;
      return register();
    });
    if (changed) {
      await book.update((x) => {
        x.registered = true;
        x.registeredDigest = digest;
        for (const d of config.disks) {
          x.disks[d.id] ??= freshDisk();
          x.disks[d.id]!.virtualSize = disks.get(d.id)!.virtualSize;
        }
      });
    }
    return new Map(status.disks.map((d) => [d.id, d]));
  }

  private async restart(book: ProgressBook, diskId: string, reason: string): Promise<void> {
    this.ctx.logger.warn({ vm: book.vm, disk: diskId, reason }, 'replication out of step with the service');
    await restartDisk(book, diskId, reason);
  }

  private verificationDue(book: ProgressBook, config: VmConfig, sd: DiskStatus | undefined): boolean {
    const last = book.progress.lastVerifiedAt;
    if (!last || !sd || !sd.baseComplete || sd.pendingLogs > 0 || config.initial.mode === 'media') return false;
    return this.ctx.now().getTime() - Date.parse(last) >= (this.ctx.verifyEveryMs ?? DefaultVerifyEveryMs);
  }

  /** Whether an application-consistent point is due (every cycle when no interval is set). */
  private appDue(config: VmConfig, book: ProgressBook): boolean {
    const every = config.appConsistentEveryMs;
    const last = book.progress.lastAppConsistentAt;
    return every === null || !last || this.ctx.now().getTime() - Date.parse(last) >= every;
  }

  /** Runs the pre-snapshot hook when an application-consistent point is due. */
  private async quiesce(config: VmConfig, book: ProgressBook, warnings: string[]): Promise<'crash' | 'application'> {
    const every = config.appConsistentEveryMs;
    if (every === null || (!config.preSnapshot && !config.postSnapshot)) return 'crash';
    const last = book.progress.lastAppConsistentAt;
    if (last && this.ctx.now().getTime() - Date.parse(last) < every) return 'crash';
    if (!config.preSnapshot) return 'application';
    const why = await runHook(config.preSnapshot, { LIFEBOAT_VM: config.name });
    if (!why) return 'application';
    warnings.push(`pre-snapshot hook failed, this point is crash-consistent: ${why}`);
    return 'crash';
  }
}
