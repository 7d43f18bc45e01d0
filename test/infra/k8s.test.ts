/**
 * infra/k8s, validated without a cluster: every document against the schemas of k8s-schema.ts
 * (written from the Kubernetes API reference), then what a schema cannot see: selectors that match
 * their pod templates, every ConfigMap, Secret, PVC and volume a pod names defined, probes on ports
 * the container declares, Services targeting ports their pods have, requests within limits, commands
 * that are real subcommands, the ConfigMap's lifeboat.json a valid configuration whose key files are
 * the Secret's keys, and the failover host's init script run for real on it.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { parseConfig } from '../../service/config/config.js';
import { checkCommandLine } from './cli.js';
import type { K8sObject } from './k8s-schema.js';
import { parseQuantity, validateObject } from './k8s-schema.js';

const repo = resolve(import.meta.dirname, '..', '..');
const dir = resolve(repo, 'infra/k8s');

interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string }; configMapKeyRef?: { name: string } } }[];
  envFrom?: { secretRef?: { name: string }; configMapRef?: { name: string } }[];
  ports?: { name?: string; containerPort: number }[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  volumeMounts?: { name: string; mountPath: string }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
}
interface Probe { httpGet?: { path?: string; port: number | string }; exec?: { command: string[] } }
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; configMap?: { name: string }; secret?: { secretName: string }; persistentVolumeClaim?: { claimName: string } }[];
  serviceAccountName?: string;
}
interface Workload extends K8sObject {
  spec: { selector: { matchLabels?: Record<string, string> }; template: { metadata: { labels?: Record<string, string> }; spec: PodSpec } };
}

function loadDir(d: string): { file: string; doc: K8sObject }[] {
  const out: { file: string; doc: K8sObject }[] = [];
  for (const file of readdirSync(d).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(d, file), 'utf8'))) {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]!.message}`);
      const js = doc.toJS() as K8sObject | null;
      if (js !== null) out.push({ file, doc: js });
    }
  }
  return out;
}

const matches = (selector: Record<string, string> | undefined, podLabels: Record<string, string> | undefined) =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => podLabels?.[k] === v);

/** Cross-reference problems of a set of objects (what a schema cannot see). */
function crossProblems(objects: K8sObject[], kustomization: { namespace?: string; resources: string[] } | undefined, files: string[]): string[] {
  const problems: string[] = [];
  const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
  const names = (kind: string) => new Set(byKind(kind).map((o) => o.metadata.name));
  const workloads = [...byKind('Deployment'), ...byKind('DaemonSet')] as Workload[];
  const namespace = kustomization?.namespace;

  if (kustomization) {
    for (const r of kustomization.resources) if (!files.includes(r)) problems.push(`kustomization names ${r}, which does not exist`);
    for (const f of files) if (f !== 'kustomization.yaml' && !kustomization.resources.includes(f)) problems.push(`${f} is not in the kustomization's resources`);
  }
  for (const o of objects) {
    if (o.kind === 'Namespace' || o.kind === 'Kustomization') continue;
    if (namespace && o.metadata.namespace !== undefined && o.metadata.namespace !== namespace) problems.push(`${o.kind}/${o.metadata.name}: namespace ${o.metadata.namespace}, not ${namespace}`);
  }
  const seen = new Set<string>();
  for (const o of objects) {
    const id = `${o.kind}/${o.metadata?.name}`;
    if (seen.has(id)) problems.push(`${id} defined twice`);
    seen.add(id);
  }

  for (const w of workloads) {
    const id = `${w.kind}/${w.metadata.name}`;
    const podLabels = w.spec.template.metadata.labels;
    if (!matches(w.spec.selector.matchLabels, podLabels)) problems.push(`${id}: selector ${JSON.stringify(w.spec.selector.matchLabels)} does not match the pod template's labels`);
    const pod = w.spec.template.spec;
    if (pod.serviceAccountName && !names('ServiceAccount').has(pod.serviceAccountName)) problems.push(`${id}: service account ${pod.serviceAccountName} is not defined`);
    const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
    for (const v of pod.volumes ?? []) {
      if (v.configMap && !names('ConfigMap').has(v.configMap.name)) problems.push(`${id}: volume ${v.name}: ConfigMap ${v.configMap.name} is not defined`);
      if (v.secret && !names('Secret').has(v.secret.secretName)) problems.push(`${id}: volume ${v.name}: Secret ${v.secret.secretName} is not defined`);
      if (v.persistentVolumeClaim && !names('PersistentVolumeClaim').has(v.persistentVolumeClaim.claimName)) problems.push(`${id}: volume ${v.name}: PVC ${v.persistentVolumeClaim.claimName} is not defined`);
    }
    const mounted = new Set<string>();
    for (const c of [...pod.containers, ...(pod.initContainers ?? [])]) {
      const cid = `${id}: container ${c.name}`;
      for (const m of c.volumeMounts ?? []) {
        mounted.add(m.name);
        if (!volumes.has(m.name)) problems.push(`${cid}: mounts volume ${m.name}, which the pod does not have`);
      }
      for (const e of c.envFrom ?? []) {
        if (e.secretRef && !names('Secret').has(e.secretRef.name)) problems.push(`${cid}: envFrom Secret ${e.secretRef.name} is not defined`);
        if (e.configMapRef && !names('ConfigMap').has(e.configMapRef.name)) problems.push(`${cid}: envFrom ConfigMap ${e.configMapRef.name} is not defined`);
      }
      for (const e of c.env ?? []) {
        const s = e.valueFrom?.secretKeyRef?.name;
        if (s && !names('Secret').has(s)) problems.push(`${cid}: env ${e.name}: Secret ${s} is not defined`);
      }
      const ports = c.ports ?? [];
      for (const [kind, p] of [['liveness', c.livenessProbe], ['readiness', c.readinessProbe], ['startup', c.startupProbe]] as const) {
        const port = p?.httpGet?.port;
        if (port === undefined) continue;
        if (!ports.some((cp) => cp.name === port || cp.containerPort === port)) problems.push(`${cid}: ${kind} probe on port ${port}, which the container does not declare`);
      }
      const req = c.resources?.requests;
      const lim = c.resources?.limits;
      if (!req?.cpu || !req.memory || !lim?.cpu || !lim.memory) problems.push(`${cid}: needs cpu and memory requests and limits`);
      else for (const r of ['cpu', 'memory'] as const) if (parseQuantity(req[r]!) > parseQuantity(lim[r]!)) problems.push(`${cid}: ${r} request ${req[r]} above its limit ${lim[r]}`);
    }
    for (const v of volumes.keys()) if (!mounted.has(v)) problems.push(`${id}: volume ${v} is mounted by no container`);
  }

  for (const s of byKind('Service') as (K8sObject & { spec: { selector?: Record<string, string>; ports: { name?: string; port: number; targetPort?: number | string }[] } })[]) {
    const targets = workloads.filter((w) => matches(s.spec.selector, w.spec.template.metadata.labels));
    if (targets.length === 0) {
      problems.push(`Service/${s.metadata.name}: its selector matches no pod template`);
      continue;
    }
    for (const p of s.spec.ports) {
      const target = p.targetPort ?? p.port;
      for (const w of targets) {
        if (!w.spec.template.spec.containers.some((c) => (c.ports ?? []).some((cp) => cp.name === target || cp.containerPort === target))) problems.push(`Service/${s.metadata.name}: port ${p.port} targets ${target}, which ${w.kind}/${w.metadata.name} does not expose`);
      }
    }
  }
  for (const b of byKind('PodDisruptionBudget') as (K8sObject & { spec: { selector: { matchLabels?: Record<string, string> } } })[]) {
    if (!workloads.some((w) => matches(b.spec.selector.matchLabels, w.spec.template.metadata.labels))) problems.push(`PodDisruptionBudget/${b.metadata.name}: selects no workload`);
  }
  return problems;
}

