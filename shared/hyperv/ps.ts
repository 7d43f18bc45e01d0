/**
 * Writing PowerShell safely, for every script sent to a Hyper-V host (the service's hyperv failover
 * driver, the agent's hyperv source): every value is first checked against what it may be (a name
 * against a strict pattern, an integer in range) where it has a shape, and always written as a
 * PowerShell single-quoted literal, so a string from a tenant or an operator is only ever data.
 *
 * The quoting rule (psQuote): the text between single quotes, with every single-quote character
 * doubled. PowerShell takes five characters as single quotes: ' (U+0027), ‘ (U+2018), ’ (U+2019),
 * ‚ (U+201A) and ‛ (U+201B); each is doubled, as PowerShell's own
 * CodeGeneration.EscapeSingleQuotedStringContent does. Inside such a literal nothing is expanded:
 * `$(...)`, `$var`, backticks and semicolons are plain characters. Control characters (NUL, CR, LF, the
 * C0 and C1 sets, U+2028, U+2029) are refused outright: a script is one statement per line and no value
 * needs them.
 *
 * Failure: LifeboatError('invalid_argument') naming the field and the value (shortened).
 */
import { ErrInvalidArgument } from '../errors.js';

/** Hyper-V's VM names: at most 100 characters; ours start with a letter or digit and hold no spaces or wildcards. */
export const VmNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
/** Virtual switch names as the hoster configures them (spaces allowed, as in "Default Switch"; no wildcards). */
export const SwitchNamePattern = /^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,99}$/;
/** Failover ids and run ids in scripts and markers. */
export const IdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MaxLiteral = 4096;
const SingleQuotes = new Set(["'", '\u2018', '\u2019', '\u201a', '\u201b']);
// eslint-disable-next-line no-control-regex
const Refused = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** A PowerShell single-quoted literal holding exactly `value`. */
export function psQuote(value: string, field = 'value'): string {
  if (typeof value !== 'string') throw ErrInvalidArgument(`${field}: expected text`);
  if (value.length > MaxLiteral) throw ErrInvalidArgument(`${field}: longer than ${MaxLiteral} characters`);
  const bad = Refused.exec(value);
  if (bad) throw ErrInvalidArgument(`${field}: ${JSON.stringify(clip(value))} holds a control character (U+${bad[0].charCodeAt(0).toString(16).padStart(4, '0').toUpperCase()})`);
  let out = "'";
  for (const ch of value) out += SingleQuotes.has(ch) ? ch + ch : ch;
  return `${out}'`;
}

export function checkName(value: unknown, pattern: RegExp, field: string): string {
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw ErrInvalidArgument(`${field}: ${JSON.stringify(clip(String(value)))} is not allowed (letters, digits, '.', '_', '-'${pattern === SwitchNamePattern ? ', spaces, parentheses' : ''}; starting with a letter or digit)`);
  }
  return value;
}

export function checkInt(value: number, min: number, max: number, field: string): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) throw ErrInvalidArgument(`${field}: ${value} is not an integer from ${min} to ${max}`);
  return value;
}

/** A Windows path (`D:\Replica\…` or `\\server\share\…`) of our own making, quoted. */
export function checkWindowsPath(value: string, field: string): string {
  if (!/^(?:[A-Za-z]:\\|\\\\[A-Za-z0-9._-]+\\[A-Za-z0-9 ._$-]+\\)/.test(value) || /[<>"|?*]/.test(value.slice(2)) || value.includes('\\..\\')) {
    throw ErrInvalidArgument(`${field}: ${JSON.stringify(clip(value))} is not an absolute Windows path`);
  }
  return value;
}

/**
 * A script under construction: a header naming the step (the recording runner keys goldens on it),
 * `$ErrorActionPreference = 'Stop'` so any failing cmdlet ends it, the body in a try whose catch writes
 * the exception's message on stderr and exits 1, and one line of compressed JSON on stdout.
 */
export class Script {
  private readonly lines: string[] = [];

  constructor(readonly step: string, readonly vmName: string) {}

  /** Adds a line of PowerShell; values go in only through q(), never by concatenation of raw text. */
  add(line: string): this {
    this.lines.push(line);
    return this;
  }

  /**
   * Ends with `[pscustomobject]@{…} | ConvertTo-Json -Compress` for a hashtable body of PowerShell
   * expressions; `depth` for answers nested deeper than ConvertTo-Json's default of 2 levels (beyond
   * it, objects are written as their type name).
   */
  result(fields: Record<string, string>, depth?: number): this {
    const body = Object.entries(fields).map(([k, v]) => `${k} = ${v}`).join('; ');
    return this.add(`[pscustomobject]@{ ${body} } | ConvertTo-Json -Compress${depth === undefined ? '' : ` -Depth ${depth}`}`);
  }

  render(): string {
    return [
      `# lifeboat hyperv ${this.step}: ${this.vmName}`,
      "$ErrorActionPreference = 'Stop'",
      "$ProgressPreference = 'SilentlyContinue'",
      'try {',
      ...this.lines.map((l) => `  ${l}`),
      '} catch {',
      '  [Console]::Error.WriteLine($_.Exception.Message)',
      '  exit 1',
      '}',
      '',
    ].join('\n');
  }
}

/** The step a rendered script is for (its header line), or undefined. */
export function scriptStep(script: string): string | undefined {
  return /^# lifeboat hyperv ([a-z-]+):/.exec(script)?.[1];
}

/** Text shortened for a message. */
export function clip(text: string, max = 60): string {
  const s = String(text);
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}
