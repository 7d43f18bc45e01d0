/**
 * Checks a command line that deployment material runs (a Dockerfile CMD, a compose command, a
 * Kubernetes container's args, a systemd ExecStart) against the real CLI: `bin/<cmd>.js <sub> --help`
 * must succeed and print the subcommand's usage, and every --option the line passes must be in it.
 * Output: a list of problems, empty when the line is right. Help texts are cached per subcommand.
 */
import { runBin } from '../helpers.js';

type Which = 'agent' | 'service';
const cache = new Map<string, Promise<{ code: number; text: string }>>();

function help(which: Which, sub: string): Promise<{ code: number; text: string }> {
  const key = `${which} ${sub}`;
  let p = cache.get(key);
  if (!p) {
    p = runBin(which, [sub, '--help']).then((r) => ({ code: r.code, text: r.stdout + r.stderr }));
    cache.set(key, p);
  }
  return p;
}

/** argv without the program name: [subcommand, ...options]. */
export async function checkCommandLine(which: Which, argv: string[]): Promise<string[]> {
  const program = which === 'agent' ? 'lifeboat-agent' : 'lifeboat-service';
  const [sub, ...rest] = argv;
  if (sub === undefined || sub.startsWith('-')) return [`${program}: no subcommand in ${JSON.stringify(argv)}`];
  const h = await help(which, sub);
  if (h.code !== 0 || !h.text.includes(`Usage: ${program} ${sub}`)) return [`${program} ${sub}: not a subcommand (${h.text.split('\n')[0]})`];
  const problems: string[] = [];
  for (const word of rest) {
    if (!word.startsWith('--')) continue;
    const flag = word.split('=')[0]!;
    if (!new RegExp(`(^|[\\s,])${flag.replace(/[-]/g, '\\-')}([\\s=<\\[]|$)`, 'm').test(h.text)) problems.push(`${program} ${sub}: no option ${flag}`);
  }
  return problems;
}

/** `lifeboat-service sub --opt ...` occurrences inside a shell command string. */
export function commandLinesIn(shell: string, program: 'lifeboat-service' | 'lifeboat-agent'): string[][] {
  const out: string[][] = [];
  for (const piece of shell.split(/&&|\|\||;|\||\{|\}/)) {
    const words = piece.trim().split(/\s+/);
    const at = words.indexOf(program);
    if (at >= 0) out.push(words.slice(at + 1).filter((w) => !/^[<>]|^\d?>/.test(w)).filter((w, i, a) => !(i > 0 && /^[<>]/.test(a[i - 1]!))));
  }
  return out;
}
