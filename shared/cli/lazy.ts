/**
 * Commands whose modules load only when the command line names them. The program knows every
 * top-level command by name and description up front, which is all its --help lists; a command's
 * module, and what that imports (disk formats, the AWS SDK, PGlite, bullmq...), is imported only to
 * run that command or print its own help. So `--help` costs commander alone and `status` what
 * status needs (docs/operations.md "Start time").
 */
import type { Command } from 'commander';

export interface LazyCommand {
  /** Its name and arguments as its module declares them ('points <vm>'), for the listing. */
  command: string;
  /** Listed by the program's --help before the module is loaded: the same text the module gives the command (test/cli/lazy.test.ts). */
  description: string;
  /** A group of subcommands (disk, log): the command is made here and handed to register, which adds its subcommands. */
  group?: true;
  /** Imports the command's modules and returns what adds the command to the program (or, for a group, its subcommands to it). */
  load(): Promise<(parent: Command) => void>;
}

/**
 * Adds the command the arguments name in full (with whatever else its module registers) and every
 * other one by name and description alone. `help NAME` names NAME.
 */
export async function addCommands(program: Command, commands: readonly LazyCommand[], args: readonly string[] = process.argv.slice(2)): Promise<void> {
  const words = args.filter((a) => !a.startsWith('-'));
  const named = words[0] === 'help' ? words[1] : words[0];
  const wanted = commands.find((c) => nameOf(c) === named);
  if (wanted) await addInFull(program, wanted);
  for (const c of commands) {
    if (!has(program, nameOf(c))) program.command(c.command).description(c.description);
  }
}

/** Every command in full, in the table's order: what the program is when all of it is loaded. */
export async function addAllCommands(program: Command, commands: readonly LazyCommand[]): Promise<void> {
  for (const c of commands) {
    if (!has(program, nameOf(c))) await addInFull(program, c);
  }
}

async function addInFull(program: Command, c: LazyCommand): Promise<void> {
  const register = await c.load();
  register(c.group ? program.command(c.command).description(c.description) : program);
}

export function nameOf(c: LazyCommand): string {
  return c.command.split(' ')[0]!;
}

function has(program: Command, name: string): boolean {
  return program.commands.some((c) => c.name() === name);
}
