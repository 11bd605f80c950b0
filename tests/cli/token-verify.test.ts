/**
 * `skr token verify` against tokens from the real MAA emulator (simulated evidence): online through the
 * authority's OpenID metadata (with --ca for the local CA), offline with --jwks, and each failing step.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { MaaClient } from '../../src/maa/client';
import { reportDataFor } from '../../src/snp/report';
import { SimulatedPlatform, simulatedUvmEndorsementBase64, TEST_ONLY_UVM_ROOT_SHA256 } from '../../src/snp/simulator';
import { runCli as run } from '../helpers/cli';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-cli-token-'));
const write = (name: string, data: string | Buffer) => {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, data);
  return p;
};
const ca = loadOrCreateLocalCa(path.join(tmp, 'ca'));
const platform = new SimulatedPlatform();
const fetch = createHttpsFetch({ extraCaPem: [ca.certPem], keepAlive: false });
const RUNTIME = Buffer.from(JSON.stringify({ keys: [{ kty: 'RSA', kid: 'k', n: 'AQAB', e: 'AQAB', key_ops: ['encrypt'] }] }));

function startEmulator(): Promise<MaaEmulator> {
  return startMaaEmulator({ ca, trustedArkPem: [platform.arkPem], trustedUvmRootFingerprints: [TEST_ONLY_UVM_ROOT_SHA256] });
}

function mint(emu: MaaEmulator): Promise<string> {
  return new MaaClient({ fetch, retries: 0 }).attest(emu.endpoint, {
    report: platform.signReport({ reportData: reportDataFor(RUNTIME) }),
    vcekPem: platform.vcekPem,
    chainPem: platform.askPem + platform.arkPem,
    uvmEndorsementBase64: simulatedUvmEndorsementBase64(platform.measurement),
    runtimeData: RUNTIME,
  });
}

const payload = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as Record<string, number>;
const iso = (s: number) => new Date(s * 1000).toISOString();

describe('skr token verify', () => {
  let emu: MaaEmulator;
  let token: string;
  let jwksFile: string;

  beforeAll(async () => {
    emu = await startEmulator();
    token = await mint(emu);
    jwksFile = write('jwks.json', JSON.stringify(emu.jwks));
  });
  afterAll(async () => {
    await emu.close();
    fetch.destroy();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('verifies online with the keys from the authority\'s OpenID metadata (--ca for the local CA) and prints the claims', async () => {
    const r = await run('token', 'verify', token, '--authority', emu.url, '--ca', ca.certPath);
    expect(r.code).toBe(0);
    const claims = JSON.parse(r.out) as Record<string, unknown>;
    expect(claims.iss).toBe(emu.issuer);
    expect(claims['x-ms-attestation-type']).toBe('sevsnpvm');
    expect(claims['x-ms-sevsnpvm-reportdata']).toBe(reportDataFor(RUNTIME).toString('hex'));
    expect(r.err.startsWith(`OK: MAA token signed by key "${emu.signingKey.kid}" of ${emu.url} (keys from its OpenID metadata), issuer matches, valid at `)).toBe(true);
    expect(r.err).toMatch(/ \(now\) until \d{4}-/);
  });

  it('reads the token from a file, bare or as the sidecar\'s {"token": ...} answer', async () => {
    expect((await run('token', 'verify', write('t.jwt', token + '\n'), '--authority', emu.url, '--jwks', jwksFile)).code).toBe(0);
    expect((await run('token', 'verify', write('t.json', JSON.stringify({ token })), '--authority', emu.url, '--jwks', jwksFile)).code).toBe(0);
  });

  it('without --ca, fails at maa-jwks and says to pass --ca', async () => {
    const r = await run('token', 'verify', token, '--authority', emu.url);
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/^FAILED at maa-jwks: cannot fetch the signing keys of https:\/\/127\.0\.0\.1:\d+: .*pass --ca/);
  }, 30_000);

  it('verifies offline with --jwks once the authority is gone', async () => {
    const gone = await startEmulator();
    const t = await mint(gone);
    const keys = write('gone-jwks.json', JSON.stringify(gone.jwks));
    await gone.close();
    const r = await run('token', 'verify', t, '--authority', gone.url, '--jwks', keys);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/^OK: .*\(--jwks .*gone-jwks\.json\)/);
  });

  it('fails at maa-token-issuer for another authority', async () => {
    const r = await run('token', 'verify', token, '--authority', 'https://sharedeus2.eus2.attest.azure.net', '--jwks', jwksFile);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at maa-token-issuer: MAA token issuer ".*" is not https:\/\/sharedeus2\.eus2\.attest\.azure\.net$/);
    expect(r.out).toBe('');
  });

  it('checks nbf/exp at --at and fails at maa-token-expired outside the lifetime', async () => {
    const { nbf, exp } = payload(token);
    const inside = await run('token', 'verify', token, '--authority', emu.url, '--jwks', jwksFile, '--at', iso(exp - 600));
    expect(inside.code).toBe(0);
    expect(inside.err).toMatch(new RegExp(`valid at ${iso(exp - 600).replace(/\./g, '\\.')} \\(--at\\) until ${iso(exp).replace(/\./g, '\\.')}`));
    const after = await run('token', 'verify', token, '--authority', emu.url, '--jwks', jwksFile, '--at', iso(exp + 3600));
    expect(after.code).toBe(1);
    expect(after.err).toMatch(/^FAILED at maa-token-expired: MAA token expired at /);
    const before = await run('token', 'verify', token, '--authority', emu.url, '--jwks', jwksFile, '--at', iso(nbf - 3600));
    expect(before.code).toBe(1);
    expect(before.err).toMatch(/^FAILED at maa-token-expired: MAA token is not valid before /);
  });

  it('fails at maa-token-expired for a token the emulator issued already expired (online)', async () => {
    emu.faults.inject({ route: 'attest', kind: 'expired-token' });
    const stale = await mint(emu);
    const r = await run('token', 'verify', stale, '--authority', emu.url, '--ca', ca.certPath);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at maa-token-expired: /);
  });

  it('fails at maa-token-signature for a tampered signature or a key the JWKS does not hold', async () => {
    const [h, p, s] = token.split('.');
    const flipped = `${h}.${p}.${s[0] === 'A' ? 'B' : 'A'}${s.slice(1)}`;
    const bad = await run('token', 'verify', flipped, '--authority', emu.url, '--jwks', jwksFile);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/^FAILED at maa-token-signature: MAA token signature does not verify/);
    const other = await startEmulator();
    const otherKeys = write('other-jwks.json', JSON.stringify(other.jwks));
    await other.close();
    const r = await run('token', 'verify', token, '--authority', emu.url, '--jwks', otherKeys);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at maa-token-signature: token key id ".*" is not in --jwks/);
  });

  it('refuses bad arguments as usage errors (exit 2)', async () => {
    const cases: string[][] = [
      [token, '--authority', 'http://127.0.0.1:1'],
      [token, '--authority', emu.url, '--at', 'tomorrow'],
      [token],
      [token, '--authority', emu.url, '--jwks', write('not.json', 'nope')],
      [token, '--authority', emu.url, '--jwks', jwksFile, '--ca', ca.certPath],
    ];
    for (const args of cases) {
      const r = await run('token', 'verify', ...args);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/^skr token verify: /);
    }
  });
});
