/**
 * The S3 and Azure emulators the object-store tests run against, each started by the test file on a
 * port the OS picks and stopped afterwards. s3rver runs in-process; Azurite (3.35, the last for
 * Node 20) runs as a child process with in-memory persistence.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { scratchDir } from '../helpers.js';

export interface Emulator {
  /** The object store URL of a fresh bucket/container with its endpoint and credentials. */
  url: string;
  /** Environment the adapter reads credentials from. */
  env: NodeJS.ProcessEnv;
  stop: () => Promise<void>;
}

interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance;

/** s3rver's fixed credentials. */
const s3rverEnv = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };

export async function startS3rver(bucket = 'lifeboat-test'): Promise<Emulator> {
  const dir = await scratchDir('lifeboat-s3rver-');
  const S3rver = createRequire(import.meta.url)('s3rver') as S3rverClass;
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir.path, configureBuckets: [{ name: bucket }] });
  const { port } = await server.run().catch(async (err: unknown) => {
    await dir.remove();
    throw err;
  });
  return {
    url: `s3://${bucket}/pfx?endpoint=http://127.0.0.1:${port}&region=us-east-1&forcePathStyle=true`,
    env: { ...process.env, ...s3rverEnv },
    stop: async () => {
      await server.close();
      await dir.remove();
    },
  };
}

/** Azurite's well-known development account. */
const azuriteAccount = 'devstoreaccount1';
const azuriteKey = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export async function startAzurite(container = 'lifeboat-test'): Promise<Emulator> {
  const dir = await scratchDir('lifeboat-azurite-');
  const bin = join(process.cwd(), 'node_modules', '.bin', 'azurite-blob');
  const child = spawn(bin, ['--skipApiVersionCheck', '--disableTelemetry', '--inMemoryPersistence', '--blobHost', '127.0.0.1', '--blobPort', '0'], {
    cwd: dir.path,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  const stop = async () => {
    child.kill('SIGTERM');
    await exited;
    await dir.remove();
  };
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = /successfully listens on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        // Keep draining its output (so a full pipe never stalls it) without keeping it.
        child.stdout.off('data', onData);
        child.stdout.resume();
        resolve(Number(m[1]));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (b: Buffer) => { out += b.toString(); });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`azurite-blob exited (${code}) before listening: ${out.trim().slice(-500)}`)));
  }).catch(async (err: unknown) => {
    await stop();
    throw err;
  });
  const endpoint = `http://127.0.0.1:${port}/${azuriteAccount}`;
  const service = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(azuriteAccount, azuriteKey));
  await service.getContainerClient(container).createIfNotExists().catch(async (err: unknown) => {
    await stop();
    throw err;
  });
  return {
    // Small list pages so the conformance suite's 1005 keys cross several pages.
    url: `azure://${azuriteAccount}/${container}/pfx?endpoint=${encodeURIComponent(endpoint)}&listPageSize=300`,
    env: { ...process.env, AZURE_STORAGE_KEY: azuriteKey, AZURE_STORAGE_CONNECTION_STRING: undefined },
    stop,
  };
}

/** CI must run the emulator suites: a skip there is a failure. */
export const emulatorsMustRun = process.env.CI === 'true' || process.env.CI === '1';
