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
  const ownDir = rest.securityContextDir ? undefined : fs.mkdtempSync(path.join(os.tmpdir(), 'skr-test-ctx-'));
  const removeOwnDir = () => ownDir && fs.rmSync(ownDir, { recursive: true, force: true });
  let sidecar: RunningSidecar;
  try {
    sidecar = await startSidecar({ config, logger: createLogger({ silent: true }), securityContextDir: ownDir, ...rest });
  } catch (e) {
    removeOwnDir();
    throw e;
  }
  // The directory made here goes when the sidecar does.
  const close = sidecar.close;
  return Object.assign(sidecar, { close: () => close().finally(removeOwnDir) });
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

/** A start-up's rejection; a sidecar that started anyway is closed (so a regression fails, not hangs). */
export async function startError(opts: SidecarOptions): Promise<unknown> {
  try {
    const s = await startSidecar(opts);
    await s.close();
    s.logger.close();
    return new Error('the sidecar started');
  } catch (e) {
    return e;
  }
}
