/**
 * Failover routes of the API (one file per resource). Access (service/trust/roles.ts): operate to
 * request, stop, commit, revert; administer to edit the VM's hardware; read for the rest. A VM or
 * failover of another tenant is answered 404, exactly as one that does not exist.
 *
 *   POST /v1/tenants/{t}/vms/{vm}/failovers            {kind, point} (Idempotency-Key honoured)
 *   GET  /v1/tenants/{t}/vms/{vm}/failovers            the VM's failovers
 *   GET  /v1/tenants/{t}/failovers                     the tenant's failovers (?active=true)
 *   GET  /v1/tenants/{t}/failovers/{id}                the drill report
 *   GET  /v1/tenants/{t}/failovers/{id}/screenshot.png
 *   POST /v1/tenants/{t}/failovers/{id}/{stop|commit|revert}
 *   GET  /v1/tenants/{t}/vms/{vm}/hardware, PUT …      the VM's recorded configuration (who set each value: sources)
 *   POST /v1/tenants/{t}/vms/{vm}/nvram {path}          the VM's UEFI NVRAM, from a file on the service host (hoster)
 *   GET  /v1/failovers (?tenant=&active=), GET /v1/failovers/{id}, POST /v1/failovers/{id}/{action}
 *                                                      the same for hoster roles, by id alone
 */
import { chmod, copyFile, mkdir, rename, stat } from 'node:fs/promises';
import { dirname, isAbsolute } from 'node:path';
import type { Context } from 'hono';
import { Hono } from 'hono';
import { z } from 'zod';
import { LifeboatError, userMessage } from '../../shared/errors.js';
import { DiskBuses, Firmwares, GuestOses, MaxCpus, MaxMemoryMiB, MinCpus, MinMemoryMiB } from '../../shared/protocol/vm-config.js';
import type { FailoverRow } from '../catalog/failovers.js';
import { getFailover, getVmHardware, latestScreenshot, listFailovers, putVmHardware } from '../catalog/failovers.js';
import type { VmRow } from '../catalog/vms.js';
import { getVm, listDisks } from '../catalog/vms.js';
import type { ServiceContext } from '../context.js';
import { ErrNotFoundHere } from '../errors.js';
import { changeGoal, requestFailover } from '../failover/engine.js';
import type { FailoverQueues } from '../failover/queue.js';
import { failoverReport } from '../failover/report.js';
import { operatorHardware } from '../failover/recorded-config.js';
import { defaultHardware, vmNvramPath } from '../failover/spec.js';
import { check, pathId, readJson } from '../http/json.js';
import { ifMatch, single } from './etag.js';
import { listQuery, msOf, pageOf, timeRange } from './lists.js';
import { mayAdminister, mayOperate, mayRead } from '../trust/roles.js';
import type { ApiClaims } from '../trust/tokens.js';

export const failoverRequestSchema = z.strictObject({
  kind: z.enum(['test', 'planned', 'unplanned']),
  point: z.string().regex(/^(latest|latest-consistent|\d{1,18})$/, 'must be latest, latest-consistent or a point id').default('latest'),
});

const probeSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('guest-agent') }),
  z.strictObject({ kind: z.literal('console'), pattern: z.string().min(1).max(200).refine((p) => { try { new RegExp(p); return true; } catch { return false; } }, 'must be a regular expression') }),
  z.strictObject({ kind: z.literal('tcp'), host: z.string().min(1).max(253), port: z.number().int().min(1).max(65535) }),
]);

export const hardwareSchema = z.strictObject({
  firmware: z.enum(Firmwares),
  secureBoot: z.boolean().default(false),
  cpus: z.number().int().min(MinCpus).max(MaxCpus),
  memoryMiB: z.number().int().min(MinMemoryMiB).max(MaxMemoryMiB),
  guestOs: z.enum(GuestOses),
  disks: z.record(z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/), z.strictObject({ bus: z.enum(DiskBuses), order: z.number().int().min(0).max(63) })).default({}),
  readyProbes: z.array(probeSchema).min(1).max(8).default([{ kind: 'guest-agent' }]),
  // Who set each value, as GET shows it: taken back, so a GET's body can be PUT again. `source` is
  // ignored; a field named "operator" in `sources` becomes the operator's even when its value is unchanged.
  source: z.string().max(16).optional(),
  sources: z.record(z.string().max(16), z.string().max(16)).optional(),
  // The GET's etag, taken back and ignored (If-Match is the precondition).
  etag: z.string().max(100).optional(),
}).refine((h) => h.firmware === 'uefi' || !h.secureBoot, { message: 'secureBoot needs firmware uefi', path: ['secureBoot'] });

export const nvramSchema = z.strictObject({
  path: z.string().min(1).max(4096).refine(isAbsolute, 'must be an absolute path on the service host'),
});

/** Largest NVRAM file taken (OVMF's VARS are 128 KiB to 4 MiB). */
const MaxNvramBytes = 64 << 20;

