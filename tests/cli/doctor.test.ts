/**
 * `skr doctor` as a CLI against running local stacks: `skr local` on the simulated container platform and
 * on the simulated confidential VM (swtpm), read from their state files. All ok → exit 0; a key whose
 * policy the fresh token fails → exit 1 with the explanation; an unreachable vault or MAA → exit 1 naming
 * the host; an identity that may not read keys → the get permission named; --json's shape. And the modules
 * it loads off a local stack: no emulator, no simulator.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { providerCredential } from '../../src/akv/credentials';
import { TokenProvider } from '../../src/akv/identity';
import { importReleasableKey, sdkJwkFor } from '../../src/akv/import-key';
import { buildReleasePolicy } from '../../src/akv/policy';
import { POLICY_TEMPLATES } from '../../src/akv/policy-templates';
import type { DoctorReport } from '../../src/cli/commands/doctor';
import { startLocalStack } from '../../src/cli/local-stack';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { createLogger } from '../../src/server/logger';
import { runCli as run } from '../helpers/cli';
import { swtpmAvailable, SWTPM_INSTALL } from '../helpers/swtpm';

const REPO = path.resolve(__dirname, '..', '..');

/** A running local stack, its state file, and a way to import keys with a given policy into its vault. */
async function stackWithStateFile(dir: string, platform: 'aci' | 'azure-cvm') {
  const stack = await startLocalStack({ stateDir: dir, port: 0, platform, logger: createLogger({ silent: true }) });
  const stateFile = path.join(dir, 'state.json');
  fs.writeFileSync(stateFile, JSON.stringify(stack.state));
  const ca = fs.readFileSync(stack.state.caCertPath, 'utf8');
  const fetch = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
  const credential = providerCredential(new TokenProvider({ imdsEndpoint: stack.state.imdsUrl, extraCaPem: [ca] }));
  const importKey = (name: string, claims: { claim: string; equals: string }[]) =>
    importReleasableKey({
      vaultEndpoint: stack.state.vaultEndpoint,
      name,
      jwk: sdkJwkFor('RSA-HSM', generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey),
      policy: buildReleasePolicy({ authority: `https://${stack.state.maaEndpoint}`, anyOfGroups: [claims] }),
      credential,
      fetch,
      relaxedChallenge: true,
    });
  return { stack, stateFile, importKey, close: async () => { fetch.destroy(); await stack.close(); } };
}

// One state directory for both stacks (one after the other): the IMDS emulator keeps its signing key
// there, so managed-identity tokens cached in this process stay valid across them.
let dir: string;
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const lineOf = (out: string, check: string) => out.split('\n').find((l) => new RegExp(`^(ok|FAIL|skip)\\s+${check}\\s`).test(l));

