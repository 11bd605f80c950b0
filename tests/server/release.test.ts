/**
 * Issue 4's end-to-end contract, on the real local stack (sidecar + IMDS/MAA/Key Vault/Managed HSM
 * emulators on loopback): keys are imported with the official KeyClient and released through
 * POST /key/release.
 */
import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { providerCredential } from '../../src/akv/credentials';
import { TokenProvider } from '../../src/akv/identity';
import { importReleasableKey, sdkJwkFor, type ImportKty } from '../../src/akv/import-key';
import { buildReleasePolicy } from '../../src/akv/policy';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import { capturingLogger } from '../hardening/log-capture';
import { postJson } from '../helpers/sidecar';

describe('POST /key/release on the local stack', () => {
  let stack: LocalStack;
  let fetch: ReturnType<typeof createHttpsFetch>;
  let credential: ReturnType<typeof providerCredential>;
  const { logger, lines } = capturingLogger('debug');
  /** Every key representation this suite handles: none may appear in any log line. */
  const secrets: string[] = [];
  const remember = (b: Buffer) => secrets.push(b.toString('hex'), b.toString('base64'), b.toString('base64url'));

  let dir: string;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-release-'));
    stack = await startLocalStack({ stateDir: dir, port: 0, logger });
    const ca = fs.readFileSync(stack.state.caCertPath, 'utf8');
    fetch = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
    credential = providerCredential(new TokenProvider({ imdsEndpoint: stack.state.imdsUrl }));
  }, 60_000);
  afterAll(async () => {
    fetch.destroy();
    await stack.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const policy = (hostData: string) =>
    buildReleasePolicy({
      authority: `https://${stack.state.maaEndpoint}`,
      anyOfGroups: [[
        { claim: 'x-ms-sevsnpvm-hostdata', equals: hostData },
        { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' },
        { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' },
      ]],
    });

  async function importKey(name: string, kty: ImportKty, material: Buffer | KeyObject, opts: { hostData?: string; vault?: string } = {}) {
    return importReleasableKey({
      vaultEndpoint: opts.vault ?? stack.state.vaultEndpoint,
      name,
      jwk: sdkJwkFor(kty, material),
      policy: policy(opts.hostData ?? stack.state.hostData),
      credential,
      fetch,
      relaxedChallenge: true,
    });
  }

  /** Symmetric keys live in Managed HSM only; the vault (Premium) tests use RSA-HSM keys. */
  const rsaKey = () => generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

  const release = (kid: string, extra: Record<string, unknown> = {}) =>
    postJson(`${stack.sidecar.url}/key/release`, { maa_endpoint: stack.state.maaEndpoint, akv_endpoint: stack.state.vaultEndpoint, kid, ...extra });

  it('releases an imported oct-HSM key (Managed HSM): k is exactly the imported bytes', async () => {
    const bytes = randomBytes(32);
    remember(bytes);
    const imported = await importKey('oct-known', 'oct-HSM', bytes, { vault: stack.state.hsmEndpoint });
    const res = await release('oct-known', { akv_endpoint: stack.state.hsmEndpoint });
    expect(res.status).toBe(200);
    expect(typeof res.json.key).toBe('string');
    const jwk = JSON.parse(res.json.key as string) as Record<string, unknown>;
    expect(jwk.kty).toBe('oct');
    expect(Buffer.from(jwk.k as string, 'base64url')).toEqual(bytes);
    expect(jwk.kid).toBe(imported.keyId);
    // name/version form too
    const byVersion = await release(`oct-known/${imported.version}`, { akv_endpoint: stack.state.hsmEndpoint });
    expect(byVersion.status).toBe(200);
  });

  it('releases RSA-HSM and EC-HSM keys with private parts matching the imported keys', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    await importKey('rsa-known', 'RSA-HSM', rsa);
    const r = await release('rsa-known');
    expect(r.status).toBe(200);
    const rj = JSON.parse(r.json.key as string) as Record<string, string>;
    const want = rsa.export({ format: 'jwk' });
    secrets.push(want.d!, want.p!, want.q!);
    for (const k of ['n', 'e', 'd', 'p', 'q', 'dp', 'dq', 'qi'] as const) expect(rj[k]).toBe(want[k]);
    expect(createPrivateKey({ key: rj as unknown as import('node:crypto').JsonWebKey, format: 'jwk' }).export({ type: 'pkcs8', format: 'der' }))
      .toEqual(rsa.export({ type: 'pkcs8', format: 'der' }));

    const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
    await importKey('ec-known', 'EC-HSM', ec);
    const e = await release('ec-known');
    expect(e.status).toBe(200);
    const ej = JSON.parse(e.json.key as string) as Record<string, string>;
    const ewant = ec.export({ format: 'jwk' });
    secrets.push(ewant.d!);
    expect(ej.kty).toBe('EC');
    expect(ej.crv).toBe('P-384');
    expect([ej.x, ej.y, ej.d]).toEqual([ewant.x, ewant.y, ewant.d]);
  });

  it('releases from the Managed HSM flavour (the HSM audience is requested)', async () => {
    const bytes = randomBytes(16);
    remember(bytes);
    await importKey('hsm-oct', 'oct-HSM', bytes, { vault: stack.state.hsmEndpoint });
    const res = await release('hsm-oct', { akv_endpoint: stack.state.hsmEndpoint });
    expect(res.status).toBe(200);
    expect(Buffer.from((JSON.parse(res.json.key as string) as { k: string }).k, 'base64url')).toEqual(bytes);
  });

  it('refuses a key pinned to another HOST_DATA with 403: error keeps the vault\'s words, explanation names the claim, wants and has', async () => {
    const other = createHash('sha256').update('another policy').digest('hex');
    await importKey('other-hostdata', 'RSA-HSM', rsaKey(), { hostData: other });
    const res = await release('other-hostdata');
    expect(res.status).toBe(403);
    expect(res.json.error).toContain('Target environment attestation does not meet key release policy requirements.');
    expect(res.json.error).toMatch(/x-ms-sevsnpvm-hostdata/);
    expect(res.json.explanation).toEqual({
      policyRead: true,
      claimsSatisfyPolicy: false,
      summary: expect.stringContaining('x-ms-sevsnpvm-hostdata') as unknown,
      tokenIssuer: `https://${stack.state.maaEndpoint}`,
      closestBranch: {
        index: 0,
        authority: `https://${stack.state.maaEndpoint}`,
        issuerMatches: true,
        failing: [{ path: 'anyOf[0].allOf[0]', claim: 'x-ms-sevsnpvm-hostdata', operator: 'equals', wants: other, present: true, has: stack.state.hostData }],
        omitted: 0,
      },
      hints: [expect.stringMatching(/^hostdata mismatch/) as unknown],
    });
  });

  it('explains the closest anyOf branch: of two, the one with fewer failing claims', async () => {
    const other = createHash('sha256').update('yet another policy').digest('hex');
    const p = buildReleasePolicy({
      authority: `https://${stack.state.maaEndpoint}`,
      anyOfGroups: [
        [{ claim: 'x-ms-sevsnpvm-hostdata', equals: other }, { claim: 'x-ms-compliance-status', equals: 'azure-compliant-cvm' }],
        [{ claim: 'x-ms-sevsnpvm-hostdata', equals: stack.state.hostData }, { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'true' }],
      ],
    });
    await importReleasableKey({ vaultEndpoint: stack.state.vaultEndpoint, name: 'two-branches', jwk: sdkJwkFor('RSA-HSM', rsaKey()), policy: p, credential, fetch, relaxedChallenge: true });
    const res = await release('two-branches');
    expect(res.status).toBe(403);
    const b = (res.json.explanation as { closestBranch: { index: number; failing: unknown[] } }).closestBranch;
    expect(b.index).toBe(1);
    expect(b.failing).toEqual([{ path: 'anyOf[1].allOf[1]', claim: 'x-ms-sevsnpvm-is-debuggable', operator: 'equals', wants: 'true', present: true, has: false }]);
  });

  it('an identity that may not read the key: the explanation says the get permission is missing', async () => {
    const other = createHash('sha256').update('a third policy').digest('hex');
    await importKey('no-get', 'RSA-HSM', rsaKey(), { hostData: other });
    const oid = stack.imds.defaultPrincipal.objectId;
    stack.vault.revokeRead(oid);
    try {
      const res = await release('no-get');
      expect(res.status).toBe(403);
      expect(res.json.error).toContain('does not meet key release policy requirements');
      expect(res.json.explanation).toEqual({
        policyRead: false,
        summary: expect.stringContaining('"get" key permission') as unknown,
        hints: [expect.stringContaining('skr policy explain') as unknown],
      });
      // Without the policy nothing of it is claimed.
      expect(JSON.stringify(res.json)).not.toContain(other);
    } finally {
      stack.vault.grantRead(oid);
    }
    expect((await release('no-get')).json.explanation).toMatchObject({ policyRead: true, claimsSatisfyPolicy: false });
  });

  it('a 403 body is bounded and carries no token: a policy of 60 failing claims lists 10', async () => {
    const many = Array.from({ length: 60 }, (_, i) => ({ claim: `x-ms-custom-${i}-${'c'.repeat(300)}`, equals: 'v'.repeat(400) }));
    const p = buildReleasePolicy({ authority: `https://${stack.state.maaEndpoint}`, anyOfGroups: [many] });
    await importReleasableKey({ vaultEndpoint: stack.state.vaultEndpoint, name: 'many-claims', jwk: sdkJwkFor('RSA-HSM', rsaKey()), policy: p, credential, fetch, relaxedChallenge: true });
    const res = await release('many-claims');
    expect(res.status).toBe(403);
    const b = (res.json.explanation as { closestBranch: { failing: { claim: string; wants: string }[]; omitted: number } }).closestBranch;
    expect(b.failing).toHaveLength(10);
    expect(b.omitted).toBe(50);
    for (const f of b.failing) expect(f.claim.length + f.wants.length).toBeLessThanOrEqual(400);
    expect(JSON.stringify(res.json).length).toBeLessThan(12_000);
    const body = JSON.stringify(res.json);
    for (const jwt of [...stack.imds.issuedTokens, ...stack.maa.issuedTokens]) for (const part of jwt.split('.').slice(1)) expect(body).not.toContain(part);
  });

  it('refuses a principal without the release permission with 403 naming authorization', async () => {
    await importKey('no-permission', 'RSA-HSM', rsaKey());
    const oid = stack.imds.defaultPrincipal.objectId;
    stack.vault.revokeRelease(oid);
    try {
      const res = await release('no-permission');
      expect(res.status).toBe(403);
      expect(res.json.error).toMatch(/authoriz|permission|role/i);
      expect(res.json.error).toMatch(/release/i);
      // The policy grants the token: the explanation points at the identity, not at a claim.
      expect(res.json.explanation).toMatchObject({ policyRead: true, claimsSatisfyPolicy: true, closestBranch: { index: 0, failing: [] } });
      expect((res.json.explanation as { summary: string }).summary).toMatch(/identity/);
    } finally {
      stack.vault.grantRelease(oid);
    }
    expect((await release('no-permission')).status).toBe(200);
  });

  it('uses the request access_token instead of the managed identity', async () => {
    await importKey('override', 'RSA-HSM', rsaKey());
    const res = await release('override', { access_token: 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln' });
    expect(res.status).toBe(403);
    expect(res.json.error).toMatch(/identity|access token/i);
    expect(res.json.error).not.toMatch(/eyJzdWIiOiJ4In0/);
  });

  it.each([
    ['no kid', { kid: undefined }, /kid is required/],
    ['a kid with a path', { kid: '../secrets' }, /kid/],
    ['an http vault', { akv_endpoint: 'http://example.vault.azure.net' }, /https/],
    ['a vault URL with a path', { akv_endpoint: 'https://x.vault.azure.net/keys' }, /bare host/],
    ['a non-string access_token', { access_token: 5 }, /access_token must be a string/],
  ])('refuses %s with 400', async (_n, extra, msg) => {
    const body: Record<string, unknown> = { maa_endpoint: stack.state.maaEndpoint, akv_endpoint: stack.state.vaultEndpoint, kid: 'k', ...extra };
    for (const [k, v] of Object.entries(body)) if (v === undefined) delete body[k];
    const res = await postJson(`${stack.sidecar.url}/key/release`, body);
    expect(res.status).toBe(400);
    expect(res.json.error).toMatch(msg);
  });

  it('refuses an unknown key with 403 saying so', async () => {
    const res = await release('does-not-exist');
    expect(res.status).toBe(403);
    expect(res.json.error).toMatch(/no key "does-not-exist"/);
  });

  it('wrote an audit line per release and no key or token it handled reached any log line', () => {
    expect(lines.filter((l) => l.includes('"audit":"key-release"')).length).toBeGreaterThanOrEqual(8);
    const tokens = [...stack.imds.issuedTokens, ...stack.maa.issuedTokens];
    expect(tokens.length).toBeGreaterThan(0);
    for (const jwt of tokens) secrets.push(...jwt.split('.').slice(1).filter((p) => p.length > 16));
    const all = lines.join('\n');
    expect(secrets.filter((sec) => all.includes(sec))).toEqual([]);
  });
});
