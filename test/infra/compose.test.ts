/**
 * infra/compose/compose.yaml, checked statically (no docker daemon where the tests run): it parses as
 * YAML (with its merge keys), names only services, volumes, files and build stages that exist, pins
 * its images, runs real subcommands of lifeboat-service with real options, and its lifeboat.json is a
 * valid configuration whose addresses and credentials are those of the compose services.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { parseConfig } from '../../service/config/config.js';
import { checkCommandLine, commandLinesIn } from './cli.js';
import { effective, parseDockerfile } from './dockerfile-lint.js';

const repo = resolve(import.meta.dirname, '..', '..');
const composePath = resolve(repo, 'infra/compose/compose.yaml');
const composeDir = dirname(composePath);

interface Service {
  image?: string;
  build?: { context: string; dockerfile: string; target?: string };
  command?: string[] | string;
  entrypoint?: string[] | string;
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  depends_on?: Record<string, { condition: string }> | string[];
  healthcheck?: { test?: string[]; disable?: boolean };
  restart?: string;
  read_only?: boolean;
  tmpfs?: string[];
}
interface Compose {
  name?: string;
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

/** Problems of a compose document; empty when it is consistent. */
function composeProblems(doc: Compose, dir: string): string[] {
  const problems: string[] = [];
  const names = new Set(Object.keys(doc.services));
  const declared = new Set(Object.keys(doc.volumes ?? {}));
  const used = new Set<string>();
  for (const [name, svc] of Object.entries(doc.services)) {
    if (!svc.image && !svc.build) problems.push(`${name}: neither image nor build`);
    if (svc.image) {
      const tag = /:([^/:@]+)$/.exec(svc.image)?.[1];
      if (tag === undefined) problems.push(`${name}: image ${svc.image} has no tag`);
      else if (tag === 'latest') problems.push(`${name}: image ${svc.image} uses latest`);
    }
    if (svc.build) {
      const ctx = resolve(dir, svc.build.context);
      const dockerfile = resolve(ctx, svc.build.dockerfile);
      if (!existsSync(dockerfile)) problems.push(`${name}: build.dockerfile ${svc.build.dockerfile} does not exist`);
      else if (svc.build.target && !parseDockerfile(readFileSync(dockerfile, 'utf8')).stages.some((s) => s.name === svc.build!.target)) problems.push(`${name}: build target ${svc.build.target} is no stage of ${svc.build.dockerfile}`);
    }
    const deps = Array.isArray(svc.depends_on) ? Object.fromEntries(svc.depends_on.map((d) => [d, { condition: 'service_started' }])) : (svc.depends_on ?? {});
    for (const [dep, { condition }] of Object.entries(deps)) {
      if (!names.has(dep)) {
        problems.push(`${name}: depends_on ${dep}, which is no service`);
        continue;
      }
      if (!['service_started', 'service_healthy', 'service_completed_successfully'].includes(condition)) problems.push(`${name}: depends_on ${dep}: unknown condition ${condition}`);
      const target = doc.services[dep]!;
      if (condition === 'service_healthy' && !hasHealthcheck(target, dir)) problems.push(`${name}: waits for ${dep} to be healthy, but ${dep} has no health check`);
      if (condition === 'service_completed_successfully' && target.restart !== 'no') problems.push(`${name}: waits for ${dep} to complete, but ${dep} restarts (restart: ${target.restart ?? 'unset'})`);
    }
    for (const v of svc.volumes ?? []) {
      const [source, target] = v.split(':');
      if (target === undefined) continue; // anonymous volume
      if (source!.startsWith('.') || isAbsolute(source!)) {
        if (!existsSync(resolve(dir, source!))) problems.push(`${name}: mounts ${source}, which does not exist`);
      } else {
        used.add(source!);
        if (!declared.has(source!)) problems.push(`${name}: volume ${source} is not declared under volumes`);
      }
    }
    if (svc.read_only && !(svc.tmpfs ?? []).includes('/tmp')) problems.push(`${name}: read-only root without a tmpfs on /tmp`);
  }
  for (const v of declared) if (!used.has(v)) problems.push(`volume ${v} is declared but no service mounts it`);
  return problems;
}

function hasHealthcheck(svc: Service, dir: string): boolean {
  if (svc.healthcheck?.disable) return false;
  if (svc.healthcheck?.test) return true;
  if (!svc.build) return false;
  const df = parseDockerfile(readFileSync(resolve(dir, svc.build.context, svc.build.dockerfile), 'utf8'));
  const stage = svc.build.target ? df.stages.find((s) => s.name === svc.build!.target) : df.stages.at(-1);
  const hc = stage && effective(df, stage, 'HEALTHCHECK');
  return hc !== undefined && !/^NONE$/i.test(hc.args);
}

const text = readFileSync(composePath, 'utf8');
const doc = parse(text, { merge: true }) as Compose;

