import type { Command} from 'commander';
import { CommanderError } from 'commander';
import { userMessage } from '../errors.js';

/**
 * Runs a commander program the way every lifeboat command behaves: a user's mistake is one line on
 * stderr and exit 2 (usage) or 1 (anything else); a bug keeps its stack.
 */
export async function runProgram(program: Command, argv = process.argv): Promise<void> {
  program.exitOverride();
  program.configureOutput({ outputError: (str, write) => write(str) });
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end through here with exit code 0.
      process.exitCode = err.exitCode;
      return;
    }
    const msg = userMessage(err);
    if (msg !== undefined) {
      process.stderr.write(`${program.name()}: ${msg}\n`);
      process.exitCode = 1;
      return;
    }
    throw err;
  }
}

/** Sets an exit code without throwing, for commands whose answer is the code (disk compare). */
export function exitWith(code: number): void {
  process.exitCode = code;
}

/** Prints a value as JSON on stdout, for --json. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
