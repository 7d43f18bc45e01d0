/**
 * The VM configuration a failover uses, as two writers keep it: the VM's agent, which reports the
 * hardware and NICs `protect` was told with every registration, and an operator (API, CLI). Each
 * value records who set it. A report fills what no operator has set and never overwrites an
 * operator's value; an operator's write makes the values it changes the operator's (a value written
 * back unchanged keeps its source, so a read-modify-write of one field claims that field only; the
 * operator pins a value as it stands by naming it operator's in `sources`).
 *
 * Hardware is tracked per field (vm_hardware.sources), a NIC as a whole (vm_nics.source): a NIC the
 * agent reported follows later reports (model, position; dropped when no longer reported) until an
 * operator changes it. The agent's addresses of a NIC are kept in their own column whoever owns the
 * NIC; network mappings use the operator's recorded addresses and, when there are none, the agent's.
 */
import { ErrInvalidArgument } from '../../shared/errors.js';
import type { RegisterBody } from '../../shared/protocol/schemas.js';
import type { Queryable } from '../catalog/db.js';
import type { HardwareField, VmHardwareRow, VmNicRow } from '../catalog/failovers.js';
import { HardwareFields, getVmHardware, listVmNics, putVmHardware, reportVmNic } from '../catalog/failovers.js';
import { deleteVmNic } from '../catalog/networks.js';
import { parseIp } from './network/address.js';
import { MaxNicsPerVm, normaliseMac } from './network/settings.js';
import { defaultHardware } from './spec.js';

type HardwareValues = Omit<VmHardwareRow, 'source' | 'sources'>;

/** JSON with object keys sorted: equal values, equal text (jsonb reorders keys). */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    : v));
}

/**
 * The operator's whole record: the fields whose value changed become the operator's, and so do those
 * `claimed` as `operator` (a value pinned as it stands); the others keep their source.
 */
export function operatorHardware(current: VmHardwareRow, wanted: HardwareValues, claimed: Readonly<Record<string, string>> = {}): Omit<VmHardwareRow, 'source'> {
  const sources = { ...current.sources };
  for (const f of HardwareFields) if (claimed[f] === 'operator' || canonicalJson(wanted[f]) !== canonicalJson(current[f])) sources[f] = 'operator';
  return { ...pick(wanted), sources };
}

/**
 * The record after an agent's report: each reported field the operator has not set takes the
 * reported value. Undefined when the report carries no hardware. A reported Secure Boot or firmware
 * that would pair Secure Boot with BIOS (the other half being the operator's) is left out.
 */
export function reportedHardware(current: VmHardwareRow, body: Pick<RegisterBody, 'hardware' | 'disks'>): Omit<VmHardwareRow, 'source'> | undefined {
  const report: Partial<HardwareValues> = { ...body.hardware };
  const buses = body.disks.filter((d) => d.bus !== undefined);
  if (buses.length > 0) report.disks = Object.fromEntries(body.disks.flatMap((d, order) => (d.bus === undefined ? [] : [[d.id, { bus: d.bus, order }]])));
  const fields = HardwareFields.filter((f) => report[f] !== undefined);
  if (fields.length === 0) return undefined;
  const next: HardwareValues = pick(current);
  const sources = { ...current.sources };
  const take = (f: HardwareField) => {
    if (sources[f] === 'operator') return;
    (next as Record<HardwareField, unknown>)[f] = report[f];
    sources[f] = 'reported';
  };
  for (const f of fields) take(f);
  if (next.secureBoot && next.firmware !== 'uefi') {
    next.firmware = current.firmware;
    next.secureBoot = current.secureBoot;
    for (const f of ['firmware', 'secureBoot'] as const) if (current.sources[f] === undefined) delete sources[f]; else sources[f] = current.sources[f];
  }
  return { ...next, sources };
}

function pick(h: HardwareValues): HardwareValues {
  return { firmware: h.firmware, secureBoot: h.secureBoot, cpus: h.cpus, memoryMiB: h.memoryMiB, guestOs: h.guestOs, disks: h.disks, readyProbes: h.readyProbes };
}

/** An address a NIC has at the source: an IP, with or without a prefix, in canonical text. */
export function canonicalSourceAddress(text: string): string | { reason: string } {
  const slash = text.lastIndexOf('/');
  const ip = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (!ip.ok) return { reason: ip.reason };
  if (slash < 0) return ip.value.toString();
  const prefix = text.slice(slash + 1);
  const max = ip.value.kind() === 'ipv4' ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) < 1 || Number(prefix) > max) return { reason: `${text.slice(0, 60)}: prefix is out of range 1..${max}` };
  return `${ip.value.toString()}/${Number(prefix)}`;
}

/** Whether an operator's NIC write changes the stored NIC (a new NIC does). */
export function nicChanged(old: Pick<VmNicRow, 'position' | 'model' | 'settings' | 'reportedAddresses'> | undefined,
  next: Pick<VmNicRow, 'position' | 'model' | 'settings' | 'reportedAddresses'>): boolean {
  return old === undefined || old.position !== next.position || old.model !== next.model
    || canonicalJson(old.settings) !== canonicalJson(next.settings) || canonicalJson(old.reportedAddresses) !== canonicalJson(next.reportedAddresses);
}

/**
 * Records what a registration reports of the VM (`hardware`, disk buses, `nics`), in the caller's
 * transaction after the VM's row exists; the caller holds the tenant's networking lock
 * (lockTenantNetworking), as the NIC routes do. Nothing reported, nothing changed. Invalid input is
 * ErrInvalidArgument before anything is written.
 */
export async function recordReportedConfig(tx: Queryable, tenant: string, vm: string, body: Pick<RegisterBody, 'hardware' | 'disks' | 'nics'>): Promise<void> {
  const nics = body.nics?.map((n, i) => {
    const mac = normaliseMac(n.mac);
    if (!mac.ok) throw ErrInvalidArgument(`nics[${i}].mac: ${mac.reason}`);
    const addresses = n.addresses.map((a, j) => {
      const c = canonicalSourceAddress(a);
      if (typeof c !== 'string') throw ErrInvalidArgument(`nics[${i}].addresses[${j}]: ${c.reason}`);
      return c;
    });
    return { mac: mac.mac, model: n.model, addresses: [...new Set(addresses)] };
  });
  const hardware = reportedHardware((await getVmHardware(tx, tenant, vm, true)) ?? defaultHardware(), body);
  if (nics) {
    const stored = await listVmNics(tx, tenant, vm);
    const reported = new Set(nics.map((n) => n.mac));
    const kept = stored.filter((n) => n.source === 'operator' || reported.has(n.mac));
    const total = new Set([...kept.map((n) => n.mac), ...reported]).size;
    if (total > MaxNicsPerVm) throw ErrInvalidArgument(`nics: VM ${vm} would have ${total} NICs with those an operator added (at most ${MaxNicsPerVm})`);
    for (const n of stored) if (n.source === 'reported' && !reported.has(n.mac)) await deleteVmNic(tx, tenant, vm, n.mac);
    for (const [position, n] of nics.entries()) await reportVmNic(tx, tenant, vm, { ...n, position });
  }
  if (hardware) await putVmHardware(tx, tenant, vm, hardware);
}