describe('skr doctor on skr local (aci, simulated SEV-SNP)', () => {
  let s: Awaited<ReturnType<typeof stackWithStateFile>>;
  beforeAll(async () => {
    dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'skr-doctor-'));
    s = await stackWithStateFile(dir, 'aci');
    await s.importKey('doctor-good', [
      { claim: 'x-ms-sevsnpvm-hostdata', equals: s.stack.state.hostData },
      { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' },
    ]);
    await s.importKey('doctor-other-hostdata', [
      { claim: 'x-ms-sevsnpvm-hostdata', equals: createHash('sha256').update('another ccePolicy').digest('hex') },
      { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' },
    ]);
  }, 90_000);
  afterAll(async () => {
    await s?.close();
  });

  it('every check ok → exit 0, one line per check', async () => {
    const r = await run('doctor', '--state-file', s.stateFile);
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    expect(lines.map((l) => /^(\S+)\s+(\S+)/.exec(l)?.slice(1, 3))).toEqual([
      ['ok', 'platform'], ['ok', 'collateral'], ['ok', 'identity'], ['ok', 'maa'], ['ok', 'vault'],
    ]);
    expect(lineOf(r.out, 'platform')).toMatch(/SIMULATED SEV-SNP.*answered/);
    expect(lineOf(r.out, 'collateral')).toMatch(/verifies the report/);
    expect(lineOf(r.out, 'identity')).toContain(`oid=${s.stack.imds.defaultPrincipal.objectId}`);
    expect(lineOf(r.out, 'maa')).toContain(`iss https://${s.stack.state.maaEndpoint}`);
    expect(r.err).toBe('skr doctor: all 5 checks passed');
    // Neither the identity's token nor an MAA token is printed.
    for (const jwt of [...s.stack.imds.issuedTokens, ...s.stack.maa.issuedTokens]) expect(r.out + r.err).not.toContain(jwt.split('.')[1]);
  }, 60_000);

  it('--kid of a key the fresh token satisfies → key and policy ok, exit 0', async () => {
    const r = await run('doctor', '--state-file', s.stateFile, '--kid', 'doctor-good');
    expect(r.code).toBe(0);
    expect(lineOf(r.out, 'key')).toMatch(/^ok\s+key\s+key https:\/\/127\.0\.0\.1:\d+\/keys\/doctor-good\/\w+ exists, is exportable/);
    expect(lineOf(r.out, 'policy')).toMatch(/^ok\s+policy\s+a fresh MAA token satisfies the release policy of doctor-good/);
  }, 60_000);

  it('--kid of a key whose policy the token fails → exit 1 at policy, with the explanation', async () => {
    const r = await run('doctor', '--state-file', s.stateFile, '--kid', 'doctor-other-hostdata');
    expect(r.code).toBe(1);
    expect(lineOf(r.out, 'key')).toMatch(/^ok/);
    expect(lineOf(r.out, 'policy')).toMatch(new RegExp(`^FAIL\\s+policy\\s+release policy conditions not met \\(anyOf\\[0\\]\\): x-ms-sevsnpvm-hostdata equals "[0-9a-f]{64}" \\(token has "${s.stack.state.hostData}"\\)`));
    expect(r.out).toMatch(/fix: hostdata mismatch/);
    expect(r.err).toMatch(/^skr doctor: FAILED at policy: release policy conditions not met/);
  }, 60_000);

  it('--json: the report shape, with the explanation a 403 would carry', async () => {
    const r = await run('doctor', '--state-file', s.stateFile, '--kid', 'doctor-other-hostdata', '--json');
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.out) as DoctorReport;
    expect(rep.ok).toBe(false);
    expect(rep.firstFailure).toBe('policy');
    expect(rep.checks.map((c) => [c.name, c.status])).toEqual([
      ['platform', 'ok'], ['collateral', 'ok'], ['identity', 'ok'], ['maa', 'ok'], ['vault', 'ok'], ['key', 'ok'], ['policy', 'FAIL'],
    ]);
    const policy = rep.checks[6];
    expect(policy.explanation).toMatchObject({
      policyRead: true,
      claimsSatisfyPolicy: false,
      closestBranch: { index: 0, issuerMatches: true, failing: [{ claim: 'x-ms-sevsnpvm-hostdata', operator: 'equals', present: true, has: s.stack.state.hostData }] },
    });
    const ok = JSON.parse((await run('doctor', '--state-file', s.stateFile, '--json')).out) as DoctorReport;
    expect(ok).toMatchObject({ ok: true, firstFailure: null });
    expect(ok.checks.every((c) => c.status === 'ok' && typeof c.detail === 'string' && c.fix === undefined)).toBe(true);
  }, 60_000);

  it('an unreachable vault host → exit 1 naming it; the checks that need it are skipped', async () => {
    const r = await run('doctor', '--state-file', s.stateFile, '--akv', 'nosuch.vault.azure.net', '--kid', 'doctor-good', '--timeout', '20');
    expect(r.code).toBe(1);
    expect(lineOf(r.out, 'vault')).toMatch(/^FAIL\s+vault\s+.*nosuch\.vault\.azure\.net/);
    expect(r.out).toMatch(/fix: check --akv nosuch\.vault\.azure\.net/);
    expect(lineOf(r.out, 'key')).toMatch(/^skip\s+key\s+needs vault/);
    expect(r.err).toMatch(/^skr doctor: FAILED at vault: .*nosuch\.vault\.azure\.net/);
  }, 60_000);

  it('an MAA endpoint that does not answer → exit 1 at maa naming it', async () => {
    const r = await run('doctor', '--state-file', s.stateFile, '--maa', '127.0.0.1:9', '--timeout', '20');
    expect(r.code).toBe(1);
    expect(lineOf(r.out, 'maa')).toMatch(/^FAIL\s+maa\s+.*127\.0\.0\.1:9/);
    expect(r.err).toMatch(/^skr doctor: FAILED at maa: /);
  }, 60_000);

  it('each check is bounded: an MAA that accepts the connection and never answers fails at maa within --timeout', async () => {
    const silent = net.createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const r = await run('doctor', '--state-file', s.stateFile, '--maa', `127.0.0.1:${port}`, '--timeout', '2');
      expect(r.code).toBe(1);
      expect(lineOf(r.out, 'maa')).toMatch(/^FAIL\s+maa\s+.*did not answer within 2 s/);
      expect(lineOf(r.out, 'vault')).toMatch(/^ok/);
    } finally {
      silent.close();
    }
  }, 60_000);

  it('an identity that may not read keys → the vault check fails naming the get permission', async () => {
    const oid = s.stack.imds.defaultPrincipal.objectId;
    s.stack.vault.revokeRead(oid);
    try {
      const r = await run('doctor', '--state-file', s.stateFile, '--kid', 'doctor-good');
      expect(r.code).toBe(1);
      expect(lineOf(r.out, 'vault')).toMatch(/^FAIL\s+vault\s+.*may not read keys.*403/);
      expect(r.out).toMatch(/fix: grant the identity the "get" key permission/);
    } finally {
      s.stack.vault.grantRead(oid);
    }
  }, 60_000);

  it('usage errors exit 2', async () => {
    expect((await run('doctor')).code).toBe(2);
    expect((await run('doctor', '--maa', 'x.attest.azure.net')).code).toBe(2);
    expect((await run('doctor', '--state-file', s.stateFile, '--platform', 'sgx')).code).toBe(2);
    expect((await run('doctor', '--state-file', s.stateFile, '--timeout', '0')).code).toBe(2);
    expect((await run('doctor', '--state-file', path.join(dir, 'missing.json'))).code).toBe(2);
  });
});

