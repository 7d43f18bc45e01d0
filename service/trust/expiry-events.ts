/**
 * certificate.expiring: an agent's client certificate that is neither revoked nor replaced by a
 * newer one for the same server, and ends within ExpiryWarningMs (or a quarter of its validity,
 * when that is shorter: agents renew after two thirds, so a working agent never triggers it). One
 * event per certificate (event_watches), from a timer in the worker process; tests pass the clock.
 */
import type { Db } from '../catalog/db.js';
import { setWatch } from '../catalog/webhooks.js';
import { emitEvent } from '../events/emit.js';

export const ExpiryWarningMs = 7 * 24 * 3_600_000;

export async function reportExpiringCertificates(db: Db, now = new Date()): Promise<number> {
  const rows = await db.query<{ serial: string; tenant: string; fqdn: string; notBefore: Date; notAfter: Date }>(
    `SELECT s.serial, s.tenant, s.fqdn, s.not_before AS "notBefore", s.not_after AS "notAfter" FROM servers s
     WHERE s.revoked_at IS NULL AND s.not_after > $1 AND s.not_after < $2
       AND NOT EXISTS (SELECT 1 FROM servers n WHERE n.tenant = s.tenant AND n.fqdn = s.fqdn AND n.revoked_at IS NULL AND n.not_after > s.not_after)`,
    [now, new Date(now.getTime() + ExpiryWarningMs)]);
  let emitted = 0;
  for (const c of rows) {
    const window = Math.min(ExpiryWarningMs, (c.notAfter.getTime() - c.notBefore.getTime()) / 4);
    if (c.notAfter.getTime() - now.getTime() > window) continue;
    emitted += await db.transaction(async (tx) => {
      if (!(await setWatch(tx, `cert:${c.serial}`, 'warned'))) return 0;
      await emitEvent(tx, { type: 'certificate.expiring', tenant: c.tenant, at: now, data: {
        server: c.fqdn, serial: c.serial, notAfter: c.notAfter.toISOString(), daysLeft: Math.floor((c.notAfter.getTime() - now.getTime()) / 86_400_000),
      } });
      return 1;
    });
  }
  return emitted;
}
