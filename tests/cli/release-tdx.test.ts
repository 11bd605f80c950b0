/**
 * `skr import-key --policy-template azure-cvm` and the one-shot `skr release` on a simulated Intel TDX CVM:
 * swtpm behind the simulated paravisor writing type-4 HCL reports, the IMDS emulator's /acc/tdquote backed by
 * the simulated quoting enclave, and the MAA emulator verifying the TD quote (its TEST-ONLY root trusted explicitly).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { provisionSimulatedCvm } from '../../src/cvm/simulator';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { startImdsEmulator, type ImdsEmulator } from '../../src/emulators/imds';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { startVaultEmulator, type VaultEmulator } from '../../src/emulators/akv';
import { SimulatedTdxPlatform, TEST_ONLY_INTEL_ROOT_PEM } from '../../src/tdx/simulator';
import { runCli as run } from '../helpers/cli';
import { startSwtpm, type Swtpm } from '../helpers/swtpm';

describe('skr release on a simulated TDX CVM', () => {
  let tpm: Swtpm;
  let maa: MaaEmulator;
  let imds: ImdsEmulator;
  let vault: VaultEmulator;
  let dir: string;
  let caFile: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-release-tdx-'));
    tpm = await startSwtpm();
    const tdx = new SimulatedTdxPlatform();
    const cvm = await tpm.use((c) => provisionSimulatedCvm(c, { tdx }));
    const ca = loadOrCreateLocalCa(path.join(dir, 'ca'));
    caFile = ca.certPath;
    maa = await startMaaEmulator({ ca, trustedVtpmCaPem: [cvm.ca.certPem], trustedIntelRootPem: [TEST_ONLY_INTEL_ROOT_PEM] });
    imds = await startImdsEmulator({ tdQuote: (r) => tdx.quote(r) });
    vault = await startVaultEmulator({ flavour: 'vault', ca, stateDir: path.join(dir, 'vault'), accessTokens: { publicKey: imds.publicKey, issuer: imds.issuer } });
  }, 60_000);
  afterAll(async () => {
    for (const s of [vault, maa, imds]) await s?.close();
    await tpm?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('imports an EC key with the CVM template and releases it through the vTPM; thumbprints match', async () => {
    const cfg = path.join(dir, 'tdx-ec.json');
    fs.writeFileSync(cfg, JSON.stringify({ key: { kid: 'tdx-cli-ec', kty: 'EC-HSM', authority: { endpoint: maa.endpoint }, akv: { endpoint: vault.endpoint } } }));
    const imp = await run('import-key', '-c', cfg, '--policy-template', 'azure-cvm', '--ca', caFile, '--imds', imds.url);
    expect(imp.code).toBe(0);
    const importThumb = /material thumbprint ([0-9a-f]{16})/.exec(imp.err)?.[1];
    expect(importThumb).toBeDefined();
    const r = await run('release', '--maa', maa.endpoint, '--akv', vault.endpoint, '--kid', 'tdx-cli-ec', '--tpm', `tcp:127.0.0.1:${tpm.port}`, '--imds', imds.url, '--ca', caFile);
    expect(r.err).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`thumbprint ${importThumb}`);
    expect(maa.issuedTokens).toHaveLength(1);
    const claims = JSON.parse(Buffer.from(maa.issuedTokens[0].split('.')[1], 'base64url').toString()) as Record<string, Record<string, unknown>>;
    expect(claims['x-ms-isolation-tee']['x-ms-attestation-type']).toBe('tdxvm');
  }, 120_000);
});