/** Copies a UEFI VARS file from the service host into the VM's directory on its replica storage. */
async function importNvram(vm: VmRow, path: string) {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    throw new LifeboatError('invalid_argument', userMessage(err) ?? `${path}: cannot be read`);
  }
  if (!info.isFile()) throw new LifeboatError('invalid_argument', `${path}: not a regular file`);
  if (info.size === 0 || info.size > MaxNvramBytes) throw new LifeboatError('invalid_argument', `${path}: ${info.size} bytes is not an OVMF VARS file (1 byte to 64 MiB)`);
  const dest = vmNvramPath(vm);
  await mkdir(dirname(dest), { recursive: true });
  const tmp = `${dest}.tmp-${process.pid}`;
  await copyFile(path, tmp);
  await chmod(tmp, 0o600);
  await rename(tmp, dest);
  return { tenant: vm.tenant, vm: vm.name, path: dest, bytes: info.size };
}

/** The filters of the failover lists (the tenant's drop `tenant`, the VM's `tenant` and `vm`). */
export const failoverListQuery = listQuery({
  tenant: z.string().max(64).optional(), vm: z.string().max(64).optional(), state: z.string().max(32).optional(), kind: z.enum(['test', 'planned', 'unplanned']).optional(),
  active: z.enum(['true', 'false']).optional().describe('true: only failovers not ended'), ...timeRange,
});
export const vmFailoverListQuery = failoverListQuery.omit({ tenant: true, vm: true });
export const tenantFailoverListQuery = failoverListQuery.omit({ tenant: true });

type Env = { Variables: { operator: ApiClaims } };
const screenshotPath = (f: FailoverRow) => `/v1/tenants/${f.tenant}/failovers/${f.id}/screenshot.png`;

