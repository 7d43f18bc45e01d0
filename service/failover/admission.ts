/**
 * The admission check (docs/usage.md, hardware plans): before a failover, or in a recovery plan's dry
 * run, whether a tenant's VMs fit: each VM's recorded hardware and disks placed in turn as placement
 * would place it (the live host with the most free memory that has room; DR network reach is left to
 * placement itself), counted against the tenant's hardware plan and the capacity other tenants have
 * reserved. Nothing is changed. For a test failover a VM breaking a plan rule does not fit; for a real
 * one it fits where a host has room, and the rule it breaks is a warning.
 */
import type { FailoverKind } from '../catalog/failovers.js';
import { listDisks, listVms } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { ErrNotFoundHere } from '../errors.js';
import type { Resources } from '../usage/reservations.js';
import { Dimensions, reservationPicture, reservationProblems } from '../usage/reservations.js';
import { hostRoom, liveHosts, specOf } from './engine.js';

export interface AdmissionVm extends Resources {
  vm: string;
  /** The host it would go to; null: it does not fit. */
  host: string | null;
  problems: string[];
  warnings: string[];
}

export interface Admission {
  tenant: string;
  kind: FailoverKind;
  fits: boolean;
  reservation: { cpus: number | null; memoryMiB: number | null; storageBytes: number | null } | null;
  inUse: Resources;
  needed: Resources;
  vms: AdmissionVm[];
}

/** Checks the VMs named (default: every protected VM of the tenant). */
export async function admissionCheck(ctx: ServiceContext, tenant: string, kind: FailoverKind, names?: readonly string[]): Promise<Admission> {
  const all = await listVms(ctx.db, tenant);
  const chosen = names === undefined ? all.filter((v) => v.protected) : names.map((n) => {
    const v = all.find((x) => x.name === n);
    if (!v) throw ErrNotFoundHere(`tenant ${tenant} has no VM ${n}`);
    return v;
  });
  const picture = await reservationPicture(ctx.db, tenant);
  const room = (await hostRoom(ctx.db, await liveHosts(ctx.db))).map((x) => ({ ...x }));
  const needed: Resources = { cpus: 0, memoryMiB: 0, storageBytes: 0 };
  const inUse = { ...picture.inUse };
  const vms: AdmissionVm[] = [];
  for (const v of chosen) {
    const disks = await listDisks(ctx.db, tenant, v.name);
    const spec = await specOf(ctx, tenant, v.name, disks.map((d) => d.id));
    const need: Resources = { cpus: spec.hardware.cpus, memoryMiB: spec.hardware.memoryMiB, storageBytes: disks.reduce((s, d) => s + Number(d.virtualSize), 0) };
    const poolFree = room.reduce((s, x) => ({ cpus: s.cpus + Math.max(0, x.cpus), memoryMiB: s.memoryMiB + Math.max(0, x.memoryMiB), storageBytes: s.storageBytes + Math.max(0, x.storage) }),
      { cpus: 0, memoryMiB: 0, storageBytes: 0 });
    const broken = reservationProblems(tenant, need, { ...picture, inUse }, poolFree);
    const fit = room.filter((x) => x.cpus >= need.cpus && x.memoryMiB >= need.memoryMiB && x.storage >= need.storageBytes)
      .sort((a, b) => b.memoryMiB - a.memoryMiB || a.h.name.localeCompare(b.h.name))[0];
    const problems = kind === 'test' ? [...broken] : [];
    if (!fit) problems.push(`no live failover host has room for ${need.cpus} vCPUs, ${need.memoryMiB} MiB and ${need.storageBytes} bytes of overlay storage beside what runs and the VMs before it`);
    const host = problems.length === 0 && fit ? fit.h.name : null;
    if (host !== null && fit) {
      fit.cpus -= need.cpus;
      fit.memoryMiB -= need.memoryMiB;
      fit.storage -= need.storageBytes;
      for (const d of Dimensions) inUse[d] += need[d];
    }
    for (const d of Dimensions) needed[d] += need[d];
    vms.push({ vm: v.name, ...need, host, problems, warnings: kind === 'test' ? [] : broken });
  }
  return { tenant, kind, fits: vms.every((v) => v.host !== null), reservation: picture.reserved, inUse: picture.inUse, needed, vms };
}
