/**
 * infra/windows/lifeboat-agent.xml (the WinSW service definition of the agent): the state directory it
 * gives the agent is the one the agent defaults to on Windows (agent/state/paths.ts), under
 * C:\ProgramData; the command it runs is a real subcommand; the XML is well formed for the elements
 * WinSW reads. No Windows machine runs here: the service itself is not installed by a test.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultStateDir } from '../../agent/state/paths.js';
import { checkCommandLine } from './cli.js';

const repo = resolve(import.meta.dirname, '..', '..');
const xml = readFileSync(resolve(repo, 'infra/windows/lifeboat-agent.xml'), 'utf8');
const winEnv = { ProgramData: 'C:\\ProgramData', ProgramFiles: 'C:\\Program Files' };
const expand = (s: string) => s.replace(/%([A-Za-z]+)%/g, (_, v: string) => winEnv[v as keyof typeof winEnv] ?? `%${v}%`);
const element = (name: string) => {
  const all = [...xml.matchAll(new RegExp(`<${name}>([^<]*)</${name}>`, 'g'))].map((m) => m[1]!.trim());
  expect(all.length, `<${name}>`).toBe(1);
  return all[0]!;
};

describe('infra/windows/lifeboat-agent.xml', () => {
  it('is well formed: every element opened is closed, in order', () => {
    const body = xml.replace(/<!--[\s\S]*?-->/g, '');
    const stack: string[] = [];
    for (const m of body.matchAll(/<(\/?)([A-Za-z]+)[^>]*?(\/?)>/g)) {
      if (m[3] === '/') continue;
      if (m[1] === '/') expect(stack.pop()).toBe(m[2]);
      else stack.push(m[2]!);
    }
    expect(stack).toEqual([]);
    expect(element('id')).toBe('lifeboat-agent');
  });

  it('gives the agent the state directory it defaults to on Windows, under ProgramData', () => {
    const state = /<env name="LIFEBOAT_AGENT_STATE" value="([^"]+)"/.exec(xml)![1]!;
    const dflt = defaultStateDir({ platform: 'win32', env: winEnv, uid: undefined, home: 'C:\\Users\\x' });
    expect(expand(state)).toBe(dflt);
    expect(dflt).toBe('C:\\ProgramData\\lifeboat\\agent');
    expect(expand(element('workingdirectory'))).toBe(dflt);
  });

  it('runs node on the agent with a real subcommand', async () => {
    expect(expand(element('executable'))).toBe('C:\\Program Files\\nodejs\\node.exe');
    const args = /^"([^"]+)"\s+(.*)$/.exec(element('arguments'))!;
    expect(expand(args[1]!)).toMatch(/\\bin\\lifeboat-agent\.js$/);
    expect(await checkCommandLine('agent', args[2]!.split(/\s+/))).toEqual([]);
  });
});
