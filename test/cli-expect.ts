/** Expectations on a command's output shared by the CLI tests (vitest only: not for global setup or benches). */
import { expect } from 'vitest';
import type { CommandOutput } from './helpers.js';

/** The command refused: exit 1, one line on stderr matching pattern, no stack trace. */
export async function refused(run: Promise<CommandOutput>, pattern: RegExp): Promise<void> {
  const r = await run;
  expect(r.code, r.stderr).toBe(1);
  expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\bat .*\.ts:\d+/);
}