describe('infra/compose/compose.yaml', () => {
  it('parses and runs serve, a worker, a failover host, PostgreSQL, Redis and an S3 store', () => {
    expect(Object.keys(doc.services)).toEqual(expect.arrayContaining(['serve', 'worker', 'failover-host', 'postgres', 'redis', 'minio']));
    expect(doc.services.postgres!.image).toMatch(/^postgres:\d/);
    expect(doc.services.redis!.image).toMatch(/^redis:\d/);
    expect(doc.services.minio!.image).toMatch(/^minio\/minio:RELEASE\./);
    expect(doc.services['failover-host']!.build!.target).toBe('failover-host');
    expect(doc.services.serve!.build!.target).toBe('service');
  });

  it('names only services, volumes, files and build stages that exist', () => {
    expect(composeProblems(doc, composeDir)).toEqual([]);
  });

  it('runs real subcommands of lifeboat-service with real options', async () => {
    const lines: string[][] = [];
    for (const svc of Object.values(doc.services)) {
      if (!svc.build) continue;
      if (svc.entrypoint === undefined) lines.push(svc.command as string[]);
      else for (const c of [svc.command].flat()) lines.push(...commandLinesIn(String(c), 'lifeboat-service'));
    }
    expect(lines.map((l) => l[0])).toEqual(expect.arrayContaining(['serve', 'worker', 'failover-host', 'init']));
    expect((await Promise.all(lines.map((l) => checkCommandLine('service', l)))).flat()).toEqual([]);
  });

  it('gives a valid lifeboat.json that points at the compose services', () => {
    const mount = doc.services.serve!.volumes!.find((v) => v.endsWith(':/etc/lifeboat/lifeboat.json:ro'))!;
    const file = resolve(composeDir, mount.split(':')[0]!);
    const config = parseConfig(JSON.parse(readFileSync(file, 'utf8')), file);
    expect(config.catalog.kind).toBe('postgres');
    const host = (url: string) => new URL(url).hostname;
    if (config.catalog.kind === 'postgres') expect(doc.services[host(config.catalog.url)]).toBeDefined();
    // A URL, so serve and the workers share the compose Redis rather than each running a private one.
    expect(doc.services[host(config.redis.url ?? 'redis://missing')]).toBeDefined();
    const s3 = new URL(config.objectStore.url);
    expect(s3.protocol).toBe('s3:');
    expect(doc.services[host(s3.searchParams.get('endpoint')!)]).toBeDefined();
    // The bucket made by minio-bucket is the one the store uses, with the credentials MinIO has.
    expect(String(doc.services['minio-bucket']!.command)).toContain(`local/${s3.hostname}`);
    const env = doc.services.serve!.environment!;
    expect(env.AWS_ACCESS_KEY_ID).toBe(doc.services.minio!.environment!.MINIO_ROOT_USER);
    expect(env.AWS_SECRET_ACCESS_KEY).toBe(doc.services.minio!.environment!.MINIO_ROOT_PASSWORD);
    const pg = new URL(config.catalog.kind === 'postgres' ? config.catalog.url : '');
    expect(pg.username).toBe(doc.services.postgres!.environment!.POSTGRES_USER);
    expect(pg.password).toBe(doc.services.postgres!.environment!.POSTGRES_PASSWORD);
    expect(pg.pathname).toBe(`/${doc.services.postgres!.environment!.POSTGRES_DB}`);
    // serve publishes the ports the config listens on; processes split as the commands say.
    expect(doc.services.serve!.ports).toEqual([`${config.api.port}:${config.api.port}`, `${config.agentEndpoint.port}:${config.agentEndpoint.port}`]);
    expect(config.embeddedWorkers).toBe(false);
    expect(config.failover.embeddedHost).toBe(false);
    // Everything it writes is in the data volume every lifeboat service mounts.
    for (const p of [config.replicaRoot, config.trust.caKeyFile, config.adminTokenFile, config.failover.host.dir]) expect(p.startsWith('/var/lib/lifeboat/')).toBe(true);
    for (const svc of ['serve', 'worker', 'failover-host', 'keys']) expect(doc.services[svc]!.volumes).toContain('lifeboat-data:/var/lib/lifeboat');
  });

  it('finds what is wrong in a broken compose file', () => {
    const broken = structuredClone(doc);
    broken.services.worker!.depends_on = { srve: { condition: 'service_started' } };
    broken.services.serve!.volumes = ['./no-such.json:/etc/lifeboat/lifeboat.json:ro', 'undeclared:/var/lib/lifeboat'];
    broken.services.redis!.image = 'redis:latest';
    broken.services['failover-host']!.build = { context: '../..', dockerfile: 'infra/docker/Dockerfile', target: 'nope' };
    broken.services.postgres!.healthcheck = { disable: true };
    const p = composeProblems(broken, composeDir);
    expect(p).toEqual(expect.arrayContaining([
      'worker: depends_on srve, which is no service',
      'serve: mounts ./no-such.json, which does not exist',
      'serve: volume undeclared is not declared under volumes',
      'redis: image redis:latest uses latest',
      'failover-host: build target nope is no stage of infra/docker/Dockerfile',
      'serve: waits for postgres to be healthy, but postgres has no health check',
    ]));
  });

  it('rejects a command line with an unknown subcommand or option', async () => {
    expect(await checkCommandLine('service', ['serv'])).toHaveLength(1);
    expect(await checkCommandLine('service', ['worker', '--concurency', '4'])).toEqual(['lifeboat-service worker: no option --concurency']);
  });
});
