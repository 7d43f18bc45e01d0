/**
 * Schemas of the Kubernetes objects infra/k8s uses, written from the Kubernetes API reference
 * (https://kubernetes.io/docs/reference/kubernetes-api/, v1.31: Namespace, ServiceAccount, ConfigMap,
 * Secret, PersistentVolumeClaim, Service, Deployment, DaemonSet, PodDisruptionBudget; PodSpec,
 * Container, Probe, Volume, SecurityContext; ObjectMeta and LabelSelector in "Common Definitions"),
 * and of kustomize's Kustomization (kubectl.docs.kubernetes.io, "kustomization" reference).
 * Only the fields the manifests use are declared, and objects are strict: a field the API does not
 * have (a typo, a field at the wrong level) fails validation, as `kubectl apply --validate=strict`
 * fails. Required fields and enumerations are those the reference marks; names follow the API's
 * validation (DNS-1123 labels and subdomains, IANA service names for ports, label values).
 * Output: validateObject(doc) gives the first problems as `kind/name: path: message`.
 */
import { z } from 'zod';

const dnsLabel = z.string().max(63).regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a DNS-1123 label');
const dnsSubdomain = z.string().max(253).regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, 'must be a DNS-1123 subdomain');
const labelKey = z.string().regex(/^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/, 'must be a qualified label key');
const labelValue = z.string().max(63).regex(/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/, 'must be a label value');
const labels = z.record(labelKey, labelValue);
/** IANA_SVC_NAME: at most 15 characters, lower-case letters, digits and '-', at least one letter. */
const portName = z.string().max(15).regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/).regex(/[a-z]/, 'must contain a letter');
const intOrString = z.union([z.number().int(), z.string().min(1)]);
export const quantityPattern = /^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$/;
const quantity = z.union([z.number(), z.string().regex(quantityPattern, 'must be a quantity')]);
const port = z.number().int().min(1).max(65535);

const objectMeta = (namespaced: boolean, name: z.ZodString = dnsSubdomain) => z.strictObject({
  name,
  ...(namespaced ? { namespace: dnsLabel.optional() } : {}),
  labels: labels.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});

