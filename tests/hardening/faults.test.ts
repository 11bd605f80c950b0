/**
 * Fault suite (issue 6): each emulator fault, the sidecar's documented answer (recovered by retry,
 * or a precise 4xx/5xx), and a normal release right after. Then: nothing leaves for a host that is
 * not allowlisted, /status shows the failing upstream, /metrics moved, and no key or token handled
 * here reached a log line.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { providerCredential } from '../../src/akv/credentials';
import { TokenProvider } from '../../src/akv/identity';
import { importReleasableKey, sdkJwkFor } from '../../src/akv/import-key';
import { buildReleasePolicy } from '../../src/akv/policy';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import type { Fault } from '../../src/emulators/faults';
import { postJson } from '../helpers/sidecar';
import { capturingLogger } from './log-capture';

// Short enough to keep the three hang cases quick, long enough for a release on a loaded CI machine.
const DEADLINE_MS = 5000;

describe('fault injection against the local stack', () => {
  const { logger, lines } = capturingLogger('debug');
  let stack: LocalStack;
  let fetch: ReturnType<typeof createHttpsFetch>;
  let kid: string;
  const material = randomBytes(32);
  const releasedKeys: string[] = [];

  let dir: string;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-faults-'));
    // Token reuse off: every release goes to MAA, so MAA faults are reached each time.
    stack = await startLocalStack({ stateDir: dir, port: 0, logger, release: { maaTokenReuse: false }, limits: { requestDeadlineMs: DEADLINE_MS } });
    const ca = fs.readFileSync(stack.state.caCertPath, 'utf8');
    fetch = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
    const credential = providerCredential(new TokenProvider({ imdsEndpoint: stack.state.imdsUrl }));
    // A symmetric key, so in the Managed HSM emulator (as in Azure); its faults are the "vault" cases.
    const imported = await importReleasableKey({
      vaultEndpoint: stack.state.hsmEndpoint,
      name: 'fault-key',
      jwk: sdkJwkFor('oct-HSM', material),
      policy: buildReleasePolicy({
        authority: `https://${stack.state.maaEndpoint}`,
        anyOfGroups: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: stack.state.hostData }, { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' }]],
      }),
      credential,
      fetch,
      relaxedChallenge: true,
    });
    kid = `fault-key/${imported.version}`;
  }, 60_000);

  afterAll(async () => {
    fetch.destroy();
    await stack.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const release = (extra: Record<string, unknown> = {}) =>
    postJson(`${stack.sidecar.url}/key/release`, { maa_endpoint: stack.state.maaEndpoint, akv_endpoint: stack.state.hsmEndpoint, kid, ...extra });

  async function expectReleased(): Promise<void> {
    const res = await release();
    expect(res.status).toBe(200);
    const jwk = JSON.parse(res.json.key as string) as { k: string };
    expect(Buffer.from(jwk.k, 'base64url').equals(material)).toBe(true);
    releasedKeys.push(jwk.k);
  }

  it('releases normally before any fault', expectReleased);

  type Case = [string, 'maa' | 'vault' | 'imds', Fault, number, RegExp | undefined];
  const cases: Case[] = [
    ['MAA 2× HTTP 500 (recovered by retry)', 'maa', { route: 'attest', kind: 'status', status: 500, times: 2 }, 200, undefined],
    ['MAA 429 with Retry-After: 1 (recovered after the wait)', 'maa', { route: 'attest', kind: 'status', status: 429, retryAfterSeconds: 1 }, 200, undefined],
    ['MAA hangs (deadline)', 'maa', { route: 'attest', kind: 'hang' }, 504, /deadline of 5 s exceeded/],
    ['MAA answers malformed JSON', 'maa', { route: 'attest', kind: 'malformed-json' }, 502, /MAA attest response is not JSON/],
    ['MAA token with a tampered signature', 'maa', { route: 'attest', kind: 'tampered-jws' }, 403, /attestation statement cannot be verified.*could not verify the MAA token itself/],
    ['MAA token that has expired', 'maa', { route: 'attest', kind: 'expired-token' }, 403, /attestation statement cannot be verified.*(MAA token has expired|could not verify the MAA token)/],
    ['MAA token from a wrong authority', 'maa', { route: 'attest', kind: 'wrong-authority' }, 403, /wrong-authority\.attest\.azure\.net/],
    ['vault 2× HTTP 500 (recovered by the SDK retry)', 'vault', { route: 'release', kind: 'status', status: 500, times: 2 }, 200, undefined],
    ['vault 429 with Retry-After: 1 (recovered after the wait)', 'vault', { route: 'release', kind: 'status', status: 429, retryAfterSeconds: 1 }, 200, undefined],
    ['vault hangs (deadline)', 'vault', { route: 'release', kind: 'hang' }, 504, /deadline of 5 s exceeded/],
    ['vault answers malformed JSON', 'vault', { route: 'release', kind: 'malformed-json' }, 502, /vault 127\.0\.0\.1:\d+ release response: malformed answer: the body is not JSON$/],
    ['vault release JWS with a tampered signature', 'vault', { route: 'release', kind: 'tampered-jws' }, 403, /JWS signature does not verify with x5c\[0\]/],
    ['vault release JWS signed for another host', 'vault', { route: 'release', kind: 'wrong-host-x5c' }, 403, /wrong-host\.vault\.azure\.net.*does not name the vault host 127\.0\.0\.1/],
    ['vault says the key is not exportable', 'vault', { route: 'release', kind: 'non-exportable' }, 403, /not exportable/],
    // Before the 500s: once a release got the vault token, it is cached and IMDS is not asked again.
    ['IMDS hangs (deadline)', 'imds', { route: 'token', kind: 'hang' }, 504, /deadline/],
    ['IMDS HTTP 500 (recovered by the identity library retry, about 1 s)', 'imds', { route: 'token', kind: 'status', status: 500, times: 1 }, 200, undefined],
  ];

  it.each(cases)('%s → %s, then serves again', async (_name, where, fault, status, message) => {
    const emulator = where === 'maa' ? stack.maa : where === 'vault' ? stack.hsm : stack.imds;
    // IMDS tokens are cached by the identity library: only an uncached resource reaches IMDS.
    emulator.faults.clear();
    emulator.faults.inject(fault);
    // The key lives in Managed HSM (its token is cached by now); the vault's resource is not.
    const res = await release(where === 'imds' ? { akv_endpoint: stack.state.vaultEndpoint, kid: 'no-such-key' } : {});
    emulator.faults.clear();
    if (where === 'imds' && status === 200) {
      // Recovered: the token arrived and the vault answered for the key (which does not exist there).
      expect(res.status).toBe(403);
      expect(String(res.json.error)).toMatch(/has no key "no-such-key"/);
    } else {
      expect({ status: res.status, error: res.json.error }).toEqual({ status, ...(message ? { error: expect.stringMatching(message) } : { error: undefined }) });
      if (status === 200) releasedKeys.push((JSON.parse(res.json.key as string) as { k: string }).k);
    }
    expect(Object.keys(emulator.faults.served).length).toBeGreaterThan(0);
    await expectReleased();
  }, 20_000);
  /** A plain TCP listener that counts connections: what a foreign host would see. */
  async function listener(): Promise<{ endpoint: string; connections: () => number; close: () => Promise<void> }> {
    let n = 0;
    const srv = net.createServer((sock) => {
      n++;
      sock.destroy();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const { port } = srv.address() as net.AddressInfo;
    return { endpoint: `127.0.0.1:${port}`, connections: () => n, close: () => new Promise<void>((r) => srv.close(() => r())) };
  }

  it.each([
    ['akv_endpoint', 'SKR_ALLOWED_AKV'],
    ['maa_endpoint', 'SKR_ALLOWED_MAA'],
  ])('a non-allowlisted %s (another loopback port) gets 403 naming %s, and nothing is sent anywhere', async (field, setting) => {
    const other = await listener();
    const tokensBefore = stack.imds.issuedTokens.length;
    const maaBefore = stack.maa.issuedTokens.length;
    const deviceBefore = stack.sidecar.metrics.stageSeconds.count({ stage: 'device', outcome: 'ok' });
    try {
      const res = await release({ [field]: other.endpoint });
      expect(res.status).toBe(403);
      expect(res.json.error).toContain(`${field} "${other.endpoint}" is not allowlisted`);
      expect(res.json.error).toContain(setting);
      expect(other.connections()).toBe(0);
      // No identity token, no MAA call, no device call.
      expect(stack.imds.issuedTokens.length).toBe(tokensBefore);
      expect(stack.maa.issuedTokens.length).toBe(maaBefore);
      expect(stack.sidecar.metrics.stageSeconds.count({ stage: 'device', outcome: 'ok' })).toBe(deviceBefore);
    } finally {
      await other.close();
    }
  });

  it('shows failing upstreams in /status details while still answering Status OK', async () => {
    const res = await fetch(`${stack.sidecar.url}/status`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { message: string; details: { upstreams: Record<string, { failures: number; consecutiveFailures: number }> } };
    expect(body.message).toBe('Status OK');
    expect(body.details.upstreams.maa.failures).toBeGreaterThanOrEqual(3);
    expect(body.details.upstreams.vault.failures).toBeGreaterThanOrEqual(3);
    // The last release succeeded: the run of failures is over.
    expect(body.details.upstreams.maa.consecutiveFailures).toBe(0);
  });

  it('/metrics counted the releases, every stage, the upstream failures and the cache', async () => {
    const text = await (await fetch(`${stack.sidecar.url}/metrics`)).text();
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    expect(value(/^skr_http_requests_total\{outcome="ok",route="POST \/key\/release",status="200"\} (\d+)$/m)).toBeGreaterThanOrEqual(cases.length);
    expect(value(/^skr_http_requests_total\{outcome="timeout",route="POST \/key\/release",status="504"\} (\d+)$/m)).toBeGreaterThanOrEqual(3);
    for (const stage of ['device', 'collateral', 'maa', 'identity', 'vault', 'unwrap']) {
      expect(value(new RegExp(`^skr_stage_duration_seconds_count\\{outcome="ok",stage="${stage}"\\} (\\d+)$`, 'm'))).toBeGreaterThan(0);
    }
    expect(value(/^skr_upstream_attempts_total\{result="status_500",upstream="maa"\} (\d+)$/m)).toBeGreaterThanOrEqual(2);
    expect(value(/^skr_refused_requests_total\{reason="akv_endpoint"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^skr_collateral_cache_hit_ratio\{cache="primary"\} ([0-9.]+)$/m)).toBeGreaterThan(0);
  });

  it('wrote one audit line per release, and no key or token it handled reached any log line', () => {
    const audits = lines.filter((l) => l.includes('"audit":"key-release"'));
    expect(audits.length).toBeGreaterThanOrEqual(cases.length * 2);
    const first = JSON.parse(audits[0]) as Record<string, unknown>;
    expect(first).toMatchObject({ kid, vault: stack.state.hsmEndpoint, authority: `https://${stack.state.maaEndpoint}`, outcome: 'ok', status: 200 });
    expect(Array.isArray(first.upstreamRequestIds) && (first.upstreamRequestIds as string[]).some((id) => id.startsWith('vault:'))).toBe(true);

    const all = lines.join('\n');
    const secrets: string[] = [material.toString('base64url'), material.toString('base64'), material.toString('hex'), ...releasedKeys];
    // JWT header segments are public (alg, kid); payload and signature are what must not leak.
    for (const jwt of [...stack.imds.issuedTokens, ...stack.maa.issuedTokens]) secrets.push(...jwt.split('.').slice(1).filter((p) => p.length > 16));
    expect(stack.imds.issuedTokens.length).toBeGreaterThan(0);
    expect(stack.maa.issuedTokens.length).toBeGreaterThan(cases.length);
    const leaked = secrets.filter((sec) => all.includes(sec));
    expect(leaked).toEqual([]);
  });
});
