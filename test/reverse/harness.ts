/**
 * The reverse replication rig with real parts, shared by test/reverse/reverse.test.ts and
 * `npm run bench -- reverse`: the service (PostgreSQL, its agent endpoint, the file object store), an
 * enrolled agent with its state directory, VM vm1 registered with one raw disk, and a failed-over VM
 * under the qemu driver (TCG, boots nothing) whose overlay reads the point from qemu-nbd. The caller
 * writes the point image and the on-premises copy; the rig runs reverse cycles, the agent's applier and
 * writes at the hoster (qemu-io through HMP).
 */
import { join } from 'node:path';
import { ReverseClient } from '../../agent/reverse/client.js';
import { applyReverse } from '../../agent/reverse/apply.js';
import { AgentState } from '../../agent/state/store.js';
import type { IdentityFiles } from '../../agent/state/store.js';
import { QemuDriver } from '../../service/failover/drivers/qemu.js';
import { reverseCycle } from '../../service/reverse/cycle.js';
import type { Compression } from '../../shared/log/header.js';
import type { RunningService } from '../../service/runner.js';
import { scratchDir } from '../helpers.js';
import { killLeftQemus, serveNbd, type NbdServer } from '../failover/qemu-helpers.js';
import { enrolledAgent, httpsJson, testEnv, testService, type TestEnv } from '../service/helpers.js';

export const ReverseVm = 'vm1';

export interface ReverseRig {
  env: TestEnv;
  svc: RunningService;
  dir: string;
  files: IdentityFiles;
  state: AgentState;
  driver: QemuDriver;
  workDir: string;
  /** The point (raw, served read-only by qemu-nbd), the on-premises disk, the hoster's overlay. */
  point: string;
  onPrem: string;
  overlay: string;
  failover: { id: string; tenant: string; vm: string; fork: { disk: string; replicaDir: string; layer: string; virtualSize: number; bus: string }[] };
  /** The hoster's disk before commit: the overlay over the point (its header names no backing). */
  hosterUncommitted(): string[];
  cycle(compression?: Compression): ReturnType<typeof reverseCycle>;
  apply(): ReturnType<typeof applyReverse>;
  hmp(cmd: string): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts the rig for a disk of size bytes. prepare(point, onPrem) writes both images (the point must
 * exist when it returns: qemu-nbd serves it next).
 */
export async function startReverseRig(size: number, prepare: (point: string, onPrem: string) => Promise<void>, prefix = 'lifeboat-rv-'): Promise<ReverseRig> {
  const env = await testEnv();
  const svc = await testService(env);
  const scratch = await scratchDir(prefix);
  const dir = scratch.path;
  const vm = ReverseVm;
  const point = join(dir, 'point.raw');
  const onPrem = join(dir, 'onprem.raw');
  // Where a failover host with directory dir keeps failover fo-1 (workDirOf: <host dir>/vms/<id>).
  const workDir = join(dir, 'vms', 'fo-1');
  const overlay = join(workDir, 'disk0.qcow2');
  let nbd: NbdServer | undefined;
  let driver: QemuDriver | undefined;
  const stop = async () => {
    await driver?.stop(workDir).catch(() => undefined);
    await driver?.close();
    await killLeftQemus(dir);
    await nbd?.stop();
    await svc.stop();
    await env.cleanup();
    await scratch.remove();
  };
  try {
    await prepare(point, onPrem);
    const id = await enrolledAgent(svc, 'acme', '*.acme.test', 'hv1.acme.test');
    const reg = await httpsJson(`${svc.agentUrl}/v1/vms/${vm}`, {
      method: 'PUT', caPem: svc.ctx.ca.certPem, identity: id,
      body: { disks: [{ id: 'disk0', virtualSize: size, format: 'raw' }], frequency: '5m', history: 0, appConsistentEvery: 0, compression: 'zstd' },
    });
    if (reg.status !== 201) throw new Error(`registering ${vm}: HTTP ${reg.status}`);
    const files: IdentityFiles = {
      keyPem: id.keyPem, certPem: id.certPem, caPem: svc.ctx.ca.certPem, tenantKeyJwk: JSON.stringify(id.replicaKey),
      identity: { version: 1, serviceUrl: svc.agentUrl, name: 'hv1.acme.test', tenant: 'acme', caFingerprint: svc.ctx.ca.fingerprint, certNotAfter: new Date(Date.now() + 86_400_000).toISOString(), enrolledAt: new Date().toISOString() },
    };
    const state = new AgentState(join(dir, 'agent-state'));
    await state.init();
    await state.writeIdentity(files);
    nbd = await serveNbd(point, dir, 'point');
    const d = new QemuDriver({ stateDir: join(dir, 'host'), accel: 'tcg' });
    driver = d;
    await d.prepare({
      failoverId: 'fo-1', workDir, name: 'lifeboat-rv-test', hardware: { firmware: 'bios', secureBoot: false, cpus: 1, memoryMiB: 64, guestOs: 'other' },
      disks: [{ id: 'disk0', bus: 'ide', virtualSize: size, nbd: { socket: nbd.socket, exportName: nbd.exportName } }],
      nics: [], seeds: [], vmGenerationId: '8f2a1c3e-1b2d-4c5e-9f00-112233445566',
    });
    await d.start(workDir);
    const failover = { id: 'fo-1', tenant: 'acme', vm, fork: [{ disk: 'disk0', replicaDir: '', layer: '', virtualSize: size, bus: 'ide' }] };
    return {
      env, svc, dir, files, state, driver: d, workDir, point, onPrem, overlay, failover,
      hosterUncommitted: () => [`json:${JSON.stringify({ driver: 'qcow2', file: { driver: 'file', filename: overlay }, backing: { driver: 'raw', file: { driver: 'file', filename: point } } })}`],
      cycle: async (compression?: Compression) => reverseCycle({ db: svc.ctx.db, store: svc.ctx.store }, { failover, workDir, qmp: await d.qmp(workDir), compression }),
      apply: () => applyReverse({ state, files, client: new ReverseClient(files), vm, disks: [onPrem] }),
      hmp: async (cmd: string) => (await d.qmp(workDir)).hmp(`qemu-io -d disk0 "${cmd}"`),
      stop,
    };
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }
}
