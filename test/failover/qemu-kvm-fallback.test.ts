/**
 * A guest that KVM fails after it started (the probe guest ran, the real one dies with "KVM internal
 * error"): the qemu driver's start returns once the guest runs, without a pause to watch it, and
 * waiting for readiness finds qemu dead with KVM's words in its log, records TCG for the host and
 * starts the VM again under TCG, which then boots. With accel kvm configured there is no fallback.
 * KVM's failure is played by a stand-in for qemu-system-x86_64: under `-accel kvm` it runs the real
 * qemu under TCG with its console sent nowhere, and kills it four seconds after its monitor socket
 * appears, printing what KVM prints; under TCG it is the real qemu.
 */
import { execFileSync } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuDriver } from '../../service/failover/drivers/qemu.js';
import type { PrepareInput } from '../../service/failover/drivers/types.js';
import { scratchDir } from '../helpers.js';
import { BootDiskSize, BootMarker, killLeftQemus, serveNbd, writeBootDisk, type NbdServer } from './qemu-helpers.js';

const hasQemu = (() => { try { execFileSync('qemu-system-x86_64', ['--version']); return true; } catch { return false; } })();

const StandIn = `#!/bin/bash
args=("$@")
kvm=0
qmp=
for i in "\${!args[@]}"; do
  a=\${args[$i]}
  if [ "$a" = kvm ] && [ "\${args[$((i-1))]}" = -accel ]; then args[$i]=tcg; kvm=1; fi
  if [ "$a" = host ] && [ "\${args[$((i-1))]}" = -cpu ]; then args[$i]=max; fi
  case "$a" in socket,id=qmp0,path=*) qmp=\${a#socket,id=qmp0,path=}; qmp=\${qmp%%,server=*};; esac
done
[ $kvm = 1 ] || exec qemu-system-x86_64 "\${args[@]}"
for i in "\${!args[@]}"; do
  case "\${args[$i]}" in file,id=console0,*) args[$i]=file,id=console0,path=/dev/null;; esac
done
qemu-system-x86_64 "\${args[@]}" &
q=$!
until [ -S "$qmp" ] || ! kill -0 $q 2>/dev/null; do sleep 0.05; done
sleep 4
echo "KVM internal error. Suberror: 1" >&2
kill -9 $q
wait $q
exit 1
`;

describe.skipIf(!hasQemu)('qemu driver: KVM failing a started guest (skipped only when qemu-system-x86_64 is missing)', () => {
  let dir: Awaited<ReturnType<typeof scratchDir>>;
  let nbd: NbdServer;
  let standIn: string;

  beforeAll(async () => {
    dir = await scratchDir('lifeboat-kvmfb-');
    const boot = join(dir.path, 'boot.img');
    await writeBootDisk(boot);
    nbd = await serveNbd(boot, dir.path);
    standIn = join(dir.path, 'qemu-kvm-fails');
    await writeFile(standIn, StandIn);
    await chmod(standIn, 0o755);
  });
  afterAll(async () => {
    if (dir) await killLeftQemus(dir.path);
    await nbd?.stop();
    await dir?.remove();
  });

  function input(name: string): PrepareInput {
    return {
      failoverId: name, workDir: join(dir.path, name), name: `lifeboat-fo-${name}`,
      hardware: { firmware: 'bios', secureBoot: false, cpus: 1, memoryMiB: 64, guestOs: 'other' },
      disks: [{ id: 'd0', bus: 'ide', virtualSize: BootDiskSize, nbd: { socket: nbd.socket, exportName: nbd.exportName } }],
      nics: [], seeds: [], vmGenerationId: '8f2a1c3e-1b2d-4c5e-9f00-112233445566',
    };
  }

  /** A host whose probe chose KVM. */
  async function kvmHost(name: string): Promise<string> {
    const stateDir = join(dir.path, `state-${name}`);
    execFileSync('mkdir', ['-p', stateDir]);
    await writeFile(join(stateDir, 'qemu-accel.json'), JSON.stringify({ accel: 'kvm', reason: 'probe guest ran under kvm', at: new Date().toISOString() }));
    return stateDir;
  }

  const runAccel = async (workDir: string) => (JSON.parse(await readFile(join(workDir, 'run.json'), 'utf8')) as { accel: string }).accel;

  it('start returns with the guest running under KVM; waiting for ready starts it again under TCG once KVM failed it, and it boots', async () => {
    const stateDir = await kvmHost('auto');
    const driver = new QemuDriver({ binary: standIn, stateDir, accel: 'auto' });
    const vm = input('auto');
    try {
      await driver.prepare(vm);
      const t0 = Date.now();
      await driver.start(vm.workDir);
      console.log(`start under (stand-in) KVM: ${Date.now() - t0} ms`);
      expect(await runAccel(vm.workDir)).toBe('kvm');
      expect((await driver.status(vm.workDir)).state).toBe('running');

      const details: string[] = [];
      let ready = false;
      for (let i = 0; i < 5 && !ready; i++) {
        const r = await driver.waitReady(vm.workDir, [{ kind: 'console', pattern: BootMarker }], 60_000);
        ready = r.ready;
        details.push(r.detail);
      }
      expect(ready, details.join(' | ')).toBe(true);
      expect(details[0]).toBe('KVM failed the guest: qemu started again under TCG');
      expect(details.at(-1)).toMatch(/console matched/);
      expect(await runAccel(vm.workDir)).toBe('tcg');
      const choice = JSON.parse(await readFile(join(stateDir, 'qemu-accel.json'), 'utf8')) as { accel: string; reason: string };
      expect(choice).toMatchObject({ accel: 'tcg', reason: expect.stringMatching(/^a guest failed under kvm: .*KVM internal error/) });
    } finally {
      await driver.cleanup(vm.workDir);
      await driver.close();
    }
  });

  it('with accel kvm configured, a guest KVM failed is reported dead, not started again', async () => {
    const stateDir = await kvmHost('forced');
    const driver = new QemuDriver({ binary: standIn, stateDir, accel: 'kvm' });
    const vm = input('forced');
    try {
      await driver.prepare(vm);
      await driver.start(vm.workDir);
      const r = await driver.waitReady(vm.workDir, [{ kind: 'console', pattern: BootMarker }], 60_000);
      expect(r.ready).toBe(false);
      expect(r.detail).toMatch(/exited: .*KVM internal error/);
      expect(await runAccel(vm.workDir)).toBe('kvm');
    } finally {
      await driver.cleanup(vm.workDir);
      await driver.close();
    }
  });
});
