/**
 * Pins on recovery points (table point_pins): a point used by a failover is pinned by it (holder: the
 * failover's id, or any name its user chooses) and released when that user ends. While a VM has a
 * pinned point, pruning stops at the oldest point (points-job.ts): it never merges away a pinned point
 * nor anything older, since pruning an older point merges into the layers a pinned point reads.
 *
 * Pinning and pruning exclude each other through the point's row: pinPoint locks it (FOR UPDATE)
 * before it inserts, and a prune claims a point by deleting its row in a transaction that locks it
 * first and finds no pin; whichever comes second sees the first's outcome.
 */
import { ErrNotFound } from '../../shared/errors.js';
import type { Db, Queryable } from './db.js';

export interface PinRow {
  pointId: number;
  holder: string;
  createdAt: Date;
  /** The pinned point's time (its created_at) and cycle. */
  pointCreatedAt: Date;
  cycle: number | null;
}

/**
 * Pins a point for holder; pinning twice by one holder is one pin. Throws `not_found` when the point
 * does not exist (never made, or already pruned).
 */
export async function pinPoint(db: Db, pointId: number, holder: string): Promise<void> {
  await db.transaction(async (tx) => {
    const point = await tx.query('SELECT id FROM recovery_points WHERE id = $1 FOR UPDATE', [pointId]);
    if (point.length === 0) throw ErrNotFound(`recovery point ${pointId} does not exist (it may have been pruned)`);
    await tx.query('INSERT INTO point_pins (point_id, holder) VALUES ($1, $2) ON CONFLICT DO NOTHING', [pointId, holder]);
  });
}

/** Releases holder's pin on the point; releasing a pin that is not there is not an error. */
export async function unpinPoint(db: Queryable, pointId: number, holder: string): Promise<void> {
  await db.query('DELETE FROM point_pins WHERE point_id = $1 AND holder = $2', [pointId, holder]);
}

/** The pins on the VM's points, oldest point first. */
export async function pinnedPoints(db: Queryable, tenant: string, vm: string): Promise<PinRow[]> {
  return db.query<PinRow>(`SELECT p.point_id AS "pointId", p.holder, p.created_at AS "createdAt", r.created_at AS "pointCreatedAt", r.cycle
    FROM point_pins p JOIN recovery_points r ON r.id = p.point_id WHERE r.tenant = $1 AND r.vm = $2 ORDER BY r.created_at, r.id, p.holder`, [tenant, vm]);
}

/** True when any point of the VM is pinned. */
export async function vmHasPins(db: Queryable, tenant: string, vm: string): Promise<boolean> {
  const rows = await db.query(`SELECT 1 FROM point_pins p JOIN recovery_points r ON r.id = p.point_id WHERE r.tenant = $1 AND r.vm = $2 LIMIT 1`, [tenant, vm]);
  return rows.length > 0;
}

/**
 * Claims an unpinned point for pruning by deleting its row, in one transaction that locks the row
 * first; false (nothing done) when it is pinned or already gone.
 */
export async function claimForPrune(db: Db, pointId: number): Promise<boolean> {
  return db.transaction(async (tx) => {
    const point = await tx.query('SELECT id FROM recovery_points WHERE id = $1 FOR UPDATE', [pointId]);
    if (point.length === 0) return false;
    const pins = await tx.query('SELECT 1 FROM point_pins WHERE point_id = $1 LIMIT 1', [pointId]);
    if (pins.length > 0) return false;
    await tx.query('DELETE FROM recovery_points WHERE id = $1', [pointId]);
    return true;
  });
}
