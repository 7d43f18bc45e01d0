/**
 * Runs PowerShell on a Windows Server Hyper-V host: the runner the service's hyperv failover driver
 * and the agent's hyperv source hand their scripts to.
 *
 * Input: a whole script (the caller quotes every value in it: ps.ts).
 * Output: the host's exit code, stdout and stderr, as text; a non-zero exit is an answer, not a throw.
 * Failure: only when the script could not be delivered (ssh missing, the connection refused or timed
 * out) as LifeboatError('unavailable') naming the host.
 *
 * Production: `SshHypervRunner`, OpenSSH's client to the OpenSSH server of Windows Server, one process
 * per script: `ssh user@host powershell -NoProfile -NonInteractive -EncodedCommand <base64 UTF-16LE>`.
 * The encoded command holds only [A-Za-z0-9+/=], so whatever shell the Windows side starts (cmd.exe by
 * default) passes it untouched. A script too long for cmd.exe's 8191-character command line goes on
 * stdin instead, read by a short encoded bootstrap.
 */
import { spawn } from 'node:child_process';
import { LifeboatError, ErrInvalidArgument } from '../errors.js';

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Something that runs a PowerShell script on one Hyper-V host. */
export interface HypervRunner {
  /** A name for messages: `hyperv host hv1.example`. */
  readonly host: string;
  run(script: string): Promise<RunResult>;
}

export interface SshHypervRunnerConfig {
  /** The Hyper-V host's DNS name or address. */
  host: string;
  /** The Windows account (a member of Hyper-V Administrators); `DOMAIN\user` is written `user@domain`. */
  user: string;
  port?: number;
  /** Private key for the account (BatchMode: no password prompts). */
  identityFile?: string;
  /** known_hosts holding the host's key; the key is checked strictly, never learnt. */
  knownHostsFile?: string;
  sshBinary?: string;
  /** Whole run, connection included (default 10 minutes: Stop-VM and Remove-VM can take a while). */
  timeoutMs?: number;
  connectTimeoutSec?: number;
}

/** cmd.exe's command line limit, less room for `powershell -NoProfile … -EncodedCommand `. */
export const MaxEncodedCommandChars = 8191 - 100;
const DefaultTimeoutMs = 10 * 60_000;
const MaxOutputBytes = 64 * 1024 * 1024;
const HostPattern = /^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$|^\[?[0-9A-Fa-f:.]+\]?$/;
const UserPattern = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;

/** PowerShell's -EncodedCommand form: the script as UTF-16LE, in base64. */
export function encodePowerShell(script: string): string {
  return Buffer.from(script, 'utf16le').toString('base64');
}

/** The stdin bootstrap: reads the whole script from stdin (UTF-8) and runs it as one script block. */
export const StdinBootstrap = "$ErrorActionPreference = 'Stop'; [Console]::InputEncoding = [Text.Encoding]::UTF8; $s = [Console]::In.ReadToEnd(); & ([scriptblock]::Create($s)); exit $LASTEXITCODE";

/** The remote command for a script, and what goes on stdin (empty when the script fits the command line). */
export function powershellCommand(script: string): { command: string; stdin: string } {
  const encoded = encodePowerShell(script);
  const prefix = 'powershell -NoProfile -NonInteractive -EncodedCommand ';
  if (prefix.length + encoded.length <= MaxEncodedCommandChars) return { command: prefix + encoded, stdin: '' };
  return { command: prefix + encodePowerShell(StdinBootstrap), stdin: script };
}

export class SshHypervRunner implements HypervRunner {
  readonly host: string;

  constructor(private readonly config: SshHypervRunnerConfig) {
    if (!HostPattern.test(config.host)) throw ErrInvalidArgument(`hyperv host: ${JSON.stringify(config.host)} is not a host name or address`);
    if (!UserPattern.test(config.user)) throw ErrInvalidArgument(`hyperv host ${config.host}: user ${JSON.stringify(config.user)} may hold only letters, digits, '.', '_', '@' and '-'`);
    if (config.port !== undefined && !(Number.isInteger(config.port) && config.port > 0 && config.port < 65536)) throw ErrInvalidArgument(`hyperv host ${config.host}: port ${config.port} is out of range`);
    this.host = config.host;
  }

  /** ssh's argument list for a remote command (exported for its test). */
  sshArgs(command: string): string[] {
    const c = this.config;
    const args = ['-T', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o', `ConnectTimeout=${c.connectTimeoutSec ?? 15}`];
    if (c.knownHostsFile) args.push('-o', `UserKnownHostsFile=${c.knownHostsFile}`);
    if (c.identityFile) args.push('-i', c.identityFile, '-o', 'IdentitiesOnly=yes');
    if (c.port) args.push('-p', String(c.port));
    args.push('--', `${c.user}@${c.host}`, command);
    return args;
  }

  run(script: string): Promise<RunResult> {
    const { command, stdin } = powershellCommand(script);
    const binary = this.config.sshBinary ?? 'ssh';
    const timeoutMs = this.config.timeoutMs ?? DefaultTimeoutMs;
    return new Promise<RunResult>((resolve, reject) => {
      const child = spawn(binary, this.sshArgs(command), { stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let size = 0;
      const keep = (into: Buffer[]) => (b: Buffer) => {
        size += b.length;
        if (size <= MaxOutputBytes) into.push(b);
      };
      child.stdout.on('data', keep(out));
      child.stderr.on('data', keep(err));
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new LifeboatError('unavailable', `hyperv host ${this.host}: no answer within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(new LifeboatError('unavailable', `hyperv host ${this.host}: cannot run ${binary}: ${e.message}`, { cause: e }));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const stderr = Buffer.concat(err).toString('utf8');
        // ssh itself exits 255 when it could not connect or authenticate.
        if (code === 255) return reject(new LifeboatError('unavailable', `hyperv host ${this.host}: ssh: ${lastLine(stderr) || 'connection failed'}`));
        resolve({ exitCode: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr });
      });
      child.stdin.on('error', () => undefined); // a host that closes early shows in the exit code
      child.stdin.end(stdin);
    });
  }
}

function lastLine(text: string): string {
  return text.trim().split(/\r?\n/).pop() ?? '';
}