describe('skr doctor on skr local --platform azure-cvm (swtpm)', () => {
  let s: Awaited<ReturnType<typeof stackWithStateFile>>;
  beforeAll(async () => {
    if (!swtpmAvailable()) throw new Error(`swtpm is not installed: ${SWTPM_INSTALL}`);
    dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'skr-doctor-'));
    s = await stackWithStateFile(dir, 'azure-cvm');
    await s.importKey('doctor-cvm', POLICY_TEMPLATES['azure-cvm'][0].map((c) => ({ ...c })));
    // The container names at the top level: on a CVM the SEV-SNP claims are under x-ms-isolation-tee.
    await s.importKey('doctor-cvm-top-level', [
      { claim: 'x-ms-attestation-type', equals: 'sevsnpvm' },
      { claim: 'x-ms-compliance-status', equals: 'azure-compliant-cvm' },
    ]);
  }, 90_000);
  afterAll(async () => {
    await s?.close();
  });

  it('every check ok on the vTPM, with a key of the CVM template → exit 0', async () => {
    const r = await run('doctor', '--state-file', s.stateFile, '--kid', 'doctor-cvm');
    expect(r.err).toBe('skr doctor: all 7 checks passed');
    expect(r.code).toBe(0);
    expect(lineOf(r.out, 'platform')).toMatch(/Azure confidential VM \(vTPM .*HCL report in vTPM NV 0x01400001/);
    expect(lineOf(r.out, 'collateral')).toMatch(/VCEK chain from THIM .* verifies the report/);
    expect(lineOf(r.out, 'maa')).toMatch(/attestation type azurevm\/sevsnpvm/);
  }, 90_000);

  it('THIM (IMDS) out of reach: the first failure is the collateral, naming where it asked; MAA is not tried', async () => {
    const r = await run('doctor', '--state-file', s.stateFile, '--imds', 'http://127.0.0.1:9', '--json', '--timeout', '20');
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.out) as DoctorReport;
    expect(rep.firstFailure).toBe('collateral');
    // (The identity's token may come from this process's token cache, so its line is not asserted.)
    expect(rep.checks.map((c) => c.name)).toEqual(['platform', 'collateral', 'identity', 'maa', 'vault']);
    expect(rep.checks[0].status).toBe('ok');
    expect(rep.checks[1]).toMatchObject({ status: 'FAIL', detail: expect.stringContaining('127.0.0.1:9') as unknown });
    expect(rep.checks[3]).toEqual({ name: 'maa', status: 'skip', detail: 'needs collateral' });
    expect(rep.checks[1].fix).toMatch(/IMDS \(169\.254\.169\.254\)/);
  }, 90_000);

  it('a policy with top-level claim names → exit 1 at policy, pointing at x-ms-isolation-tee.', async () => {
    const r = await run('doctor', '--state-file', s.stateFile, '--kid', 'doctor-cvm-top-level', '--json');
    expect(r.code).toBe(1);
    const rep = JSON.parse(r.out) as DoctorReport;
    expect(rep.firstFailure).toBe('policy');
    const x = rep.checks.find((c) => c.name === 'policy')?.explanation;
    expect(x?.closestBranch?.failing).toContainEqual({ path: 'anyOf[0].allOf[0]', claim: 'x-ms-attestation-type', operator: 'equals', wants: 'sevsnpvm', present: true, has: 'azurevm' });
    expect(x?.hints).toContainEqual(expect.stringContaining('use "x-ms-isolation-tee.x-ms-attestation-type"'));
  }, 90_000);
});