const labelSelector = z.strictObject({
  matchLabels: labels.optional(),
  matchExpressions: z.array(z.strictObject({ key: labelKey, operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']), values: z.array(z.string()).optional() })).optional(),
});

const capabilities = z.strictObject({ add: z.array(z.string()).optional(), drop: z.array(z.string()).optional() });
const seccompProfile = z.strictObject({ type: z.enum(['RuntimeDefault', 'Unconfined', 'Localhost']), localhostProfile: z.string().optional() });

const securityContext = z.strictObject({
  allowPrivilegeEscalation: z.boolean().optional(),
  privileged: z.boolean().optional(),
  readOnlyRootFilesystem: z.boolean().optional(),
  runAsUser: z.number().int().min(0).optional(),
  runAsGroup: z.number().int().min(0).optional(),
  runAsNonRoot: z.boolean().optional(),
  capabilities: capabilities.optional(),
  seccompProfile: seccompProfile.optional(),
});

const podSecurityContext = z.strictObject({
  runAsUser: z.number().int().min(0).optional(),
  runAsGroup: z.number().int().min(0).optional(),
  runAsNonRoot: z.boolean().optional(),
  fsGroup: z.number().int().min(0).optional(),
  supplementalGroups: z.array(z.number().int().min(0)).optional(),
  seccompProfile: seccompProfile.optional(),
});

const probe = z.strictObject({
  httpGet: z.strictObject({ path: z.string().startsWith('/').optional(), port: intOrString, host: z.string().optional(), scheme: z.enum(['HTTP', 'HTTPS']).optional() }).optional(),
  exec: z.strictObject({ command: z.array(z.string()).min(1) }).optional(),
  tcpSocket: z.strictObject({ port: intOrString, host: z.string().optional() }).optional(),
  initialDelaySeconds: z.number().int().min(0).optional(),
  periodSeconds: z.number().int().min(1).optional(),
  timeoutSeconds: z.number().int().min(1).optional(),
  successThreshold: z.number().int().min(1).optional(),
  failureThreshold: z.number().int().min(1).optional(),
}).refine((p) => [p.httpGet, p.exec, p.tcpSocket].filter((h) => h !== undefined).length === 1, 'a probe needs exactly one handler (httpGet, exec or tcpSocket)');

const envVar = z.strictObject({
  name: z.string().min(1),
  value: z.string().optional(),
  valueFrom: z.strictObject({
    fieldRef: z.strictObject({ fieldPath: z.string(), apiVersion: z.string().optional() }).optional(),
    secretKeyRef: z.strictObject({ name: dnsSubdomain, key: z.string(), optional: z.boolean().optional() }).optional(),
    configMapKeyRef: z.strictObject({ name: dnsSubdomain, key: z.string(), optional: z.boolean().optional() }).optional(),
  }).optional(),
});

const container = z.strictObject({
  name: dnsLabel,
  image: z.string().min(1),
  imagePullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']).optional(),
  command: z.array(z.string()).optional(),
  args: z.array(z.string()).optional(),
  workingDir: z.string().optional(),
  env: z.array(envVar).optional(),
  envFrom: z.array(z.strictObject({
    prefix: z.string().optional(),
    secretRef: z.strictObject({ name: dnsSubdomain, optional: z.boolean().optional() }).optional(),
    configMapRef: z.strictObject({ name: dnsSubdomain, optional: z.boolean().optional() }).optional(),
  })).optional(),
  ports: z.array(z.strictObject({ name: portName.optional(), containerPort: port, protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional(), hostPort: port.optional() })).optional(),
  resources: z.strictObject({ requests: z.record(z.string(), quantity).optional(), limits: z.record(z.string(), quantity).optional() }).optional(),
  volumeMounts: z.array(z.strictObject({ name: dnsLabel, mountPath: z.string().startsWith('/'), readOnly: z.boolean().optional(), subPath: z.string().optional() })).optional(),
  livenessProbe: probe.optional(),
  readinessProbe: probe.optional(),
  startupProbe: probe.optional(),
  securityContext: securityContext.optional(),
});

const volume = z.strictObject({
  name: dnsLabel,
  configMap: z.strictObject({ name: dnsSubdomain, defaultMode: z.number().int().min(0).max(0o777).optional(), optional: z.boolean().optional(), items: z.array(z.strictObject({ key: z.string(), path: z.string() })).optional() }).optional(),
  secret: z.strictObject({ secretName: dnsSubdomain, defaultMode: z.number().int().min(0).max(0o777).optional(), optional: z.boolean().optional(), items: z.array(z.strictObject({ key: z.string(), path: z.string() })).optional() }).optional(),
  persistentVolumeClaim: z.strictObject({ claimName: dnsSubdomain, readOnly: z.boolean().optional() }).optional(),
  emptyDir: z.strictObject({ medium: z.enum(['', 'Memory']).optional(), sizeLimit: quantity.optional() }).optional(),
  hostPath: z.strictObject({ path: z.string().startsWith('/'), type: z.enum(['', 'DirectoryOrCreate', 'Directory', 'FileOrCreate', 'File', 'Socket', 'CharDevice', 'BlockDevice']).optional() }).optional(),
}).refine((v) => [v.configMap, v.secret, v.persistentVolumeClaim, v.emptyDir, v.hostPath].filter((s) => s !== undefined).length === 1, 'a volume needs exactly one source');

const podSpec = z.strictObject({
  containers: z.array(container).min(1),
  initContainers: z.array(container).optional(),
  volumes: z.array(volume).optional(),
  serviceAccountName: dnsSubdomain.optional(),
  automountServiceAccountToken: z.boolean().optional(),
  securityContext: podSecurityContext.optional(),
  terminationGracePeriodSeconds: z.number().int().min(0).optional(),
  nodeSelector: z.record(z.string(), z.string()).optional(),
  hostNetwork: z.boolean().optional(),
  dnsPolicy: z.enum(['ClusterFirst', 'ClusterFirstWithHostNet', 'Default', 'None']).optional(),
  priorityClassName: z.string().optional(),
  tolerations: z.array(z.strictObject({ key: z.string().optional(), operator: z.enum(['Exists', 'Equal']).optional(), value: z.string().optional(), effect: z.enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute']).optional() })).optional(),
});

const podTemplate = z.strictObject({
  metadata: z.strictObject({ labels: labels.optional(), annotations: z.record(z.string(), z.string()).optional() }),
  spec: podSpec,
});

const rollingUpdate = z.strictObject({ maxUnavailable: intOrString.optional(), maxSurge: intOrString.optional() });

export const schemas: Record<string, z.ZodType> = {
  'v1/Namespace': z.strictObject({ apiVersion: z.literal('v1'), kind: z.literal('Namespace'), metadata: objectMeta(false, dnsLabel) }),
  'v1/ServiceAccount': z.strictObject({ apiVersion: z.literal('v1'), kind: z.literal('ServiceAccount'), metadata: objectMeta(true), automountServiceAccountToken: z.boolean().optional() }),
  'v1/ConfigMap': z.strictObject({ apiVersion: z.literal('v1'), kind: z.literal('ConfigMap'), metadata: objectMeta(true), data: z.record(z.string().regex(/^[-._a-zA-Z0-9]+$/), z.string()).optional(), immutable: z.boolean().optional() }),
  'v1/Secret': z.strictObject({
    apiVersion: z.literal('v1'), kind: z.literal('Secret'), metadata: objectMeta(true),
    type: z.string().optional(),
    data: z.record(z.string().regex(/^[-._a-zA-Z0-9]+$/), z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'data values are base64')).optional(),
    stringData: z.record(z.string().regex(/^[-._a-zA-Z0-9]+$/), z.string()).optional(),
    immutable: z.boolean().optional(),
  }),
  'v1/PersistentVolumeClaim': z.strictObject({
    apiVersion: z.literal('v1'), kind: z.literal('PersistentVolumeClaim'), metadata: objectMeta(true),
    spec: z.strictObject({
      accessModes: z.array(z.enum(['ReadWriteOnce', 'ReadOnlyMany', 'ReadWriteMany', 'ReadWriteOncePod'])).min(1),
      storageClassName: z.string().optional(),
      volumeMode: z.enum(['Filesystem', 'Block']).optional(),
      resources: z.strictObject({ requests: z.strictObject({ storage: quantity }) }),
    }),
  }),
  'v1/Service': z.strictObject({
    apiVersion: z.literal('v1'), kind: z.literal('Service'), metadata: objectMeta(true, dnsLabel),
    spec: z.strictObject({
      type: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']).optional(),
      selector: z.record(labelKey, labelValue).optional(),
      clusterIP: z.string().optional(),
      externalTrafficPolicy: z.enum(['Cluster', 'Local']).optional(),
      ports: z.array(z.strictObject({ name: portName.optional(), port, targetPort: intOrString.optional(), protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional(), nodePort: port.optional() })).min(1),
    }),
  }),
  'apps/v1/Deployment': z.strictObject({
    apiVersion: z.literal('apps/v1'), kind: z.literal('Deployment'), metadata: objectMeta(true),
    spec: z.strictObject({
      replicas: z.number().int().min(0).optional(),
      selector: labelSelector,
      template: podTemplate,
      strategy: z.strictObject({ type: z.enum(['RollingUpdate', 'Recreate']).optional(), rollingUpdate: rollingUpdate.optional() }).optional(),
      minReadySeconds: z.number().int().min(0).optional(),
      revisionHistoryLimit: z.number().int().min(0).optional(),
    }),
  }),
  'apps/v1/DaemonSet': z.strictObject({
    apiVersion: z.literal('apps/v1'), kind: z.literal('DaemonSet'), metadata: objectMeta(true),
    spec: z.strictObject({
      selector: labelSelector,
      template: podTemplate,
      updateStrategy: z.strictObject({ type: z.enum(['RollingUpdate', 'OnDelete']).optional(), rollingUpdate: rollingUpdate.optional() }).optional(),
      minReadySeconds: z.number().int().min(0).optional(),
    }),
  }),
  'policy/v1/PodDisruptionBudget': z.strictObject({
    apiVersion: z.literal('policy/v1'), kind: z.literal('PodDisruptionBudget'), metadata: objectMeta(true),
    spec: z.strictObject({
      selector: labelSelector,
      minAvailable: intOrString.optional(),
      maxUnavailable: intOrString.optional(),
      unhealthyPodEvictionPolicy: z.enum(['IfHealthyBudget', 'AlwaysAllow']).optional(),
    }).refine((s) => (s.minAvailable === undefined) !== (s.maxUnavailable === undefined), 'give exactly one of minAvailable and maxUnavailable'),
  }),
  'kustomize.config.k8s.io/v1beta1/Kustomization': z.strictObject({
    apiVersion: z.literal('kustomize.config.k8s.io/v1beta1'), kind: z.literal('Kustomization'),
    namespace: dnsLabel.optional(),
    resources: z.array(z.string()).min(1),
    images: z.array(z.strictObject({ name: z.string(), newName: z.string().optional(), newTag: z.string().optional(), digest: z.string().optional() })).optional(),
  }),
};

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
}

/** Problems of one document: unknown apiVersion/kind, or the schema's first issues. */
export function validateObject(doc: unknown): string[] {
  const d = doc as Partial<K8sObject> | null;
  if (d === null || typeof d !== 'object') return ['not an object'];
  const key = `${d.apiVersion}/${d.kind}`;
  const schema = schemas[key];
  const id = `${d.kind}/${d.metadata?.name ?? '?'}`;
  if (!schema) return [`${id}: unknown apiVersion/kind ${key}`];
  const r = schema.safeParse(doc);
  if (r.success) return [];
  return r.error.issues.slice(0, 5).map((i) => `${id}: ${i.path.join('.') || '(top)'}: ${i.message}`);
}

/** A quantity in base units (cores for cpu, bytes for memory). */
export function parseQuantity(q: string | number): number {
  if (typeof q === 'number') return q;
  const m = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(.*)$/.exec(q);
  if (!m) throw new Error(`not a quantity: ${q}`);
  const n = Number(m[1]);
  const suffix = m[2]!;
  const bin: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
  const dec: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };
  if (suffix in bin) return n * bin[suffix]!;
  if (suffix in dec) return n * dec[suffix]!;
  if (/^[eE][+-]?\d+$/.test(suffix)) return n * 10 ** Number(suffix.slice(1));
  throw new Error(`not a quantity: ${q}`);
}
