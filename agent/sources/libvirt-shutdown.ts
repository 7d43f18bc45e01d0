/**
 * A clean shutdown of a libvirt domain for a planned failover: `virsh shutdown` (libvirt asks the
 * guest through its guest agent or the ACPI power button, whichever the domain has), then wait until
 * domstate says `shut off`. The final cycle then starts the domain paused to read its disks through a
 * backup job (libvirt-view.ts `startIfOff`), so the domain must be defined (persistent): a transient
 * domain is gone once it is off, and with it the only way to its disks this source has.
 *
 * Input: the VM's name, its libvirt source, a timeout. Output: 'libvirt', or 'off' when it already was.
 * Failure: one LifeboatError naming the VM: libvirt unreachable, the guest still running at the
 * timeout (it ignored the request), a transient domain gone.
 */
import { LifeboatError } from '../../shared/errors.js';
import type { SourceConfig } from '../state/schema.js';
import { LibvirtDomain } from './libvirt-domain.js';
import { Virsh } from './virsh.js';

const PollMs = 1000;

export async function shutdownLibvirt(vm: string, source: SourceConfig & { kind: 'libvirt' }, timeoutMs: number): Promise<'libvirt' | 'off'> {
  const dom = new LibvirtDomain(new Virsh(vm, source.connect), source.domain);
  if ((await dom.state()) === 'shut off') return 'off';
  const persistent = /^Persistent:\s+yes/m.test(await dom.virsh.run(['dominfo', '--domain', source.domain]));
  if (!persistent) throw new LifeboatError('conflict', `VM ${vm}: domain ${source.domain} is transient: once off it is gone and the final cycle cannot read its disks; define it (virsh define) or give --shutdown-hook`);
  await dom.virsh.run(['shutdown', '--domain', source.domain]);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = await dom.state();
    if (state === 'shut off') return 'libvirt';
    if (Date.now() > deadline) throw new LifeboatError('unavailable', `VM ${vm}: domain ${source.domain} still ${state} ${Math.round(timeoutMs / 1000)} s after virsh shutdown (does the guest act on the power button or have a guest agent?)`);
    await new Promise((r) => setTimeout(r, PollMs));
  }
}
