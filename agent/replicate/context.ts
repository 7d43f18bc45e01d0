/**
 * What the replication engine works with: the state directory, the service, the tenant's replica
 * key, a logger and a clock. Tests build one with the real service or a local test transport.
 */
import type { PublicJwk } from '../../shared/crypto/keys.js';
import type { VmProgress } from '../state/schema.js';
import type { AgentState } from '../state/store.js';
import type { AgentTransport } from '../transport/types.js';
import type { RetryOptions } from './retry.js';
import type { HypervRunnerFactory } from './live.js';

/** The part of a pino logger the engine uses. */
export interface EngineLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface EngineContext {
  state: AgentState;
  transport: AgentTransport;
  tenant: string;
  recipient: PublicJwk;
  logger: EngineLogger;
  now(): Date;
  retry?: RetryOptions;
  /** Chunks of an initial copy in flight at once (default 4). */
  parallelChunks?: number;
  /** Threads that read and seal the chunks of a base (default 2; 0: in this thread). */
  sealThreads?: number;
  /**
   * While another disk of the VM replicates, a base (a disk added to a protected VM, a
   * resynchronization) gets half the VM's interval per cycle and resumes in the next, so it does
   * not hold back the other disks' logs. Set by the daemon; `run --once` finishes every base.
   */
  boundBases?: boolean;
  /** Interval of the periodic verification against the service's digests (default 7 days). */
  verifyEveryMs?: number;
  /** Makes the runner of a hyperv source's host (default: OpenSSH); tests give a recording one. */
  hypervRunner?: HypervRunnerFactory;
  /** Called as an initial copy advances (a progress bar on a terminal). */
  onInitialProgress?: (vm: string, disk: string, done: number, total: number) => void;
}

export const silentLogger: EngineLogger = { info() {}, warn() {}, error() {} };

/**
 * A VM's progress held in memory and written atomically after every change. Writes are group
 * commits: changes that arrive while a write is under way (parallel chunks finishing) are applied
 * together and made durable by the next single write; each update resolves once a write that
 * includes it is durable.
 */
export class ProgressBook {
  private waiting: { fn: (p: VmProgress) => void; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private writing = false;

  constructor(private readonly state: AgentState, readonly vm: string, public progress: VmProgress) {}

  static async load(state: AgentState, vm: string): Promise<ProgressBook> {
    return new ProgressBook(state, vm, await state.readProgress(vm));
  }

  /** Applies fn to the progress and persists it; resolves when it is durable. */
  update(fn: (p: VmProgress) => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ fn, resolve, reject });
      if (!this.writing) void this.flush();
    });
  }

  /**
   * Applies fn to the progress in memory now, without a write of its own: it becomes durable with the
   * next update (or persist()). For changes whose loss in a crash is already covered by what is on
   * disk, such as a chunk marked done whose inflight record, still on disk, gets it committed again.
   */
  defer(fn: (p: VmProgress) => void): void {
    fn(this.progress);
  }

  /** Makes every change applied so far durable. */
  persist(): Promise<void> {
    return this.update(() => {});
  }

  private async flush(): Promise<void> {
    this.writing = true;
    while (this.waiting.length > 0) {
      const batch = this.waiting;
      this.waiting = [];
      try {
        for (const u of batch) u.fn(this.progress);
        await this.state.writeProgress(this.vm, this.progress);
        for (const u of batch) u.resolve();
      } catch (err) {
        for (const u of batch) u.reject(err);
      }
    }
    this.writing = false;
  }
}
