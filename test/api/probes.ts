/** Concrete paths for the API's route templates, shared by the route walks (roles.test.ts, openapi.test.ts). */

/** Values for path parameters: ids of objects that do not exist, in each parameter's valid form. */
export const ProbeValues: Record<string, string> = {
  tenant: 'acme', vm: 'web01', id: 'fo-probe', action: 'stop', mac: '52:54:00:00:00:01', name: 'probe-net',
  address: '192.0.2.1', delivery: 'msg_probe', plan: 'probe-plan', run: 'run-probe', username: 'probe-user', host: 'probe-host',
  // A kind whose rotation needs a tenant the walks do not give: a probe never rotates a real key.
  kind: 'tenant',
};
/** Ids whose form differs by resource. */
const IdByPrefix: [RegExp, string][] = [[/^\/v1\/api-keys\//, '0000000000000000'], [/webhooks\/\{id\}/, 'whs_probe']];

/** The path with every {param} replaced by its probe value (percent-encoded). */
export function concrete(path: string): string {
  let p = path;
  for (const [re, id] of IdByPrefix) if (re.test(p)) p = p.replace('{id}', id);
  return p.replace(/\{(\w+)\}/g, (_, name: string) => {
    const v = ProbeValues[name];
    if (v === undefined) throw new Error(`no probe value for path parameter {${name}}: add it to ProbeValues in test/api/probes.ts`);
    return encodeURIComponent(v);
  });
}
