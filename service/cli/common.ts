/**
 * What the admin subcommands share: the --config option and a client of the running service's
 * operator API, authenticated with the admin token from the config. A service that is not running
 * is one clear line, not a stack.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { LifeboatError } from '../../shared/errors.js';
import type { Config } from '../config/config.js';
import { loadConfig } from '../config/config.js';
import { errorLine } from '../http/problem.js';

export const ConfigOptionHelp = 'configuration file (default: $LIFEBOAT_CONFIG)';

/** Adds --config to a command. */
export function withConfig(cmd: Command): Command {
  return cmd.option('--config <file>', ConfigOptionHelp);
}

export interface ApiClient {
  call<T>(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, body?: unknown, headers?: Record<string, string>): Promise<T>;
  /** A GET answered in another format than JSON (CSV): the body as text; an error is still JSON. */
  getText(path: string, accept: string): Promise<string>;
}

export async function apiClient(configOption: string | undefined): Promise<ApiClient> {
  const config: Config = await loadConfig(configOption);
  const token = (await readFile(config.adminTokenFile, 'utf8')).trim();
  const host = config.api.host === '0.0.0.0' || config.api.host === '::' ? '127.0.0.1' : config.api.host;
  const base = `http://${host.includes(':') ? `[${host}]` : host}:${config.api.port}`;
  const send = async (method: string, path: string, init: RequestInit): Promise<Response> => {
    try {
      return await fetch(`${base}${path}`, { method, ...init });
    } catch (err) {
      throw new LifeboatError('unavailable', `the service is not running at ${base} (start it with lifeboat-service serve --config ${config.path})`, { cause: err });
    }
  };
  return {
    async call<T>(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, body?: unknown, headers?: Record<string, string>): Promise<T> {
      const res = await send(method, path, {
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return jsonAnswer<T>(method, path, res);
    },
    async getText(path: string, accept: string): Promise<string> {
      const res = await send('GET', path, { headers: { authorization: `Bearer ${token}`, accept } });
      if (res.ok) return res.text();
      return jsonAnswer<never>('GET', path, res);
    },
  };
}

/** A JSON answer's body, or its refusal as one LifeboatError. */
async function jsonAnswer<T>(method: string, path: string, res: Response): Promise<T> {
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new LifeboatError('io', `${method} ${path}: HTTP ${res.status} with a body that is not JSON`);
  }
  // Problem details (docs/api.md, Errors): the detail is the one line to print.
  if (!res.ok) throw new LifeboatError('invalid_argument', errorLine(json) ?? `HTTP ${res.status}`, { status: res.status });
  return json as T;
}