describe('what skr doctor loads off a local stack', () => {
  it('no emulator and no simulator module; no device here → exit 1 at platform', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-doctor-prod-'));
    try {
      const script = `
        const { main } = require(${JSON.stringify(path.join(REPO, 'src', 'cli', 'main.ts'))});
        const out = [];
        const io = { out: (l) => out.push(l), err: (l) => out.push(l) };
        main(['doctor', '--maa', 'nosuch.attest.azure.net', '--akv', 'nosuch.vault.azure.net', '--imds', 'http://127.0.0.1:9', '--timeout', '10'], io).then((code) => {
          const src = ${JSON.stringify(path.join(REPO, 'src') + path.sep)};
          const modules = Object.keys(require.cache).filter((f) => f.startsWith(src)).map((f) => f.slice(src.length).split(require('node:path').sep).join('/'));
          process.stdout.write(JSON.stringify({ code, modules, out }));
          process.exit(0);
        });`;
      const r = spawnSync(process.execPath, ['-r', path.join(REPO, 'tests', 'hardening', 'ts-hook.js'), '-e', script], {
        cwd: dir,
        env: { PATH: process.env.PATH, HOME: dir },
        encoding: 'utf8',
        timeout: 90_000,
      });
      const got = JSON.parse(r.stdout || '{}') as { code: number; modules: string[]; out: string[] };
      expect(got.code).toBe(1);
      expect(got.out.join('\n')).toMatch(/FAILED at platform/);
      expect(got.modules).toEqual(expect.arrayContaining(['cli/commands/doctor.ts', 'cli/release-setup.ts', 'akv/vault-release.ts']));
      expect(got.modules.filter((m) => m.startsWith('emulators/'))).toEqual([]);
      expect(got.modules.filter((m) => m.startsWith('snp/simulator/') || m.startsWith('cvm/simulator/') || m === 'server/simulation.ts')).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
