/**
 * NBD export names of failovers and their resolution (the NBD server's resolver). One name per
 * (tenant, vm, disk, point, failover): `<tenant>/<vm>/<disk>/<point id>/<failover id>`. The resolver
 * serves a name only while that failover is live, belongs to that tenant and VM, uses that point and
 * has that disk in its fork; anything else is refused at the handshake, so a name of another failover
 * or tenant reads nothing. The export opens the point's frozen layer read-only with its chain below.
 */
import { join } from 'node:path';
import { openDisk } from '../../shared/disk/index.js';
import type { Queryable } from '../catalog/db.js';
import type { FailoverRow } from '../catalog/failovers.js';
import { getFailover } from '../catalog/failovers.js';
import type { NbdExport } from './nbd/server.js';

export function exportName(f: Pick<FailoverRow, 'tenant' | 'vm' | 'id'>, pointId: number, disk: string): string {
  return `${f.tenant}/${f.vm}/${disk}/${pointId}/${f.id}`;
}

/** States in which a failover reads its point through the export. */
const Reading = new Set(['preparing', 'booting', 'ready', 'running', 'committing']);

export async function resolveExport(db: Queryable, host: string, name: string): Promise<NbdExport | undefined> {
  const parts = name.split('/');
  if (parts.length !== 5 || name.length > 512) return undefined;
  const [tenant, vm, disk, point, id] = parts as [string, string, string, string, string];
  const f = await getFailover(db, id);
  if (!f || f.tenant !== tenant || f.vm !== vm || f.host !== host || f.endedAt || !Reading.has(f.state) || String(f.pointId) !== point) return undefined;
  const d = f.fork.find((x) => x.disk === disk);
  if (!d) return undefined;
  return { name, description: `${tenant}/${vm} disk ${disk} at point ${point} for failover ${id}`, size: d.virtualSize, open: () => openDisk(join(d.replicaDir, d.layer), { readOnly: true }) };
}
