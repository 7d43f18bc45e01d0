/**
 * The agent's state directory. Layout (docs/formats/agent-state.md):
 *
 *   identity/agent.json  key.pem (0600)  cert.pem  ca.pem  tenant-key.jwk
 *   vms/<vm>/config.json     written by protect/pause/resume
 *   vms/<vm>/progress.json   written by the replication engine only
 *   vms/<vm>/<disk>.map      committed block map of the scan tracker (and .pending, .initial)
 *   run.lock                 held by the one running engine
 *
 * Every write is atomic (atomic.ts). A file that fails its schema is an error naming the file: the
 * agent never silently resets state, because a reset would start replication over.
 */
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { z } from 'zod';
import { ErrCorrupt, ErrInvalidArgument, ErrNotFound, wrap } from '../../shared/errors.js';
import { readJsonFile, writeFileAtomic, writeJsonAtomic } from './atomic.js';
import { Identity, VmConfig, VmNamePattern, VmProgress, emptyProgress } from './schema.js';

export interface IdentityFiles {
  identity: Identity;
  keyPem: string;
  certPem: string;
  caPem: string;
  tenantKeyJwk: string;
}

function parseState<T extends z.ZodType>(schema: T, value: unknown, path: string): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue && issue.path.length > 0 ? ` at ${issue.path.join('.')}` : '';
    throw ErrCorrupt(`${path}: state file is invalid${where}: ${issue?.message ?? 'schema mismatch'}; fix or remove it by hand, the agent will not reset it`);
  }
  return r.data;
}

export function checkVmName(name: string): string {
  if (!VmNamePattern.test(name)) throw ErrInvalidArgument(`VM name "${name}" must be 1-64 lower-case letters, digits, '_' or '-', starting with a letter or digit`);
  return name;
}

export class AgentState {
  constructor(readonly dir: string) {}

  get identityDir(): string { return join(this.dir, 'identity'); }
  vmDir(vm: string): string { return join(this.dir, 'vms', checkVmName(vm)); }
  mapPath(vm: string, diskId: string, kind: 'committed' | 'pending' | 'initial' = 'committed'): string {
    const suffix = kind === 'committed' ? '' : `.${kind}`;
    return join(this.vmDir(vm), `${diskId}.map${suffix}`);
  }

  /** Creates the directory tree (0700: it holds the private key). */
  async init(): Promise<void> {
    try {
      await mkdir(join(this.dir, 'vms'), { recursive: true, mode: 0o700 });
      await mkdir(this.identityDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw wrap(`state directory ${this.dir}`, err);
    }
  }

  // ── identity ────────────────────────────────────────────────────────────────

  async hasIdentity(): Promise<boolean> {
    return (await readJsonFile(join(this.identityDir, 'agent.json'))) !== undefined;
  }

  /** The enrolled identity; a clear error when the agent was never enrolled. */
  async readIdentity(): Promise<IdentityFiles> {
    const path = join(this.identityDir, 'agent.json');
    const raw = await readJsonFile(path);
    if (raw === undefined) throw ErrNotFound(`this agent is not enrolled (no ${path}); run: lifeboat-agent enroll TOKEN`);
    const identity = parseState(Identity, raw, path);
    const read = async (name: string) => {
      try {
        return await readFile(join(this.identityDir, name), 'utf8');
      } catch (err) {
        throw wrap(`read identity`, err);
      }
    };
    return { identity, keyPem: await read('key.pem'), certPem: await read('cert.pem'), caPem: await read('ca.pem'), tenantKeyJwk: await read('tenant-key.jwk') };
  }

  /** Writes the identity; agent.json last, so a half-finished enrollment reads as "not enrolled". */
  async writeIdentity(files: IdentityFiles): Promise<void> {
    await this.init();
    await writeFileAtomic(join(this.identityDir, 'key.pem'), files.keyPem, 0o600);
    await writeFileAtomic(join(this.identityDir, 'cert.pem'), files.certPem, 0o644);
    await writeFileAtomic(join(this.identityDir, 'ca.pem'), files.caPem, 0o644);
    await writeFileAtomic(join(this.identityDir, 'tenant-key.jwk'), files.tenantKeyJwk, 0o644);
    await writeJsonAtomic(join(this.identityDir, 'agent.json'), Identity.parse(files.identity), 0o644);
  }

  // ── VMs ─────────────────────────────────────────────────────────────────────

  async listVms(): Promise<string[]> {
    return this.listVmsWith('config.json');
  }

  /** The VMs whose directory holds the file (config.json: protected VMs; reverse.json: VMs reverse logs were applied for). */
  async listVmsWith(file: string): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(join(this.dir, 'vms'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw wrap(`list ${this.dir}`, err);
    }
    const vms: string[] = [];
    for (const n of names.sort()) {
      if (VmNamePattern.test(n) && (await exists(join(this.dir, 'vms', n, file)))) vms.push(n);
    }
    return vms;
  }

  /** The VM's config, or undefined when it is not protected. */
  async findConfig(vm: string): Promise<VmConfig | undefined> {
    const path = join(this.vmDir(vm), 'config.json');
    const raw = await readJsonFile(path);
    return raw === undefined ? undefined : parseState(VmConfig, raw, path);
  }

  async readConfig(vm: string): Promise<VmConfig> {
    const config = await this.findConfig(vm);
    if (!config) throw ErrNotFound(`VM "${vm}" is not protected (see: lifeboat-agent status)`);
    return config;
  }

  async writeConfig(config: VmConfig): Promise<void> {
    const dir = this.vmDir(config.name);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeJsonAtomic(join(dir, 'config.json'), VmConfig.parse(config));
  }

  /** The engine's progress for a VM; a fresh record when the engine never ran for it. */
  async readProgress(vm: string): Promise<VmProgress> {
    const path = join(this.vmDir(vm), 'progress.json');
    const raw = await readJsonFile(path);
    return raw === undefined ? emptyProgress() : parseState(VmProgress, raw, path);
  }

  async writeProgress(vm: string, progress: VmProgress): Promise<void> {
    await writeJsonAtomic(join(this.vmDir(vm), 'progress.json'), VmProgress.parse(progress));
  }

  /**
   * Starts a VM's replication over as if its progress had been lost: everything of the VM but its
   * config (progress, block maps, spooled objects) is removed, so the next cycle registers it and sends
   * a base of a new generation (a delta where the service holds a complete replica). Cycle ids keep rising.
   */
  async restartVm(vm: string): Promise<void> {
    const dir = this.vmDir(vm);
    // A damaged progress file is what this replaces; cycle ids start from the clock anyway.
    const nextCycle = await this.readProgress(vm).then((p) => p.nextCycle, () => 1);
    for (const name of await readdir(dir)) if (name !== 'config.json') await rm(join(dir, name), { recursive: true, force: true });
    await this.writeProgress(vm, { ...emptyProgress(), nextCycle });
  }

  /** Forgets a VM: its config first (so a crash midway leaves it unprotected, not half-protected). */
  async removeVm(vm: string): Promise<void> {
    const dir = this.vmDir(vm);
    await rm(join(dir, 'config.json'), { force: true });
    await rm(dir, { recursive: true, force: true });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
