/**
 * `skr import-key --policy-template azure-cvm` and the one-shot `skr release` on a simulated CVM: a real
 * swtpm (as the vTPM, over --tpm tcp:...), the MAA, IMDS, Key Vault and Managed HSM emulators on loopback.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { provisionSimulatedCvm } from '../../src/cvm/simulator';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { startImdsEmulator, type ImdsEmulator } from '../../src/emulators/imds';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { startVaultEmulator, type VaultEmulator } from '../../src/emulators/akv';
import { runCli as run } from '../helpers/cli';
import { startSwtpm, type Swtpm } from '../helpers/swtpm';

describe('skr import-key --policy-template azure-cvm and skr release on a CVM', () => {
  let tpm: Swtpm;
  let maa: MaaEmulator;
  let imds: ImdsEmulator;
  let vault: VaultEmulator;
  let hsm: VaultEmulator;
  let dir: string;
  let caFile: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-release-cli-'));
    tpm = await startSwtpm();
    const cvm = await tpm.use((c) => provisionSimulatedCvm(c));
    const ca = loadOrCreateLocalCa(path.join(dir, 'ca'));
    caFile = ca.certPath;
    maa = await startMaaEmulator({ ca, trustedArkPem: [cvm.platform.arkPem], trustedVtpmCaPem: [cvm.ca.certPem] });
    imds = await startImdsEmulator({ thim: () => cvm.platform.thimCertificates() });
    const accessTokens = { publicKey: imds.publicKey, issuer: imds.issuer };
    vault = await startVaultEmulator({ flavour: 'vault', ca, stateDir: path.join(dir, 'vault'), accessTokens });
    hsm = await startVaultEmulator({ flavour: 'hsm', ca, stateDir: path.join(dir, 'hsm'), accessTokens });
  }, 60_000);
  afterAll(async () => {
    for (const s of [vault, hsm, maa, imds]) await s?.close();
    await tpm?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function config(name: string, kty: string, v: VaultEmulator, extra: Record<string, unknown> = {}): string {
    const file = path.join(dir, `${name}.json`);
    fs.writeFileSync(file, JSON.stringify({ key: { kid: name, kty, authority: { endpoint: maa.endpoint }, akv: { endpoint: v.endpoint } }, ...extra }));
    return file;
  }
  const releaseArgs = (kid: string, v: VaultEmulator, ...more: string[]) =>
    ['release', '--maa', maa.endpoint, '--akv', v.endpoint, '--kid', kid, '--tpm', `tcp:127.0.0.1:${tpm.port}`, '--imds', imds.url, '--ca', caFile, ...more];

  it('imports an RSA key with the CVM policy and releases it to a new 0600 file; thumbprints match', async () => {
    const keyOut = path.join(dir, 'imported.pem');
    const imp = await run('import-key', '-c', config('cvm-cli-rsa', 'RSA-HSM', vault), '--policy-template', 'azure-cvm', '--ca', caFile, '--imds', imds.url, '--key-out', keyOut);
    expect(imp.code).toBe(0);
    const policy = JSON.parse(imp.out.split('\n')[1]) as { anyOf: { authority: string; allOf: unknown[] }[] };
    // Both CPU vendors' CVMs, as Azure's default CVM release policy: SEV-SNP or TDX, each compliant.
    expect(policy.anyOf).toEqual(['sevsnpvm', 'tdxvm'].map((t) => ({ authority: maa.url, allOf: [
      { claim: 'x-ms-isolation-tee.x-ms-attestation-type', equals: t },
      { claim: 'x-ms-isolation-tee.x-ms-compliance-status', equals: 'azure-compliant-cvm' },
    ] })));
    const importThumb = /material thumbprint ([0-9a-f]{16})/.exec(imp.err)?.[1];
    expect(importThumb).toBeDefined();

    const out = path.join(dir, 'released.pem');
    const r = await run(...releaseArgs('cvm-cli-rsa', vault, '--out', out, '--format', 'pem'));
    expect(r.err).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^${vault.url}/keys/cvm-cli-rsa/\\w+$`));
    expect(lines[1]).toBe(`thumbprint ${importThumb}`);
    expect(fs.statSync(out).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(out, 'utf8')).toBe(fs.readFileSync(keyOut, 'utf8'));
    // Nothing of the key on stdout/stderr.
    expect(r.out + r.err).not.toContain('PRIVATE KEY');

    // An existing file is never overwritten, nor a symlink followed.
    const again = await run(...releaseArgs('cvm-cli-rsa', vault, '--out', out, '--format', 'pem'));
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/exists: refusing to overwrite/);
    const link = path.join(dir, 'link.pem');
    fs.symlinkSync(path.join(dir, 'target-does-not-exist.pem'), link);
    const viaLink = await run(...releaseArgs('cvm-cli-rsa', vault, '--out', link));
    expect(viaLink.code).toBe(1);
    expect(fs.existsSync(path.join(dir, 'target-does-not-exist.pem'))).toBe(false);
  });

  it('releases an oct key from the Managed HSM as raw bytes (each enc)', async () => {
    const bytes = randomBytes(32);
    const imp = await run('import-key', '-c', config('cvm-cli-oct', 'oct-HSM', hsm), '--policy-template', 'azure-cvm', '--key-hex', bytes.toString('hex'), '--ca', caFile, '--imds', imds.url);
    expect(imp.code).toBe(0);
    for (const enc of ['CKM_RSA_AES_KEY_WRAP', 'RSA_AES_KEY_WRAP_256', 'RSA_AES_KEY_WRAP_384']) {
      const out = path.join(dir, `oct-${enc}.key`);
      const r = await run(...releaseArgs('cvm-cli-oct', hsm, '--out', out, '--format', 'raw', '--enc', enc, '--managed-hsm'));
      expect(r.err).not.toMatch(/ERR_/);
      expect(r.code).toBe(0);
      expect(fs.readFileSync(out)).toEqual(bytes);
    }
    const pem = await run(...releaseArgs('cvm-cli-oct', hsm, '--out', path.join(dir, 'oct.pem'), '--format', 'pem', '--managed-hsm'));
    expect(pem.code).toBe(2);
    // Checked on the vault's signed answer, before the vTPM unwraps anything (issue 20, item 7).
    expect(pem.err).toMatch(/--format pem is for RSA and EC keys; write an oct key as raw or jwk \(nothing was written\)/);
    expect(fs.existsSync(path.join(dir, 'oct.pem'))).toBe(false);
  });

  it('an output path whose directory does not exist is refused before attesting (issue 20, item 7)', async () => {
    const before = maa.issuedTokens.length;
    const out = path.join(dir, 'no-such-dir', 'k.key');
    const r = await run(...releaseArgs('cvm-cli-oct', hsm, '--out', out, '--format', 'raw', '--managed-hsm'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(new RegExp(`cannot create ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: its directory .*no-such-dir does not exist`));
    // Nothing was attested or released.
    expect(maa.issuedTokens.length).toBe(before);
    expect(fs.existsSync(path.dirname(out))).toBe(false);
  });

  it('the template and claims in the config together are refused; an unknown template too', async () => {
    const both = await run('import-key', '-c', config('cvm-cli-both', 'oct-HSM', vault, { claims: [[{ claim: 'a', equals: 'b' }]] }), '--policy-template', 'azure-cvm');
    expect(both.code).toBe(1);
    expect(both.err).toMatch(/has "claims" and --policy-template azure-cvm was given/);
    const unknown = await run('import-key', '-c', config('cvm-cli-unknown', 'oct-HSM', vault), '--policy-template', 'azure-aci');
    expect(unknown.err).toMatch(/policy template "azure-aci" is not one of azure-cvm/);
  });

  it('a TCP TPM off loopback is refused; bad formats and missing arguments are usage errors', async () => {
    const remote = await run('release', '--maa', maa.endpoint, '--akv', vault.endpoint, '--kid', 'k', '--tpm', 'tcp:10.0.0.1:2321', '--out', path.join(dir, 'never.key'));
    expect(remote.code).toBe(2);
    expect(remote.err).toMatch(/must be on loopback/);
    expect((await run('release', '--maa', maa.endpoint, '--akv', vault.endpoint, '--kid', 'k', '--format', 'der')).err).toMatch(/--format der is not one of jwk, pem, raw/);
    expect((await run('release', '--maa', maa.endpoint)).code).toBe(2);
    const enc = await run('release', '--maa', maa.endpoint, '--akv', vault.endpoint, '--kid', 'k', '--enc', 'RSA-OAEP-256', '--out', path.join(dir, 'never.key'));
    expect(enc.err).toMatch(/--enc "RSA-OAEP-256" is not one of CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256, RSA_AES_KEY_WRAP_384/);
    expect(fs.existsSync(path.join(dir, 'never.key'))).toBe(false);
  });
});
