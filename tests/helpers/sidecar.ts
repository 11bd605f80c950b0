/** Start a real sidecar on 127.0.0.1:0 for integration tests, with a silent logger. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadServerConfig } from '../../src/server/config';
import { createLogger } from '../../src/server/logger';
import { startSidecar, type RunningSidecar, type SidecarOptions } from '../../src/server/sidecar';

export async function startTestSidecar(extra: Partial<SidecarOptions> & { simulate?: boolean } = {}): Promise<RunningSidecar> {
  const { simulate = true, ...rest } = extra;
  const config = loadServerConfig({ port: '0', simulate }, {});
  const securityContextDir = rest.securityContextDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'skr-test-ctx-'));
  return startSidecar({ config, logger: createLogger({ silent: true }), securityContextDir, ...rest });
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new Error(`non-JSON answer ${res.status}: ${text.slice(0, 200)}`);
  }
  return { status: res.status, json };
}
