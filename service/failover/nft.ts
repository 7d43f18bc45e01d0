/**
 * Runs nftables on the failover host: a script through `nft -f -` (one kernel transaction: all of it
 * or none), the tables there are (`nft -j list tables`), one table's rules. With a network namespace
 * configured, every call runs inside it (`ip netns exec NS nft …`): tests give the host a namespace of
 * their own, and a host that routes its public addresses in a namespace names it.
 * Failure: nft missing is one line saying what to install; nft refusing a script is its own message.
 */
import { spawn } from 'node:child_process';
import { LifeboatError } from '../../shared/errors.js';

export interface NftOptions {
  /** The nft binary (default nft). */
  binary?: string | undefined;
  /** The network namespace to run in (ip netns), else the host's own. */
  netns?: string | undefined;
}

export interface NftTable {
  family: string;
  name: string;
}

const TimeoutMs = 30_000;

export class Nft {
  constructor(private readonly options: NftOptions = {}) {}

  /** Runs a script in one transaction. */
  async apply(script: string): Promise<void> {
    await this.run(['-f', '-'], script);
  }

  async tables(): Promise<NftTable[]> {
    const out = await this.run(['-j', 'list', 'tables']);
    const parsed = JSON.parse(out) as { nftables?: { table?: NftTable }[] };
    return (parsed.nftables ?? []).flatMap((x) => (x.table ? [{ family: x.table.family, name: x.table.name }] : []));
  }

  /** One table's rules as nft prints them, or undefined when there is no such table. */
  async listTable(family: string, name: string): Promise<string | undefined> {
    if (!(await this.tables()).some((t) => t.family === family && t.name === name)) return undefined;
    return this.run(['list', 'table', family, name]);
  }

  private run(args: string[], input?: string): Promise<string> {
    const binary = this.options.binary ?? 'nft';
    const [cmd, argv] = this.options.netns ? ['ip', ['netns', 'exec', this.options.netns, binary, ...args]] : [binary, args];
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], timeout: TimeoutMs });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      child.stderr.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-4000); });
      child.on('error', (e: NodeJS.ErrnoException) => {
        reject(e.code === 'ENOENT'
          ? new LifeboatError('unavailable', `${cmd} is not installed (Debian: apt-get install nftables${cmd === 'ip' ? ' iproute2' : ''}), so this host cannot apply public addresses`, { cause: e })
          : e);
      });
      child.on('close', (code, signal) => {
        if (code === 0) return resolve(out);
        const first = err.split('\n').find((l) => l.trim().length > 0) ?? `exit ${code ?? signal}`;
        const missing = /No such file or directory|not found/i.test(first) && /exec/.test(first);
        reject(new LifeboatError(missing ? 'unavailable' : 'io', `nft ${args.join(' ')}${this.options.netns ? ` (in netns ${this.options.netns})` : ''}: ${first.trim()}`));
      });
      child.stdin.on('error', () => { /* nft exited before reading everything: its exit says why */ });
      child.stdin.end(input ?? '');
    });
  }
}
