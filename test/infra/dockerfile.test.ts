/**
 * infra/docker/Dockerfile, checked statically (no image can be built or pulled where the tests run):
 * it parses, passes the hadolint-style rules of dockerfile-lint.ts with the repository as its build
 * context and its .dockerignore, its targets run real subcommands, and its health check asks /healthz
 * on a port it exposes. The rules are also shown to fire on Dockerfiles that break them.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkCommandLine } from './cli.js';
import { dockerignore, effective, execForm, lintDockerfile, parseDockerfile, targetStages } from './dockerfile-lint.js';

const repo = resolve(import.meta.dirname, '..', '..');
const dockerfilePath = resolve(repo, 'infra/docker/Dockerfile');
const text = readFileSync(dockerfilePath, 'utf8');
const ignore = readFileSync(`${dockerfilePath}.dockerignore`, 'utf8');

describe('infra/docker/Dockerfile', () => {
  const df = parseDockerfile(text);

  it('parses into the stages build, base, failover-host and service', () => {
    expect(df.errors).toEqual([]);
    expect(df.stages.map((s) => s.name)).toEqual(['build', 'base', 'failover-host', 'service']);
    expect(df.stages[0]!.from).toBe('node:20.19-bookworm-slim');
    // The default target (the last stage) is the service.
    expect(targetStages(df).map((s) => s.name)).toEqual(['failover-host', 'service']);
  });

  it('passes every rule with the repository as build context', () => {
    expect(lintDockerfile(text, { contextDir: repo, ignore })).toEqual([]);
  });

  it('installs the failover host tools only in the failover-host target, with the runtime on node 20 bookworm slim', () => {
    const runs = (name: string) => df.stages.find((s) => s.name === name)!.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args).join('\n');
    for (const pkg of ['qemu-utils', 'qemu-system-x86', 'libnbd-bin', 'genisoimage']) {
      expect(runs('failover-host')).toMatch(new RegExp(`\\b${pkg}\\b`));
      expect(runs('service') + runs('base')).not.toMatch(new RegExp(`\\b${pkg}\\b`));
    }
    expect(runs('build')).toMatch(/\bnpm ci\b/);
    expect(df.stages.find((s) => s.name === 'base')!.from).toMatch(/^node:20[.\d]*-bookworm-slim$/);
  });

  it('runs real subcommands and checks /healthz on the exposed API port', async () => {
    for (const t of targetStages(df)) {
      const entry = execForm(effective(df, t, 'ENTRYPOINT')!.args)!;
      expect(entry.slice(-1)).toEqual(['lifeboat-service']);
      const cmd = execForm(effective(df, t, 'CMD')!.args)!;
      expect(await checkCommandLine('service', cmd)).toEqual([]);
    }
    const service = df.stages.find((s) => s.name === 'service')!;
    const hc = effective(df, service, 'HEALTHCHECK')!.args;
    const port = /127\.0\.0\.1:(\d+)\/healthz/.exec(hc)?.[1];
    expect(port).toBeDefined();
    const exposed = effective(df, service, 'EXPOSE')!.args.split(/\s+/);
    expect(exposed).toContain(port);
    // The API port the shipped configurations give serve.
    for (const f of ['infra/compose/lifeboat.json']) expect(JSON.parse(readFileSync(resolve(repo, f), 'utf8')).api.port).toBe(Number(port));
  });

  it('its .dockerignore keeps the sources and drops tests, node_modules and the rest of the tree', () => {
    const ignored = dockerignore(ignore);
    expect(ignored('service/runner.ts')).toBe(false);
    expect(ignored('service/catalog/migrations/001_init.sql')).toBe(false);
    expect(ignored('shared/errors.ts')).toBe(false);
    expect(ignored('package-lock.json')).toBe(false);
    expect(ignored('service/runner.test.ts')).toBe(true);
    expect(ignored('node_modules/zod/package.json')).toBe(true);
    expect(ignored('agent/cli/main.ts')).toBe(true);
    expect(ignored('.git/HEAD')).toBe(true);
    expect(ignored('infra/k8s/serve.yaml')).toBe(true);
  });
});

describe('the Dockerfile rules fire', () => {
  const lint = (t: string) => lintDockerfile(t, { contextDir: repo, ignore }).map((f) => f.rule);

  it.each([
    ['untagged base', 'FROM node\nUSER node\nHEALTHCHECK NONE\n', 'DL3006'],
    ['latest', 'FROM node:latest\nUSER node\nHEALTHCHECK NONE\n', 'DL3007'],
    ['ARG without default', 'ARG IMG\nFROM ${IMG}\nUSER node\nHEALTHCHECK NONE\n', 'DL3006'],
    ['no USER', 'FROM node:20-bookworm-slim\nHEALTHCHECK NONE\n', 'DL3002'],
    ['USER root', 'FROM node:20-bookworm-slim\nUSER root\nHEALTHCHECK NONE\n', 'DL3002'],
    ['no HEALTHCHECK', 'FROM node:20-bookworm-slim\nUSER node\n', 'LB001'],
    ['recommends', 'FROM node:20-bookworm-slim\nRUN apt-get update && apt-get install -y curl && rm -rf /var/lib/apt/lists/*\nUSER node\nHEALTHCHECK NONE\n', 'DL3015'],
    ['lists kept', 'FROM node:20-bookworm-slim\nRUN apt-get update \\\n && apt-get install -y --no-install-recommends curl\nUSER node\nHEALTHCHECK NONE\n', 'DL3009'],
    ['no update', 'FROM node:20-bookworm-slim\nRUN apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\nUSER node\nHEALTHCHECK NONE\n', 'DL3009'],
    ['no -y', 'FROM node:20-bookworm-slim\nRUN apt-get update && apt-get install --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\nUSER node\nHEALTHCHECK NONE\n', 'DL3014'],
    ['upgrade', 'FROM node:20-bookworm-slim\nRUN apt-get update && apt-get upgrade -y\nUSER node\nHEALTHCHECK NONE\n', 'DL3005'],
    ['missing COPY source', 'FROM node:20-bookworm-slim\nCOPY no-such-dir ./\nUSER node\nHEALTHCHECK NONE\n', 'LB002'],
    ['ignored COPY source', 'FROM node:20-bookworm-slim\nCOPY README.md ./\nUSER node\nHEALTHCHECK NONE\n', 'LB002'],
    ['ignored directory', 'FROM node:20-bookworm-slim\nCOPY agent ./agent\nUSER node\nHEALTHCHECK NONE\n', 'LB002'],
    ['COPY --from unknown', 'FROM node:20-bookworm-slim\nCOPY --from=builder /src /app\nUSER node\nHEALTHCHECK NONE\n', 'DL3022'],
    ['ADD of a folder', 'FROM node:20-bookworm-slim\nADD service /app\nUSER node\nHEALTHCHECK NONE\n', 'DL3020'],
    ['two CMDs', 'FROM node:20-bookworm-slim\nCMD ["a"]\nCMD ["b"]\nUSER node\nHEALTHCHECK NONE\n', 'DL4003'],
    ['npm install', 'FROM node:20-bookworm-slim\nRUN npm install\nUSER node\nHEALTHCHECK NONE\n', 'LB005'],
    ['relative WORKDIR', 'FROM node:20-bookworm-slim\nWORKDIR app\nUSER node\nHEALTHCHECK NONE\n', 'DL3000'],
    ['unknown instruction', 'FROM node:20-bookworm-slim\nCOPYY a b\nUSER node\nHEALTHCHECK NONE\n', 'LB003'],
  ])('%s', (_name, dockerfile, rule) => {
    expect(lint(dockerfile)).toContain(rule);
  });

  it('a target inherits USER and HEALTHCHECK from the stage it is built on', () => {
    expect(lint('FROM node:20-bookworm-slim AS base\nUSER node\nHEALTHCHECK NONE\nFROM base AS app\nCMD ["x"]\n')).toEqual([]);
  });
});
