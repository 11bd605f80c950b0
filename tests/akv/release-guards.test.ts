/** Release-path guards found in review: the released key must be the one asked for, and a refusal's
 * diagnosis must not hold a release slot past the request's deadline. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkReleasedKid } from '../../src/akv/release';
import { parseEndpoint } from '../../src/common/endpoint';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import { createLogger } from '../../src/server/logger';
import { postJson } from '../helpers/sidecar';

describe('checkReleasedKid', () => {
  const url = parseEndpoint('akv', 'https://myvault.vault.azure.net');
  it('accepts the key that was asked for (any version, or the requested one)', () => {
    expect(() => checkReleasedKid('https://myvault.vault.azure.net/keys/k1/abc123', url, 'k1', undefined)).not.toThrow();
    expect(() => checkReleasedKid('https://MYVAULT.vault.azure.net:443/keys/K1/ABC123', url, 'k1', 'abc123')).not.toThrow();
  });
  it.each([
    ['another vault', 'https://other.vault.azure.net/keys/k1/abc123', undefined],
    ['another key', 'https://myvault.vault.azure.net/keys/k2/abc123', undefined],
    ['another version', 'https://myvault.vault.azure.net/keys/k1/def456', 'abc123'],
    ['no key id', undefined, undefined],
    ['not a URL', 'k1', undefined],
  ])('refuses %s with step release-kid', (_n, kid, version) => {
    expect(() => checkReleasedKid(kid, url, 'k1', version)).toThrow(expect.objectContaining({ step: 'release-kid' }));
  });
});

describe('a refused release whose diagnosis hangs', () => {
  let stack: LocalStack;
  let dir: string;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-guards-'));
    stack = await startLocalStack({
      stateDir: dir,
      port: 0,
      logger: createLogger({ silent: true }),
      limits: { requestDeadlineMs: 1500, maxInFlightReleases: 1, maxQueuedReleases: 0 },
    });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers 504 at the deadline and frees its slot for the next request', async () => {
    const body = { maa_endpoint: stack.state.maaEndpoint, akv_endpoint: stack.state.vaultEndpoint, kid: 'no-such-key' };
    // Warm MAA and identity so the deadline is spent where the test puts it (on a loaded machine a
    // warm-up can itself hit the 1.5 s deadline: try again until one completes).
    let warm = 0;
    for (let i = 0; i < 5 && warm !== 403; i++) warm = (await postJson(`${stack.sidecar.url}/key/release`, body)).status;
    expect(warm).toBe(403);
    // A warm-up cut off by the deadline may still be talking to the vault: the faults below are for
    // the next request only, so wait until no release holds a slot.
    let idle = false;
    for (let i = 0; i < 500 && !idle; i++) {
      idle = /^skr_in_flight\{what="releases"\} 0$/m.test(await (await fetch(`${stack.sidecar.url}/metrics`)).text());
      if (!idle) await new Promise((r) => setTimeout(r, 10));
    }
    expect(idle).toBe(true);
    stack.vault.faults.inject({ route: 'release', kind: 'status', status: 403, times: 1 });
    stack.vault.faults.inject({ route: 'get', kind: 'hang', times: 1 });
    const first = await postJson(`${stack.sidecar.url}/key/release`, body);
    expect(first.status).toBe(504);
    // The slot is free again: the next request is served (the key does not exist: 403), not refused with 429.
    const next = await postJson(`${stack.sidecar.url}/key/release`, body);
    expect(next.status).toBe(403);
  });
});
