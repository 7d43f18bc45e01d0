/**
 * The commands loaded lazily (shared/cli/lazy.ts) make the same program as all of them loaded: the
 * listing --help prints before any module loads names each command with the arguments and the
 * description its module gives it, and a command named on the command line is complete (options,
 * subcommands, and what other modules add to it, such as `failover plan-ip`).
 */
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { agentCommands } from '../../agent/cli/commands.js';
import type { LazyCommand } from '../../shared/cli/lazy.js';
import { addAllCommands, addCommands, nameOf } from '../../shared/cli/lazy.js';
import { serviceCommands } from '../../service/cli/commands.js';

/** An argument as the usage line shows it: <vm>, [token], <files...>. */
const usage = (c: Command) => c.registeredArguments.map((a) => (a.required ? `<${a.name()}${a.variadic ? '...' : ''}>` : `[${a.name()}${a.variadic ? '...' : ''}]`));

interface Shape { name: string; args: string[]; description: string; options: string[]; commands: Shape[] }

function shape(c: Command): Shape {
  return { name: c.name(), args: usage(c), description: c.description(), options: c.options.map((o) => o.flags), commands: c.commands.map(shape) };
}

const listing = (p: Command) => p.commands.map((c) => ({ name: c.name(), args: usage(c), description: c.description() }));

describe.each([['lifeboat-agent', agentCommands], ['lifeboat-service', serviceCommands]] as [string, readonly LazyCommand[]][])('%s', (_, commands) => {
  it('lists every command as its module makes it, loading none', async () => {
    const full = new Command();
    await addAllCommands(full, commands);
    const stubs = new Command();
    await addCommands(stubs, commands, ['--help']);
    expect(listing(stubs)).toEqual(listing(full));
    expect(stubs.commands.every((c) => c.commands.length === 0 && c.options.length === 0)).toBe(true);
  });

  it('makes each command named on the command line (also after help) complete', async () => {
    const full = new Command();
    await addAllCommands(full, commands);
    expect(full.commands.length).toBe(commands.length);
    for (const c of commands) {
      for (const args of [[nameOf(c), '--json'], ['help', nameOf(c)]]) {
        const lazy = new Command();
        await addCommands(lazy, commands, args);
        const named = lazy.commands.find((x) => x.name() === nameOf(c))!;
        expect(shape(named), args.join(' ')).toEqual(shape(full.commands.find((x) => x.name() === nameOf(c))!));
        expect(lazy.commands.map((x) => x.name()).sort()).toEqual(full.commands.map((x) => x.name()).sort());
      }
    }
  });
});
