/**
 * The release fast path against the real emulators (skr local in-process): an MAA token is reused
 * with its wrapping key, only for its own MAA endpoint; released keys are never cached; a caller's
 * access_token is never shared; the identity token is fetched once. Each test builds its own
 * client and counts its own calls, so any one of them runs alone. The keys are oct-HSM, so they
 * live in the Managed HSM emulator (as in Azure).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { staticTokenCredential } from '../../src/akv/credentials';
import { TokenProvider } from '../../src/akv/identity';
import { importReleasableKey, sdkJwkFor } from '../../src/akv/import-key';
import { buildReleasePolicy } from '../../src/akv/policy';
import { ReleaseJwsVerifier } from '../../src/akv/jws';
import { KeyReleasePipeline, ReleaseRefusedError } from '../../src/akv/release';
import { SoftwareKekSource } from '../../src/akv/software-kek';
import { KeyVaultRelease } from '../../src/akv/vault-release';
import type { Endpoint } from '../../src/common/endpoint';
import { WrappingKeyPool } from '../../src/akv/wrapping-key-pool';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import type { FetchLike } from '../../src/common/http';
import { createHttpsFetch, type HttpsFetch } from '../../src/common/https-fetch';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { MaaClient } from '../../src/maa/client';
import { createLogger } from '../../src/server/logger';
import { reportDataFor } from '../../src/snp/report';
import { TEST_ONLY_UVM_ROOT_SHA256 } from '../../src/snp/simulator';

describe('key release fast path on the local stack', () => {
  let dir: string;
  let stack: LocalStack;
  let otherMaa: MaaEmulator;
  let fetch: HttpsFetch;
  let ca: string;
  let imdsProxy: http.Server;
  let imdsProxyUrl: string;
  let imdsTokenRequests = 0;
  let pool: WrappingKeyPool;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-perf-'));
    stack = await startLocalStack({ stateDir: dir, port: 0, logger: createLogger({ silent: true }) });
    ca = fs.readFileSync(stack.state.caCertPath, 'utf8');
    fetch = createHttpsFetch({ extraCaPem: [ca] });
    // A second MAA that verifies this platform as well, but that no key's release policy trusts.
    otherMaa = await startMaaEmulator({ ca: loadOrCreateLocalCa(dir), trustedArkPem: [stack.platform.arkPem], trustedUvmRootFingerprints: [TEST_ONLY_UVM_ROOT_SHA256] });
    // Counts the identity's token requests on their way to the IMDS emulator.
    imdsProxy = http.createServer((req, res) => {
      if (req.url?.includes('/oauth2/token')) imdsTokenRequests++;
      const up = http.request(`${stack.state.imdsUrl}${req.url}`, { method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      req.pipe(up);
    });
    await new Promise<void>((r) => imdsProxy.listen(0, '127.0.0.1', r));
    imdsProxyUrl = `http://127.0.0.1:${(imdsProxy.address() as AddressInfo).port}`;
    pool = new WrappingKeyPool({ size: 2 }).start();
  }, 60_000);

  afterAll(async () => {
    pool.close();
    await pool.idle();
    fetch.destroy();
    await new Promise((r) => imdsProxy.close(r));
    await otherMaa.close();
    await stack.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const maa = () => new MaaClient({ fetch, retries: 0 });
  const uvm = () => fs.readFileSync(path.join(stack.state.securityContextDir, 'reference-info-base64'), 'utf8').trim();

  /**
   * The production client, observed through its attest dependency (real evidence, real MAA
   * emulator): `attestCalls` lists the MAA endpoints this client attested to.
   */
  function client(opts: { reuse?: boolean; tokens?: TokenProvider; fetch?: FetchLike } = {}): KeyReleasePipeline & { attestCalls: string[] } {
    const attestCalls: string[] = [];
    const c = new KeyReleasePipeline({
      attester: {
        attest: async (endpoint: Endpoint, runtimeData: Buffer, signal?: AbortSignal) => {
          attestCalls.push(endpoint.raw);
          const { report } = await stack.platform.evidenceSource().getReport({ reportData: reportDataFor(runtimeData) });
          return maa().attest(endpoint, { report, vcekPem: stack.platform.vcekPem, chainPem: stack.platform.askPem + stack.platform.arkPem, uvmEndorsementBase64: uvm(), runtimeData }, signal);
        },
      },
      keks: new SoftwareKekSource(pool),
      vault: new KeyVaultRelease({
        tokens: opts.tokens ?? new TokenProvider({ imdsEndpoint: imdsProxyUrl }),
        fetch: opts.fetch ?? fetch,
        managedHsmEndpoints: [stack.state.hsmEndpoint],
        relaxedChallengeEndpoints: [stack.state.hsmEndpoint],
      }),
      jws: new ReleaseJwsVerifier({ extraCaPem: [ca] }),
      ...(opts.reuse === false ? { maaTokenReuse: { enabled: false } } : {}),
    });
    return Object.assign(c, { attestCalls });
  }

  async function directImdsToken(): Promise<string> {
    const r = await globalThis.fetch(`${stack.state.imdsUrl}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${encodeURIComponent('https://managedhsm.azure.net')}`, { headers: { Metadata: 'true' } });
    return ((await r.json()) as { access_token: string }).access_token;
  }

  async function importKey(name: string, bytes: Buffer): Promise<void> {
    await importReleasableKey({
      vaultEndpoint: stack.state.hsmEndpoint,
      name,
      jwk: sdkJwkFor('oct-HSM', bytes),
      policy: buildReleasePolicy({ authority: `https://${stack.state.maaEndpoint}`, anyOfGroups: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: stack.state.hostData }]] }),
      credential: staticTokenCredential(await directImdsToken()),
      fetch,
      relaxedChallenge: true,
    });
  }

  const req = (kid: string, extra: { maaEndpoint?: string; accessToken?: string } = {}) => ({
    maaEndpoint: extra.maaEndpoint ?? stack.state.maaEndpoint,
    akvEndpoint: stack.state.hsmEndpoint,
    kid,
    ...(extra.accessToken ? { accessToken: extra.accessToken } : {}),
  });
  const k = (jwk: object) => Buffer.from((jwk as { k: string }).k, 'base64url');

  it('reuses one MAA token and its wrapping key across releases, from the pool', async () => {
    const bytes = randomBytes(32);
    await importKey('reuse', bytes);
    const c = client();
    await pool.idle(); // full, so the one key this needs comes from it
    const before = c.attestCalls.length;
    const fromPoolBefore = pool.stats().fromPool;
    for (let i = 0; i < 3; i++) expect(k((await c.release(req('reuse'))).jwk)).toEqual(bytes);
    expect(c.attestCalls.length - before).toBe(1);
    expect(pool.stats().fromPool - fromPoolBefore).toBe(1);
    expect(c.maaTokens.size).toBe(1);
  });

  it('never caches released keys: a new key version is what the next release returns', async () => {
    const c = client();
    const v1 = randomBytes(32);
    await importKey('rotating', v1);
    expect(k((await c.release(req('rotating'))).jwk)).toEqual(v1);
    const v2 = randomBytes(32);
    await importKey('rotating', v2);
    const before = c.attestCalls.length;
    expect(k((await c.release(req('rotating'))).jwk)).toEqual(v2);
    expect(c.attestCalls.length).toBe(before); // same MAA token, fresh release
  });

  it('never offers one MAA endpoint\'s token for another endpoint, and drops a token the vault refused', async () => {
    const c = client();
    await importKey('pinned', randomBytes(32));
    await c.release(req('pinned'));
    const before = c.attestCalls.length;
    // The key's policy trusts only the first MAA: reusing its token here would wrongly succeed.
    const err = await c.release(req('pinned', { maaEndpoint: otherMaa.endpoint })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReleaseRefusedError);
    expect((err as ReleaseRefusedError).vaultStatus).toBe(403);
    expect(c.attestCalls.slice(before)).toEqual([otherMaa.endpoint]);
    expect(c.maaTokens.size).toBe(1); // the refused token was not kept
    await c.release(req('pinned'));
    expect(c.attestCalls.length).toBe(before + 1);
  });

  it('with reuse off, every release attests again', async () => {
    const c = client({ reuse: false });
    await importKey('noreuse', randomBytes(32));
    const before = c.attestCalls.length;
    await c.release(req('noreuse'));
    await c.release(req('noreuse'));
    expect(c.attestCalls.length - before).toBe(2);
    expect(c.maaTokens.size).toBe(0);
  });

  it('never shares a caller\'s access_token, nor lends the identity\'s cached token to a caller', async () => {
    const c = client();
    const bytes = randomBytes(32);
    await importKey('override', bytes);
    expect(k((await c.release(req('override'))).jwk)).toEqual(bytes); // identity client now holds a token
    const bogus = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJub2JvZHkifQ.';
    await expect(c.release(req('override', { accessToken: bogus }))).rejects.toMatchObject({ vaultStatus: 401 });
    expect(k((await c.release(req('override', { accessToken: await directImdsToken() }))).jwk)).toEqual(bytes);
    await expect(c.release(req('override', { accessToken: bogus }))).rejects.toMatchObject({ vaultStatus: 401 });
    expect(k((await c.release(req('override'))).jwk)).toEqual(bytes);
  });

  it('sends the token with the first request to a vault whose audience is known: no 401 challenge round trip, for the identity or a caller\'s token', async () => {
    const statuses: number[] = [];
    const counting: FetchLike = async (input, init) => {
      const res = await fetch(input, init);
      if (String(input).includes('/release')) statuses.push(res.status);
      return res;
    };
    const c = client({ fetch: counting });
    await importKey('challenge', randomBytes(32));
    for (let i = 0; i < 3; i++) await c.release(req('challenge'));
    expect(statuses).toEqual([200, 200, 200]);
    statuses.length = 0;
    const token = await directImdsToken();
    for (let i = 0; i < 2; i++) await c.release(req('challenge', { accessToken: token }));
    expect(statuses).toEqual([200, 200]);
  });

  it('fetches the identity token from IMDS once for many releases of several keys', async () => {
    // msal caches tokens per process and identity: a client id no other test uses starts empty.
    const tokens = new TokenProvider({ imdsEndpoint: imdsProxyUrl, clientId: stack.imds.defaultPrincipal.clientId });
    const c = client({ tokens });
    await importKey('identity-a', randomBytes(32));
    await importKey('identity-b', randomBytes(32));
    const before = imdsTokenRequests;
    for (let i = 0; i < 3; i++) {
      await c.release(req('identity-a'));
      await c.release(req('identity-b'));
    }
    expect(imdsTokenRequests - before).toBe(1);
  });
});
