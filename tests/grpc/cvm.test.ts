/**
 * The gRPC key provider on `skr local --platform azure-cvm`: UnWrapKey's release goes through the
 * vTPM (swtpm behind the simulated paravisor; MAA's /attest/AzureGuest; the vault wraps to the vTPM's
 * ephemeral key), with the CVM release-policy template. GetReport, which serves a bare SNP report,
 * is refused there as UNIMPLEMENTED naming the HTTP routes that carry the HCL report.
 */
import { constants, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import { providerCredential } from '../../src/akv/credentials';
import { TokenProvider } from '../../src/akv/identity';
import { importReleasableKey, sdkJwkFor } from '../../src/akv/import-key';
import { buildReleasePolicy } from '../../src/akv/policy';
import { POLICY_TEMPLATES } from '../../src/akv/policy-templates';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { swtpmAvailable, SWTPM_INSTALL } from '../helpers/swtpm';
import { call, ocicryptUnwrapInput, unwrap } from '../helpers/grpc';

describe('gRPC key provider on skr local --platform azure-cvm', () => {
  let stack: LocalStack;
  let dir: string;

  beforeAll(async () => {
    if (!swtpmAvailable()) throw new Error(`swtpm is not installed: ${SWTPM_INSTALL}`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-grpc-cvm-'));
    stack = await startLocalStack({ stateDir: dir, port: 0, grpcPort: 0, platform: 'azure-cvm', logLevel: 'error' });
  }, 90_000);
  afterAll(async () => {
    await stack?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('UnWrapKey releases the RSA key through the vTPM and gives the layer options back, under both package names', async () => {
    const ca = fs.readFileSync(stack.state.caCertPath, 'utf8');
    const fetch = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
    const pair = generateKeyPairSync('rsa', { modulusLength: 3072 });
    await importReleasableKey({
      vaultEndpoint: stack.state.vaultEndpoint,
      name: 'cvm-layer-key',
      jwk: sdkJwkFor('RSA-HSM', pair.privateKey),
      policy: buildReleasePolicy({ authority: `https://${stack.state.maaEndpoint}`, anyOfGroups: [POLICY_TEMPLATES['azure-cvm'][0].map((c) => ({ ...c }))] }),
      credential: providerCredential(new TokenProvider({ imdsEndpoint: stack.state.imdsUrl, extraCaPem: [ca] })),
      fetch,
      relaxedChallenge: true,
    });
    fetch.destroy();
    const opts = Buffer.from(JSON.stringify({ symkey: randomBytes(32).toString('base64') }));
    const packet = JSON.stringify({
      kid: 'cvm-layer-key',
      wrapped_data: publicEncrypt({ key: pair.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, opts).toString('base64'),
      wrap_type: 'rsa_3072',
      kms_endpoint: stack.state.vaultEndpoint,
      attester_endpoint: stack.state.maaEndpoint,
    });
    for (const pkg of ['keyprovider', 'key_provider']) {
      const r = await unwrap(stack.state.grpcTarget as string, pkg, ocicryptUnwrapInput(packet));
      expect(r).toEqual({ ok: true, output: { keyunwrapresults: { optsdata: opts.toString('base64') } } });
    }
    // The release was the vTPM's: the token the vault saw is an AzureGuest (azurevm) one.
    expect(stack.maa.issuedTokens.length).toBeGreaterThan(0);
    const claims = JSON.parse(Buffer.from(stack.maa.issuedTokens[stack.maa.issuedTokens.length - 1].split('.')[1], 'base64url').toString()) as Record<string, unknown>;
    expect(claims['x-ms-attestation-type']).toBe('azurevm');
    const metrics = await (await globalThis.fetch(`${stack.sidecar.url}/metrics`)).text();
    expect(metrics).toMatch(/skr_key_releases_total\{outcome="ok"\} 2/);
    expect(stack.sidecar.platformName).toBe('azure-cvm');
  }, 120_000);

  it('GetReport: UNIMPLEMENTED on a CVM, naming the HTTP routes with the HCL report', async () => {
    const r = await call(stack.state.grpcTarget as string, 'keyprovider', 'GetReport', { report_data_hex_string: 'ab' });
    expect(r).toEqual({ ok: false, code: status.UNIMPLEMENTED, details: expect.stringContaining('/attest/raw or /attest/combined') });
  });
});
