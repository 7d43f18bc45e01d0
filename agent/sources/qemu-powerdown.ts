/**
 * A clean shutdown of a qemu VM for a planned failover: `guest-shutdown` through qemu-guest-agent
 * when the VM has one that answers, else QMP `system_powerdown` (the ACPI power button); then wait until the
 * guest is off. Either needs the guest's cooperation: the test guest, a minimal Debian without D-Bus,
 * heeded neither in test runs (our reading: on systemd both go through systemd-logind, which needs
 * D-Bus). qemu must run with `-no-shutdown` (as libvirt runs it), so it stays up with the guest off and the final cycle can still
 * read the disks through their views; a qemu that exits at the guest's shutdown is reported, since the
 * final cycle then has nothing to read the disks through.
 *
 * Input: the VM's name and QMP socket, a timeout, its guest agent's socket. Output: how it was
 * asked, once the guest is off. Failure: one LifeboatError naming the VM: the socket missing or
 * refusing, the guest still running at the timeout (it ignored the request), qemu gone.
 */
import { LifeboatError } from '../../shared/errors.js';
import { GuestAgentClient, type QmpClient } from '../../shared/qmp/client.js';
import { connectVmQmp } from './qemu-view.js';

const PollMs = 1000;

/** qemu's run states in which the guest is off and qemu still answers (-no-shutdown). */
const OffStates = new Set(['shutdown', 'guest-panicked']);

async function runState(qmp: QmpClient): Promise<string> {
  return (await qmp.execute<{ status: string }>('query-status')).status;
}

/** How it was asked: 'guest-agent' (guest-shutdown) or 'acpi' (system_powerdown); 'off' when it already was. */
export type PowerdownWay = 'guest-agent' | 'acpi' | 'off';

export async function powerdownQemu(vm: string, socket: string, timeoutMs: number, guestAgentSocket?: string | null): Promise<PowerdownWay> {
  const qmp = await connectVmQmp(vm, socket);
  try {
    if (OffStates.has(await runState(qmp))) return 'off';
    const way = guestAgentSocket && await guestShutdown(guestAgentSocket) ? 'guest-agent' : 'acpi';
    if (way === 'acpi') await qmp.execute('system_powerdown');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let status: string;
      try {
        status = await runState(qmp);
      } catch (err) {
        if (!qmp.closed) throw err;
        throw new LifeboatError('unavailable', `VM ${vm}: qemu exited when the guest shut down: run it with -no-shutdown so the final cycle can read its disks`, { cause: err });
      }
      if (OffStates.has(status)) return way;
      if (Date.now() > deadline) {
        const asked = way === 'acpi' ? 'system_powerdown (does the guest act on the ACPI power button? give it a guest agent)' : 'guest-shutdown';
        throw new LifeboatError('unavailable', `VM ${vm}: still ${status} ${Math.round(timeoutMs / 1000)} s after ${asked}`);
      }
      await new Promise((r) => setTimeout(r, PollMs));
    }
  } finally {
    await qmp.close();
  }
}

/** Asks the guest agent to power the guest off; false when it does not answer (no reply is expected on success). */
async function guestShutdown(socket: string): Promise<boolean> {
  let ga: GuestAgentClient;
  try {
    ga = await GuestAgentClient.connect(socket, { timeoutMs: 3000 });
  } catch {
    return false;
  }
  try {
    // guest-shutdown sends no reply when it succeeds: the agent goes down with the guest.
    await ga.execute('guest-shutdown', { mode: 'powerdown' }, { timeoutMs: 2000 }).catch(() => undefined);
    return true;
  } finally {
    ga.close();
  }
}