const loaded = loadDir(dir);
const objects = loaded.map((l) => l.doc);
const kustomization = objects.find((o) => o.kind === 'Kustomization') as unknown as { namespace?: string; resources: string[]; images?: { name: string; newTag?: string }[] };
const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));
const get = <T extends K8sObject>(kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata?.name === name) as T;

describe('infra/k8s', () => {
  it('every document is a known kind that validates against its schema', () => {
    expect(objects.length).toBeGreaterThan(10);
    expect(objects.flatMap((o) => validateObject(o))).toEqual([]);
    const kinds = new Set(objects.map((o) => o.kind));
    for (const k of ['Deployment', 'DaemonSet', 'ConfigMap', 'Secret', 'PersistentVolumeClaim', 'PodDisruptionBudget', 'Service']) expect(kinds).toContain(k);
  });

  it('references resolve: selectors, ConfigMaps, Secrets, PVCs, volumes, probe and Service ports, resources', () => {
    expect(crossProblems(objects, kustomization, files)).toEqual([]);
  });

  it('serve and workers are Deployments; serve probes /healthz on its API port; replicas share an RWX claim', () => {
    const serve = get<Workload>('Deployment', 'lifeboat-serve');
    const worker = get<Workload>('Deployment', 'lifeboat-worker');
    expect(serve).toBeDefined();
    expect(worker).toBeDefined();
    const c = serve.spec.template.spec.containers[0]!;
    for (const p of [c.readinessProbe, c.livenessProbe]) expect(p?.httpGet?.path).toBe('/healthz');
    const config = parseConfig(JSON.parse(get<K8sObject & { data: Record<string, string> }>('ConfigMap', 'lifeboat-config').data['lifeboat.json']!), 'lifeboat.json');
    expect(c.ports!.find((p) => p.name === c.readinessProbe!.httpGet!.port)!.containerPort).toBe(config.api.port);
    expect(c.ports!.map((p) => p.containerPort)).toContain(config.agentEndpoint.port);
    // The worker has no HTTP surface: its readiness asks the operator API through its Service.
    const wr = worker.spec.template.spec.containers[0]!.readinessProbe!.exec!.command.join(' ');
    const api = get<K8sObject & { spec: { ports: { port: number }[] } }>('Service', 'lifeboat-api');
    expect(wr).toContain(`http://${api.metadata.name}:${api.spec.ports[0]!.port}/healthz`);
    const pvc = get<K8sObject & { spec: { accessModes: string[] } }>('PersistentVolumeClaim', 'lifeboat-replicas');
    expect(pvc.spec.accessModes).toEqual(['ReadWriteMany']);
    for (const w of [serve, worker, get<Workload>('DaemonSet', 'lifeboat-failover-host')]) {
      const pod = w.spec.template.spec;
      const vol = pod.volumes!.find((v) => v.persistentVolumeClaim?.claimName === pvc.metadata.name)!;
      expect(pod.containers[0]!.volumeMounts!.find((m) => m.name === vol.name)!.mountPath).toBe(config.replicaRoot);
    }
  });

  it('the pods run real subcommands with real options, in the images the kustomization tags', async () => {
    const lines: string[][] = [];
    for (const w of objects.filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet') as Workload[]) {
      for (const c of w.spec.template.spec.containers) {
        expect(c.command).toBeUndefined(); // the image's entrypoint is lifeboat-service
        lines.push(c.args!);
        expect(kustomization.images!.map((i) => i.name)).toContain(c.image.split(':')[0]);
      }
    }
    expect(lines.map((l) => l[0]).sort()).toEqual(['failover-host', 'serve', 'worker']);
    expect((await Promise.all(lines.map((l) => checkCommandLine('service', l)))).flat()).toEqual([]);
  });

  it('the configuration is valid, reads its keys from the Secret and splits the processes', () => {
    const cm = get<K8sObject & { data: Record<string, string> }>('ConfigMap', 'lifeboat-config');
    const config = parseConfig(JSON.parse(cm.data['lifeboat.json']!), 'lifeboat.json');
    expect(config.embeddedWorkers).toBe(false);
    expect(config.failover.embeddedHost).toBe(false);
    expect(config.catalog.kind).toBe('postgres');
    const keys = get<K8sObject & { stringData: Record<string, string> }>('Secret', 'lifeboat-keys');
    const serve = get<Workload>('Deployment', 'lifeboat-serve').spec.template.spec;
    const keyVolume = serve.volumes!.find((v) => v.secret?.secretName === 'lifeboat-keys')!;
    const keyDir = serve.containers[0]!.volumeMounts!.find((m) => m.name === keyVolume.name)!.mountPath;
    for (const f of [config.trust.caKeyFile, config.trust.caCertFile, config.trust.signingKeyFile, config.trust.masterKeyFile, config.adminTokenFile]) {
      expect(f.startsWith(`${keyDir}/`)).toBe(true);
      expect(Object.keys(keys.stringData)).toContain(f.slice(keyDir.length + 1));
    }
    // The config file the pods are pointed at is the one the ConfigMap volume holds.
    const cmVolume = serve.volumes!.find((v) => v.configMap?.name === cm.metadata.name)!;
    const cmDir = serve.containers[0]!.volumeMounts!.find((m) => m.name === cmVolume.name)!.mountPath;
    expect(serve.containers[0]!.env!.find((e) => e.name === 'LIFEBOAT_CONFIG')!.value).toBe(`${cmDir}/lifeboat.json`);
    // Credentials come from the environment, not from the ConfigMap.
    if (config.catalog.kind === 'postgres') expect(new URL(config.catalog.url).password).toBe('');
    const backends = get<K8sObject & { stringData: Record<string, string> }>('Secret', 'lifeboat-backends');
    expect(Object.keys(backends.stringData)).toEqual(expect.arrayContaining(['PGPASSWORD', 'REDIS_URL', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']));
  });

  describe('the failover host init script', () => {
    const scratch = mkdtempSync(join(tmpdir(), 'lifeboat-k8s-'));
    afterAll(() => rmSync(scratch, { recursive: true, force: true }));

    it('names each host after its node, and the configuration stays valid', async () => {
      const ds = get<Workload>('DaemonSet', 'lifeboat-failover-host');
      const init = ds.spec.template.spec.initContainers![0]!;
      const [node, flag, script] = init.command!;
      expect([node, flag]).toEqual(['node', '-e']);
      const main = ds.spec.template.spec.containers[0]!;
      const outPath = main.env!.find((e) => e.name === 'LIFEBOAT_CONFIG')!.value!;
      expect(script).toContain(outPath);
      const cm = get<K8sObject & { data: Record<string, string> }>('ConfigMap', 'lifeboat-config');
      writeFileSync(join(scratch, 'in.json'), cm.data['lifeboat.json']!);
      const local = script!.replace('/etc/lifeboat/config/lifeboat.json', join(scratch, 'in.json')).replace(outPath, join(scratch, 'out.json'));
      await promisify(execFile)(process.execPath, ['-e', local], { env: { ...process.env, NODE_NAME: 'Node-7.DC1.example.net' } });
      const out = parseConfig(JSON.parse(readFileSync(join(scratch, 'out.json'), 'utf8')), 'out.json');
      expect(out.failover.host.name).toBe('node-7-dc1-example-net');
      expect({ ...out, failover: { ...out.failover, host: { ...out.failover.host, name: 'x' } } }).toEqual({ ...parseConfig(JSON.parse(cm.data['lifeboat.json']!), 'in'), failover: { ...out.failover, host: { ...out.failover.host, name: 'x' } } });
    });
  });
});

describe('the Kubernetes checks find what is wrong', () => {
  const broken = (edit: (objs: K8sObject[]) => void) => {
    const objs = structuredClone(objects);
    edit(objs);
    // As in the real checks, references are followed only in objects that have their schema's shape.
    const invalid = objs.flatMap((o) => validateObject(o));
    return invalid.length > 0 ? invalid : crossProblems(objs, kustomization, files);
  };
  const workload = (objs: K8sObject[], name: string) => objs.find((o) => o.metadata?.name === name && (o.kind === 'Deployment' || o.kind === 'DaemonSet')) as Workload;

  it.each<[string, (objs: K8sObject[]) => void, RegExp]>([
    ['unknown kind', (o) => { o[0]!.apiVersion = 'apps/v2'; }, /unknown apiVersion\/kind/],
    ['a field the API has not', (o) => { (workload(o, 'lifeboat-serve').spec as Record<string, unknown>).replica = 2; }, /Unrecognized key/],
    ['a missing required field', (o) => { delete (workload(o, 'lifeboat-worker').spec as Partial<Workload['spec']>).selector; }, /selector/],
    ['selector not matching', (o) => { workload(o, 'lifeboat-worker').spec.selector.matchLabels = { app: 'other' }; }, /does not match the pod template/],
    ['undefined ConfigMap', (o) => { workload(o, 'lifeboat-serve').spec.template.spec.volumes![0]!.configMap!.name = 'lifeboat-cfg'; }, /ConfigMap lifeboat-cfg is not defined/],
    ['undefined Secret', (o) => { workload(o, 'lifeboat-serve').spec.template.spec.containers[0]!.envFrom![0]!.secretRef!.name = 'nope'; }, /Secret nope is not defined/],
    ['undefined PVC', (o) => { o.splice(o.findIndex((x) => x.kind === 'PersistentVolumeClaim'), 1); }, /PVC lifeboat-replicas is not defined/],
    ['probe on an undeclared port', (o) => { workload(o, 'lifeboat-serve').spec.template.spec.containers[0]!.livenessProbe!.httpGet!.port = 'http'; }, /liveness probe on port http/],
    ['Service target port missing', (o) => { workload(o, 'lifeboat-serve').spec.template.spec.containers[0]!.ports![1]!.name = 'agent'; }, /targets agents/],
    ['request above limit', (o) => { workload(o, 'lifeboat-worker').spec.template.spec.containers[0]!.resources!.requests!.memory = '4Gi'; }, /memory request 4Gi above its limit/],
    ['no limits', (o) => { delete workload(o, 'lifeboat-worker').spec.template.spec.containers[0]!.resources!.limits; }, /requests and limits/],
    ['PDB selecting nothing', (o) => { (o.find((x) => x.kind === 'PodDisruptionBudget') as unknown as { spec: { selector: { matchLabels: Record<string, string> } } }).spec.selector.matchLabels = { a: 'b' }; }, /selects no workload/],
  ])('%s', (_name, edit, expected) => {
    expect(broken(edit).join('\n')).toMatch(expected);
  });
});
