/**
 * Readiness probes of a failed-over VM (FailoverDriver.waitReady). Each probe is retried until it
 * answers or its caller gives up:
 * - guest-agent: connect to the VM's qga.sock, guest-sync-delimited, guest-ping;
 * - console: a regular expression over console.log from this run's start, read as it grows;
 * - tcp: a connection to host:port that opens.
 */
import { open } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { GuestAgentClient } from '../../../shared/qmp/client.js';
import { sleep, workFiles } from './qemu-files.js';
import type { ReadyProbe } from './types.js';

const RetryMs = 250;
const AttemptTimeoutMs = 2_000;
/** The console text kept for matching: a pattern spanning more than this is not found. */
const ConsoleWindow = 256 * 1024;

/** Retries `probe` until it answers (resolves with what answered) or `giveUp()` holds (undefined). */
export async function probeUntil(workDir: string, consoleOffset: number, probe: ReadyProbe, giveUp: () => boolean): Promise<string | undefined> {
  let consoleText = '';
  let consoleAt = consoleOffset;
  const pattern = probe.kind === 'console' ? new RegExp(probe.pattern, 'm') : undefined;
  while (!giveUp()) {
    switch (probe.kind) {
      case 'guest-agent':
        if (await guestAgentAnswers(join(workDir, workFiles.qga))) return 'guest agent answered guest-ping';
        break;
      case 'console': {
        const more = await readFrom(join(workDir, workFiles.console), consoleAt);
        consoleAt += more.length;
        consoleText = (consoleText + more.toString('latin1')).slice(-ConsoleWindow);
        const m = pattern!.exec(consoleText);
        if (m) return `console matched /${probe.pattern}/: ${m[0].trim().slice(0, 200)}`;
        break;
      }
      case 'tcp':
        if (await tcpAnswers(probe.host, probe.port)) return `tcp ${probe.host}:${probe.port} answered`;
        break;
    }
    await sleep(RetryMs);
  }
  return undefined;
}

async function guestAgentAnswers(socket: string): Promise<boolean> {
  const agent = await GuestAgentClient.connect(socket, { timeoutMs: AttemptTimeoutMs }).catch(() => undefined);
  if (!agent) return false;
  try {
    await agent.ping({ timeoutMs: AttemptTimeoutMs });
    return true;
  } catch {
    return false;
  } finally {
    agent.close();
  }
}

/** What a growing file holds from `offset` on (nothing when it does not exist yet). */
async function readFrom(path: string, offset: number): Promise<Buffer> {
  const fh = await open(path, 'r').catch(() => undefined);
  if (!fh) return Buffer.alloc(0);
  try {
    const parts: Buffer[] = [];
    const buf = Buffer.alloc(64 * 1024);
    for (let at = offset; ;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, at);
      if (bytesRead === 0) break;
      parts.push(Buffer.from(buf.subarray(0, bytesRead)));
      at += bytesRead;
    }
    return Buffer.concat(parts);
  } finally {
    await fh.close();
  }
}

function tcpAnswers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    const done = (ok: boolean) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(1_000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}
