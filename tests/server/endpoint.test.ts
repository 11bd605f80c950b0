/**
 * One endpoint value: for every spelling of an endpoint the allowlist accepts, the host and port
 * the MAA and vault clients dial are exactly the ones the allowlist approved, and the token
 * audience, token-cache key and audit host come from the same value.
 */
import { TokenProvider, resourceForVaultHost } from '../../src/akv/identity';
import { KeyVaultRelease } from '../../src/akv/vault-release';
import { parseEndpoint, type EndpointKind } from '../../src/common/endpoint';
import type { FetchLike } from '../../src/common/http';
import { MaaClient } from '../../src/maa/client';
import { MaaTokenCache } from '../../src/maa/token-cache';
import { DEFAULT_AKV_ALLOWLIST, DEFAULT_MAA_ALLOWLIST, EndpointAllowlist } from '../../src/server/allowlist';
import { createLocalCa } from '../../src/asn1/x509';
import { REPORT_SIZE } from '../../src/snp/report';

/** Every combination of the spellings a caller may use for host[:port]. */
function spellings(host: string, port: number): string[] {
  const hosts = [host, host.toUpperCase(), `${host}.`, host.replace(/^./, (c) => c.toUpperCase())];
  const ports = port === 443 ? ['', ':443'] : [`:${port}`];
  const out: string[] = [];
  for (const h of hosts) {
    for (const p of ports) {
      for (const [pre, post] of [['', ''], ['https://', ''], ['https://', '/'], ['HTTPS://', ''], [' ', '  ']]) out.push(`${pre}${h}${p}${post}`);
    }
  }
  return out;
}

/** A fetch that records what it was asked to dial and answers 404 (no retry, no further calls). */
function recorder(): { fetch: FetchLike; dialled: URL[] } {
  const dialled: URL[] = [];
  const fetch: FetchLike = async (input) => {
    dialled.push(new URL(String(input)));
    return new Response(JSON.stringify({ error: { code: 'KeyNotFound', message: 'no such key' } }), { status: 404, headers: { 'content-type': 'application/json' } });
  };
  return { fetch, dialled };
}

const CASES: Array<[EndpointKind, readonly string[], string, number]> = [
  ['maa', DEFAULT_MAA_ALLOWLIST, 'sharedeus.eus.attest.azure.net', 443],
  ['maa', ['127.0.0.1:8443'], '127.0.0.1', 8443],
  ['akv', DEFAULT_AKV_ALLOWLIST, 'myvault.vault.azure.net', 443],
  ['akv', DEFAULT_AKV_ALLOWLIST, 'myhsm.managedhsm.azure.cn', 443],
  ['akv', ['vault.example.com:8443'], 'vault.example.com', 8443],
];

describe.each(CASES)('%s endpoint %s: approved host = dialled host', (kind, patterns, host, port) => {
  const allow = new EndpointAllowlist(kind, patterns);
  const accepted = spellings(host, port).filter((s) => allow.allows(s));

  it('the allowlist accepts every spelling (so each one is checked below)', () => {
    expect(accepted).toEqual(spellings(host, port));
  });

  it.each(spellings(host, port))('%j', async (spelling) => {
    const ep = parseEndpoint(kind, spelling);
    expect(() => allow.check(ep)).not.toThrow();
    expect([ep.hostname, ep.port]).toEqual([host, port]);
    const { fetch, dialled } = recorder();
    if (kind === 'maa') {
      await new MaaClient({ fetch, retries: 0 }).attest(ep, minimalSevSnpInput()).catch(() => undefined);
      expect(MaaTokenCache.keyOf(ep)).toBe(ep.origin);
    } else {
      const vault = new KeyVaultRelease({ tokens: new TokenProvider({ imdsEndpoint: 'http://127.0.0.1:9' }), fetch });
      await vault.release({ vault: ep, name: 'k', maaToken: 'a.b.c', enc: 'CKM_RSA_AES_KEY_WRAP', accessToken: 'caller-token' }).catch(() => undefined);
      expect(resourceForVaultHost(ep)).toBe(resourceForVaultHost(host));
    }
    expect(dialled.length).toBeGreaterThan(0);
    for (const u of dialled) {
      expect(u.protocol).toBe('https:');
      expect(u.hostname).toBe(host);
      expect(u.port === '' ? 443 : Number(u.port)).toBe(port);
    }
  });
});

describe('parseEndpoint', () => {
  it('gives origin, host, port and cloud once', () => {
    expect(parseEndpoint('akv', 'MyVault.Vault.Azure.CN.')).toMatchObject({ origin: 'https://myvault.vault.azure.cn', host: 'myvault.vault.azure.cn', port: 443, cloud: 'china', service: 'vault' });
    expect(parseEndpoint('maa', 'https://x.attest.azure.us:8443/')).toMatchObject({ origin: 'https://x.attest.azure.us:8443', host: 'x.attest.azure.us:8443', port: 8443, cloud: 'usgov', service: 'attest' });
    expect(parseEndpoint('akv', '127.0.0.1:40123')).toMatchObject({ origin: 'https://127.0.0.1:40123', cloud: 'custom' });
    expect(parseEndpoint('akv', 'vault.azure.net').service).toBeUndefined(); // no vault name label
  });

  it.each([
    ['akv', 'http://v.vault.azure.net', /must use https/],
    ['akv', 'v.vault.azure.net/keys/k', /bare host/],
    ['akv', 'user@v.vault.azure.net', /bare host/],
    ['maa', 'x.attest.azure.net?x=1', /query/],
  ] as const)('%s %j is a 400', (kind, raw, msg) => {
    expect(() => parseEndpoint(kind, raw)).toThrow(expect.objectContaining({ status: 400, message: expect.stringMatching(msg) }));
  });
});

/** A structurally valid SevSnpVm request input (the request is built before anything is dialled). */
function minimalSevSnpInput(): Parameters<MaaClient['attest']>[1] {
  const pem = createLocalCa().certPem;
  return { report: Buffer.alloc(REPORT_SIZE), vcekPem: pem, chainPem: pem, runtimeData: Buffer.from('{}') };
}

describe('which vaults get a token with the first request', () => {
  /** Records the Authorization header of each request and answers 404. */
  function authRecorder(): { fetch: FetchLike; auth: Array<string | null> } {
    const auth: Array<string | null> = [];
    const fetch: FetchLike = async (_input, init) => {
      auth.push(new Headers(init?.headers).get('authorization'));
      return new Response('{"error":{"code":"KeyNotFound","message":"no"}}', { status: 404 });
    };
    return { fetch, auth };
  }
  const tokens = new TokenProvider({ imdsEndpoint: 'http://127.0.0.1:9' });

  it('an Azure vault name fixes the audience: the token goes with the one POST', async () => {
    const { fetch, auth } = authRecorder();
    await new KeyVaultRelease({ tokens, fetch }).release({ vault: parseEndpoint('akv', 'v.vault.azure.net'), name: 'k', maaToken: 'a.b.c', enc: 'CKM_RSA_AES_KEY_WRAP', accessToken: 'caller-token' }).catch(() => undefined);
    expect(auth).toEqual(['Bearer caller-token']);
  });

  it('any other allowlisted host first gets no token: the SDK learns and checks its 401 challenge', async () => {
    const { fetch, auth } = authRecorder();
    await new KeyVaultRelease({ tokens, fetch }).release({ vault: parseEndpoint('akv', 'vault.example.com'), name: 'k', maaToken: 'a.b.c', enc: 'CKM_RSA_AES_KEY_WRAP', accessToken: 'caller-token' }).catch(() => undefined);
    expect(auth).toEqual([null]);
  });
});
