/**
 * `skr import-key --policy-template azure-cvm` and the one-shot `skr release` on a simulated Intel TDX CVM:
 * swtpm behind the simulated paravisor writing type-4 HCL reports, the IMDS emulator's /acc/tdquote backed by
 * the simulated quoting enclave, and the MAA emulator verifying the TD quote (its TEST-ONLY root trusted explicitly).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ParavisorProxy, provisionSimulatedCvm } from '../../src/cvm/simulator';
import { SwtpmTcpTransport } from '../../src/tpm';
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
  let proxy: ParavisorProxy;
  /** The vTPM as the guest sees it: swtpm behind the simulated paravisor (user-data writes regenerate the report). */
  let vtpm: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-release-tdx-'));
    tpm = await startSwtpm();
    const tdx = new SimulatedTdxPlatform();
    const cvm = await tpm.use((c) => provisionSimulatedCvm(c, { tdx }));
    proxy = new ParavisorProxy(cvm.transport(new SwtpmTcpTransport({ port: tpm.port })));
    vtpm = `tcp:127.0.0.1:${await proxy.listen(0)}`;
    const ca = loadOrCreateLocalCa(path.join(dir, 'ca'));
    caFile = ca.certPath;
    maa = await startMaaEmulator({ ca, trustedVtpmCaPem: [cvm.ca.certPem], trustedIntelRootPem: [TEST_ONLY_INTEL_ROOT_PEM] });
    imds = await startImdsEmulator({ tdQuote: (r) => tdx.quote(r) });
    vault = await startVaultEmulator({ flavour: 'vault', ca, stateDir: path.join(dir, 'vault'), accessTokens: { publicKey: imds.publicKey, issuer: imds.issuer } });
  }, 60_000);
  afterAll(async () => {
    for (const s of [vault, maa, imds, proxy]) await s?.close();
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
    const r = await run('release', '--maa', maa.endpoint, '--akv', vault.endpoint, '--kid', 'tdx-cli-ec', '--tpm', vtpm, '--imds', imds.url, '--ca', caFile, '--out', path.join(dir, 'released.jwk.json'));
    expect(r.err).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`thumbprint ${importThumb}`);
    expect(maa.issuedTokens).toHaveLength(1);
    const claims = JSON.parse(Buffer.from(maa.issuedTokens[0].split('.')[1], 'base64url').toString()) as Record<string, Record<string, unknown>>;
    expect(claims['x-ms-isolation-tee']['x-ms-attestation-type']).toBe('tdxvm');
  }, 120_000);

  it('skr report get --tpm on the TDX CVM: the /attest/raw JSON, which skr report verify accepts', async () => {
    const out = path.join(dir, 'tdx-evidence.json');
    const g = await run('report', 'get', '--tpm', vtpm, '--imds', imds.url, '--runtime-data', Buffer.from('{"x":1}').toString('base64'), '--out', out);
    expect(g.code).toBe(0);
    expect(Object.keys(JSON.parse(fs.readFileSync(out, 'utf8')) as object).sort()).toEqual(['hcl_report', 'td_quote']);
    const root = path.join(dir, 'sim-intel-root.pem');
    fs.writeFileSync(root, TEST_ONLY_INTEL_ROOT_PEM);
    const v = await run('report', 'verify', out, '--trust-root', root);
    expect(v.err).toBe('');
    expect(v.code).toBe(0);
    expect(v.out).toMatch(/^OK: HCL runtime claims \(\d+ bytes\) bound by REPORTDATA, TDREPORT hashes consistent, TDREPORT = the quote's TD report body; .*SIMULATED Intel SGX Root CA.*TCB status NOT checked/);
    // Without the explicit trust the simulated chain is refused.
    const untrusted = await run('report', 'verify', out);
    expect(untrusted.code).toBe(1);
    expect(untrusted.err).toMatch(/^FAILED at intel-root-pinned: /);
  }, 60_000);

  it('skr doctor on the TDX CVM: the TDREPORT answers, the IMDS TD quote verifies and carries it, the key\'s policy is met', async () => {
    const cfg = path.join(dir, 'tdx-doctor.json');
    fs.writeFileSync(cfg, JSON.stringify({ key: { kid: 'tdx-doctor', kty: 'RSA-HSM', authority: { endpoint: maa.endpoint }, akv: { endpoint: vault.endpoint } } }));
    expect((await run('import-key', '-c', cfg, '--policy-template', 'azure-cvm', '--ca', caFile, '--imds', imds.url)).code).toBe(0);
    const r = await run('doctor', '--maa', maa.endpoint, '--akv', vault.endpoint, '--kid', 'tdx-doctor', '--tpm', vtpm, '--imds', imds.url, '--ca', caFile, '--json');
    const rep = JSON.parse(r.out) as { ok: boolean; checks: { name: string; status: string; detail: string }[] };
    expect(rep.checks.map((c) => [c.name, c.status])).toEqual([
      ['platform', 'ok'], ['collateral', 'ok'], ['identity', 'ok'], ['maa', 'ok'], ['vault', 'ok'], ['key', 'ok'], ['policy', 'ok'],
    ]);
    expect(rep.checks[0].detail).toMatch(/^Azure TDX confidential VM .*TDREPORT in the HCL report .*MRTD [0-9a-f]{16}/);
    expect(rep.checks[1].detail).toMatch(/^TD quote from IMDS .*\/acc\/tdquote verifies to .*SIMULATED test-only root.*carries this TDREPORT; TCB status not checked/);
    expect(r.code).toBe(0);
  }, 120_000);
});
