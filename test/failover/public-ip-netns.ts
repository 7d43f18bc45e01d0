/**
 * Network namespaces for the public-address tests, made and removed by the test on this machine; no
 * traffic leaves it, and every address is from a documentation range:
 *
 *   client ns  c0 198.51.100.2/24, 2001:db8:c::2/64        ("the Internet"; default route via the router)
 *      │ veth
 *   router ns  up0 198.51.100.1/24, 2001:db8:c::1/64       (the failover host: forwards, runs nft)
 *              dr0 192.0.2.1/24, 2001:db8:d::1/64
 *      │ veth
 *   vm ns      v0 192.0.2.10/24, 2001:db8:d::10/64        (the failed-over VM's DR address; default route via the router)
 *
 * Peers are small node programs run inside a namespace (`ip netns exec NS node -e …`): a TCP and UDP
 * server that answers with the address it saw, and a one-shot client that prints what it got as JSON.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/** How long a connection that must be answered may wait (the first packet of a family waits for neighbour discovery; a loaded machine is slow). */
export const Answered = 10_000;

export const Client4 = '198.51.100.2';
export const Client6 = '2001:db8:c::2';
export const Vm4 = '192.0.2.10';
export const Vm6 = '2001:db8:d::10';

/** Why namespaces with nftables cannot be made here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  for (const [cmd, args, pkg] of [['ip', ['-V'], 'iproute2'], ['nft', ['--version'], 'nftables']] as const) {
    try {
      execFileSync(cmd, args, { stdio: 'ignore' });
    } catch {
      return `${cmd} is not installed (apt-get install ${pkg})`;
    }
  }
  const probe = `lbprobe${randomBytes(3).toString('hex')}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'ignore' });
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'ignore' });
  } catch (err) {
    return `ip netns add failed here: ${(err as Error).message.split('\n')[0]}`;
  }
  return undefined;
}

const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

export class Namespaces {
  private readonly children: ChildProcess[] = [];

  private constructor(readonly client: string, readonly router: string, readonly vm: string) {}

  static make(): Namespaces {
    const id = randomBytes(3).toString('hex');
    const n = new Namespaces(`lbc${id}`, `lbr${id}`, `lbv${id}`);
    try {
      for (const ns of [n.client, n.router, n.vm]) {
        sh(['ip', 'netns', 'add', ns]);
        n.exec(ns, ['ip', 'link', 'set', 'lo', 'up']);
      }
      sh(['ip', 'link', 'add', 'c0', 'netns', n.client, 'type', 'veth', 'peer', 'name', 'up0', 'netns', n.router]);
      sh(['ip', 'link', 'add', 'v0', 'netns', n.vm, 'type', 'veth', 'peer', 'name', 'dr0', 'netns', n.router]);
      const addr = (ns: string, dev: string, ...cidrs: string[]) => {
        for (const c of cidrs) n.exec(ns, ['ip', 'addr', 'add', c, 'dev', dev, ...(c.includes(':') ? ['nodad'] : [])]);
        n.exec(ns, ['ip', 'link', 'set', dev, 'up']);
      };
      addr(n.client, 'c0', `${Client4}/24`, `${Client6}/64`);
      addr(n.router, 'up0', '198.51.100.1/24', '2001:db8:c::1/64');
      addr(n.router, 'dr0', '192.0.2.1/24', '2001:db8:d::1/64');
      addr(n.vm, 'v0', `${Vm4}/24`, `${Vm6}/64`);
      n.exec(n.client, ['ip', 'route', 'add', 'default', 'via', '198.51.100.1']);
      n.exec(n.client, ['ip', '-6', 'route', 'add', 'default', 'via', '2001:db8:c::1']);
      n.exec(n.vm, ['ip', 'route', 'add', 'default', 'via', '192.0.2.1']);
      n.exec(n.vm, ['ip', '-6', 'route', 'add', 'default', 'via', '2001:db8:d::1']);
      n.exec(n.router, ['sh', '-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding']);
    } catch (err) {
      n.remove();
      throw err;
    }
    return n;
  }

  exec(ns: string, args: string[]): string {
    return sh(['ip', 'netns', 'exec', ns, ...args]);
  }

  /** The names of the nftables tables in a namespace. */
  tables(ns: string): string[] {
    return this.exec(ns, ['nft', 'list', 'tables']).split('\n').filter((l) => l.startsWith('table ')).map((l) => l.split(' ').pop()!);
  }

  /**
   * Starts a server in a namespace that answers every TCP connection on the given ports, and every
   * UDP datagram on udpPort, with `<label> <the peer address it saw>`; resolves once it listens.
   */
  async serve(ns: string, label: string, tcpPorts: number[], udpPort?: number): Promise<void> {
    const program = `
      const net = require('node:net'); const dgram = require('node:dgram');
      const [label, tcp, udp] = [process.argv[1], JSON.parse(process.argv[2]), Number(process.argv[3])];
      let pending = tcp.length + (udp ? 1 : 0);
      const up = () => { if (--pending === 0) console.log('listening'); };
      for (const port of tcp) net.createServer((s) => { s.end(label + ' ' + s.remoteAddress.replace(/^::ffff:/, '') + '\\n'); }).listen(port, '::', up);
      if (udp) { const u = dgram.createSocket({ type: 'udp6' }); u.on('message', (m, r) => u.send(label + ' ' + r.address.replace(/^::ffff:/, ''), r.port, r.address)); u.bind(udp, '::', up); }`;
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', program, label, JSON.stringify(tcpPorts), String(udpPort ?? 0)], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.push(child);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('listening')) resolve(); });
      child.once('exit', (code) => reject(new Error(`server in ${ns} exited ${code}: ${err}`)));
    });
  }

  /**
   * One connection from a namespace: TCP (connect, read until the server closes) or UDP (one
   * datagram, one answer). `{ ok: true, text }`, or `{ ok: false, error }` (refused, or nothing
   * within waitMs: a dropped packet gives no answer at all).
   */
  connect(ns: string, proto: 'tcp' | 'udp', host: string, port: number, waitMs = 1500): { ok: true; text: string } | { ok: false; error: string } {
    const program = `
      const [proto, host, port, wait] = [process.argv[1], process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
      const done = (r) => { console.log(JSON.stringify(r)); process.exit(0); };
      setTimeout(() => done({ ok: false, error: 'no answer' }), wait);
      if (proto === 'tcp') {
        let text = '';
        const s = require('node:net').connect({ host, port }, () => {});
        s.on('data', (d) => { text += d; }); s.on('end', () => done({ ok: true, text: text.trim() })); s.on('error', (e) => done({ ok: false, error: e.code }));
      } else {
        const u = require('node:dgram').createSocket(host.includes(':') ? 'udp6' : 'udp4');
        u.on('message', (m) => done({ ok: true, text: m.toString() })); u.on('error', (e) => done({ ok: false, error: e.code }));
        u.send('hello', port, host);
      }`;
    return JSON.parse(this.exec(ns, [process.execPath, '-e', program, proto, host, String(port), String(waitMs)])) as { ok: true; text: string } | { ok: false; error: string };
  }

  /** Ends the servers it started (by their pids) and deletes the namespaces. */
  remove(): void {
    for (const c of this.children) if (c.exitCode === null && c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
    for (const ns of [this.client, this.router, this.vm]) {
      try {
        sh(['ip', 'netns', 'del', ns]);
      } catch { /* never made */ }
    }
  }
}