export function failoverRoutes(ctx: ServiceContext, queues: () => FailoverQueues): Hono<Env> {
  const r = new Hono<Env>();
  const who = (c: Context<Env>) => `${c.get('operator').role}:${c.get('operator').sub}`;
  const failoverOf = async (c: Context<Env>, tenant: string | undefined): Promise<FailoverRow> => {
    const id = c.req.param('id') ?? '';
    const f = /^fo-[a-z0-9-]{1,40}$/.test(id) ? await getFailover(ctx.db, id) : undefined;
    if (!f || (tenant !== undefined && f.tenant !== tenant)) throw ErrNotFoundHere(`no failover ${id.slice(0, 60)}`);
    return f;
  };
  const vmOf = async (tenant: string, vm: string) => {
    if (!(await getVm(ctx.db, tenant, vm))) throw ErrNotFoundHere(`tenant ${tenant} has no VM ${vm}`);
  };
  const action = (a: string) => {
    if (a === 'stop') return 'stopped' as const;
    if (a === 'commit') return 'committed' as const;
    if (a === 'revert') return 'reverted' as const;
    throw ErrNotFoundHere(`no failover action ${a.slice(0, 20)} (stop, commit, revert)`);
  };

  r.post('/tenants/:tenant/vms/:vm/failovers', async (c) => {
    const tenant = mayOperate(c.get('operator'), pathId(c, 'tenant'));
    const body = await readJson(c, failoverRequestSchema);
    const key = c.req.header('idempotency-key');
    if (key !== undefined && !/^[\x21-\x7e]{1,200}$/.test(key)) throw new LifeboatError('invalid_argument', 'Idempotency-Key must be 1 to 200 visible ASCII characters');
    const { failover, repeated } = await requestFailover(ctx, queues(), { tenant, vm: pathId(c, 'vm'), kind: body.kind, point: body.point, idempotencyKey: key, requestedBy: who(c) });
    return single(c, await failoverReport(ctx.db, failover, screenshotPath(failover)), repeated ? 200 : 202);
  });
  r.get('/tenants/:tenant/vms/:vm/failovers', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    const vm = pathId(c, 'vm');
    await vmOf(tenant, vm);
    const q = check(vmFailoverListQuery, c.req.query(), 'query');
    return c.json(failoverPage(c, q, await listFailovers(ctx.db, { tenant, vm, active: q.active === 'true' })));
  });
  r.get('/tenants/:tenant/failovers', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    const q = check(tenantFailoverListQuery, c.req.query(), 'query');
    return c.json(failoverPage(c, q, await listFailovers(ctx.db, { tenant, vm: q.vm, active: q.active === 'true' })));
  });
  r.get('/tenants/:tenant/failovers/:id', async (c) => {
    const f = await failoverOf(c, mayRead(c.get('operator'), pathId(c, 'tenant')));
    return single(c, await failoverReport(ctx.db, f, screenshotPath(f)));
  });
  r.get('/tenants/:tenant/failovers/:id/screenshot.png', async (c) => {
    const f = await failoverOf(c, mayRead(c.get('operator'), pathId(c, 'tenant')));
    const shot = await latestScreenshot(ctx.db, f.id);
    if (!shot) throw ErrNotFoundHere(`failover ${f.id} has no screenshot yet`);
    return c.body(new Uint8Array(shot.png), 200, { 'content-type': 'image/png', 'cache-control': 'private, no-store' });
  });
  r.post('/tenants/:tenant/failovers/:id/:action', async (c) => {
    const tenant = mayOperate(c.get('operator'), pathId(c, 'tenant'));
    const goal = action(c.req.param('action'));
    const f = await changeGoal(ctx, queues(), tenant, (await failoverOf(c, tenant)).id, goal, who(c));
    return single(c, await failoverReport(ctx.db, f, screenshotPath(f)), 202);
  });
  r.get('/tenants/:tenant/vms/:vm/hardware', async (c) => {
    const tenant = mayRead(c.get('operator'), pathId(c, 'tenant'));
    const vm = pathId(c, 'vm');
    await vmOf(tenant, vm);
    return single(c, (await getVmHardware(ctx.db, tenant, vm)) ?? defaultHardware());
  });
  r.put('/tenants/:tenant/vms/:vm/hardware', async (c) => {
    const tenant = mayAdminister(c.get('operator'), pathId(c, 'tenant'));
    const vm = pathId(c, 'vm');
    await vmOf(tenant, vm);
    const body = await readJson(c, hardwareSchema);
    await ifMatch(c, ctx.db, `hardware:${tenant}/${vm}`, async () => (await getVmHardware(ctx.db, tenant, vm)) ?? defaultHardware());
    const disks = new Set((await listDisks(ctx.db, tenant, vm)).map((d) => d.id));
    for (const id of Object.keys(body.disks)) if (!disks.has(id)) throw new LifeboatError('invalid_argument', `body.disks.${id}: VM ${vm} has no disk ${id}`);
    const { source: _source, sources, etag: _etag, ...wanted } = body;
    // The values this write changes (or names operator's in sources) become the operator's; a later report from the agent leaves them.
    await ctx.db.transaction(async (tx) => {
      await putVmHardware(tx, tenant, vm, operatorHardware((await getVmHardware(tx, tenant, vm, true)) ?? defaultHardware(), wanted, sources));
    });
    return single(c, (await getVmHardware(ctx.db, tenant, vm))!);
  });

  r.post('/tenants/:tenant/vms/:vm/nvram', async (c) => {
    // A file on the service host: hoster roles only.
    mayAdminister(c.get('operator'), undefined);
    const tenant = pathId(c, 'tenant');
    const vmName = pathId(c, 'vm');
    const vm = await getVm(ctx.db, tenant, vmName);
    if (!vm) throw ErrNotFoundHere(`tenant ${tenant} has no VM ${vmName}`);
    const { path } = await readJson(c, nvramSchema);
    return c.json(await importNvram(vm, path), 201);
  });

  r.get('/failovers', async (c) => {
    mayRead(c.get('operator'), undefined);
    const q = check(failoverListQuery, c.req.query(), 'query');
    return c.json(failoverPage(c, q, await listFailovers(ctx.db, { tenant: q.tenant, vm: q.vm, active: q.active === 'true' })));
  });
  r.get('/failovers/:id', async (c) => {
    mayRead(c.get('operator'), undefined);
    const f = await failoverOf(c, undefined);
    return single(c, await failoverReport(ctx.db, f, screenshotPath(f)));
  });
  r.post('/failovers/:id/:action', async (c) => {
    mayOperate(c.get('operator'), undefined);
    const goal = action(c.req.param('action'));
    const f = await changeGoal(ctx, queues(), undefined, (await failoverOf(c, undefined)).id, goal, who(c));
    return single(c, await failoverReport(ctx.db, f, screenshotPath(f)), 202);
  });
  return r;
}

/** A page of failovers, oldest request first, filtered by state, kind and the time requested. */
function failoverPage(c: Context, q: z.infer<typeof failoverListQuery> | z.infer<typeof vmFailoverListQuery>, rows: FailoverRow[]) {
  const page = pageOf(c, q, rows.map(summary), {
    key: (f) => [msOf(f.requestedAt), f.id], at: (f) => f.requestedAt, match: { state: (f) => f.state, kind: (f) => f.kind },
  });
  return { failovers: page.items, nextCursor: page.nextCursor };
}

/** One line of a list. */
function summary(f: FailoverRow) {
  return {
    id: f.id, tenant: f.tenant, vm: f.vm, kind: f.kind, state: f.state, goal: f.goal, host: f.host, pointId: f.pointId,
    requestedAt: new Date(f.requestedAt).toISOString(), readyAt: f.readyAt ? new Date(f.readyAt).toISOString() : null,
    endedAt: f.endedAt ? new Date(f.endedAt).toISOString() : null, error: f.error,
  };
}
