/**
 * Home addresses: each NIC's normal configuration on the tenant's own site (`home` in its settings,
 * docs/failover-network.md), reinstated when a VM fails back. The disk that comes home carries what
 * cloud-init wrote at the hoster (the DR addresses of the failover); a NoCloud seed with a new
 * instance-id makes cloud-init apply the network again, this time the primary's.
 *
 * Input: the VM's NIC settings (validated: settings.ts), or the catalog's (homePlanFromCatalog).
 * Output: the plan (each NIC's configuration with every value's origin) and `cidata.iso` in a
 * directory the caller names: beside the disk, for the tenant's start hook to attach, or for the
 * live-VM source's hypervisor.
 * Failure: LifeboatError('invalid_argument') for settings that do not validate (stored settings were
 * validated when written, so this means a catalog edited by hand).
 *
 * A NIC without home settings asks DHCP at home, and the plan's note says so. Each NIC keeps the
 * name the failover gave it (dr0, dr1, … by NIC order: cloud-init's set-name wrote it into the guest
 * at the hoster), so the guest's own configuration naming that interface stays true.
 */
import type { Queryable } from '../catalog/db.js';
import { listVmNics } from '../catalog/failovers.js';
import { newInstanceId, renderNoCloudFiles } from '../failover/network/cloud-init.js';
import type { NicPlan, PlannedValue } from '../failover/network/mappings.js';
import { writeNoCloudSeed } from '../failover/network/seed.js';
import type { NicSettings } from '../failover/network/settings.js';
import { validateVmNics } from '../failover/network/settings.js';

/** The home plan of a VM's NICs, in their order. */
export function resolveHomePlan(nics: readonly NicSettings[]): NicPlan[] {
  return nics.map((n, i) => {
    const name = `dr${i}`;
    if (!n.home) return { mac: n.mac, name, config: { mode: 'dhcp' }, values: [{ field: 'mode', value: 'dhcp', from: 'dhcp' }], notes: ['no home settings recorded: the NIC asks DHCP at home'] };
    const c = n.home;
    const values: PlannedValue[] = [{ field: 'mode', value: c.mode, from: 'explicit' }];
    if (c.mode === 'static') {
      c.addresses.forEach((a, j) => values.push({ field: `addresses[${j}]`, value: a, from: 'explicit' }));
      for (const g of ['gateway4', 'gateway6'] as const) if (c[g] !== undefined) values.push({ field: g, value: c[g], from: 'explicit' });
      c.dns.forEach((d, j) => values.push({ field: `dns[${j}]`, value: d, from: 'explicit' }));
      c.search.forEach((d, j) => values.push({ field: `search[${j}]`, value: d, from: 'explicit' }));
    }
    if (c.mtu !== undefined) values.push({ field: 'mtu', value: String(c.mtu), from: 'explicit' });
    return { mac: n.mac, name, config: { ...c }, values, notes: [] };
  });
}

/** The home plan from the catalog's NIC rows of a VM. */
export async function homePlanFromCatalog(db: Queryable, tenant: string, vm: string): Promise<NicPlan[]> {
  const rows = await listVmNics(db, tenant, vm);
  return resolveHomePlan(validateVmNics(rows.map((n) => ({ ...(n.settings as object), mac: n.mac }))));
}

export interface HomeSeed {
  /** The `cidata.iso` written. */
  path: string;
  instanceId: string;
  plan: NicPlan[];
}

/**
 * Writes the home seed into dir: meta-data with a new instance-id (so cloud-init, which keeps the
 * hoster's instance in the guest, applies the network again), the home network-config, and the
 * user-data that prints the guest's network on its serial console (readback.ts reads it).
 */
export async function writeHomeSeed(dir: string, vm: string, plan: readonly NicPlan[], failbackId?: string): Promise<HomeSeed> {
  const instanceId = newInstanceId(failbackId ? `home-${failbackId}` : 'home');
  const hostname = vm.replace(/_/g, '-').slice(0, 63);
  const path = await writeNoCloudSeed(dir, renderNoCloudFiles(plan, { instanceId, hostname }, { consoleReport: true }));
  return { path, instanceId, plan: [...plan] };
}
