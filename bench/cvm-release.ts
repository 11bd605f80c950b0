/**
 * Issue 14's speed row: key release on a (simulated) confidential VM, in process, concurrency 1, on a
 * real swtpm with the MAA / IMDS / Key Vault emulators on loopback.
 *   warm:  KeyReleasePipeline.release with the MAA token and the loaded TPM key reused
 *   floor: the vault release call alone with a ready token (and identity token) + one TPM RSA_Decrypt
 *          under a PolicyPCR session (what any CVM client must do at least)
 *   first: the first release of a fresh pipeline (TPM key creation, quote, certify, MAA, vault, unwrap),
 *          with the guest attestation's own step timings.
 * `tee: 'tdx'` runs the same on a simulated Intel TDX CVM (type-4 HCL report; the first release adds the
 * IMDS /acc/tdquote call and the MAA emulator's TD quote verification; warm releases reuse the token as on SEV-SNP).
 * Run by bench/run.ts; also on its own: `node node_modules/.cache/skr-bench/bench/cvm-release.js [N]`.
 */
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { providerCredential } from '../src/akv/credentials';
import { TokenProvider } from '../src/akv/identity';
import { importReleasableKey, sdkJwkFor } from '../src/akv/import-key';
import { ReleaseJwsVerifier } from '../src/akv/jws';
import { buildReleasePolicy } from '../src/akv/policy';
import { KeyReleasePipeline } from '../src/akv/release';
import { KeyVaultRelease } from '../src/akv/vault-release';
import { wrapKeyMaterial } from '../src/akv/wrap';
import { LocalThimSource } from '../src/certs/sources/local-thim';
import { parseEndpoint } from '../src/common/endpoint';
import { createHttpsFetch } from '../src/common/https-fetch';
import { cvmReleaseParts } from '../src/cvm/cvm-release-parts';
import type { Timings } from '../src/cvm/guest-attestation';
import { provisionSimulatedCvm } from '../src/cvm/simulator';
import { tpmOaepDecrypt } from '../src/cvm/tpm-kek';
import { loadOrCreateLocalCa } from '../src/emulators/ca';
import { startImdsEmulator } from '../src/emulators/imds';
import { startMaaEmulator } from '../src/emulators/maa';
import { startVaultEmulator } from '../src/emulators/akv';
import { SwtpmTcpTransport, TpmClient } from '../src/tpm';
import { fetchTdQuote } from '../src/tdx/imds-quote';
import { SimulatedTdxPlatform, TEST_ONLY_INTEL_ROOT_PEM } from '../src/tdx/simulator';
import { startSwtpm, swtpmAvailable } from '../tests/helpers/swtpm';

export interface CvmBenchResult {
  tee: 'sevsnp' | 'tdx';
  iterations: number;
  warm: { p50: number; p99: number };
  floor: { p50: number; p99: number };
  p50VsFloor: number;
  firstReleaseMs: number;
  firstAttestationTimingsMs: Timings;
}

const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

/** One IMDS identity for every run in this process (see the comment where it is used). */
const imdsSigningKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
let imdsIdentity: { tenantId: string; principals: Awaited<ReturnType<typeof startImdsEmulator>>['principals'] } | undefined;

export async function benchCvmRelease(iterations = 200, tee: 'sevsnp' | 'tdx' = 'sevsnp'): Promise<CvmBenchResult | { skipped: string }> {
  if (!swtpmAvailable()) return { skipped: 'swtpm is not installed (apt-get install -y swtpm swtpm-tools)' };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-bench-cvm-'));
  const tpm = await startSwtpm();
  const closers: { close(): Promise<void> }[] = [];
  try {
    const tdx = tee === 'tdx' ? new SimulatedTdxPlatform() : undefined;
    const cvm = await tpm.use((c) => provisionSimulatedCvm(c, tdx ? { tdx } : {}));
    const ca = loadOrCreateLocalCa(path.join(dir, 'ca'));
    const maa = await startMaaEmulator({ ca, trustedArkPem: [cvm.platform.arkPem], trustedVtpmCaPem: [cvm.ca.certPem], ...(tdx ? { trustedIntelRootPem: [TEST_ONLY_INTEL_ROOT_PEM] } : {}) });
    closers.push(maa);
    // msal's managed-identity token cache is process-wide and not keyed by endpoint (src/akv/identity.ts): every
    // run of this process answers as the same identity of the same tenant, so a cached token stays valid.
    const imds = await startImdsEmulator({ thim: () => cvm.platform.thimCertificates(), ...(tdx ? { tdQuote: (r: Buffer) => tdx.quote(r) } : {}), signingKey: imdsSigningKey, ...(imdsIdentity ?? {}) });
    imdsIdentity ??= { tenantId: imds.tenantId, principals: imds.principals };
    closers.push(imds);
    const vault = await startVaultEmulator({ flavour: 'vault', ca, stateDir: path.join(dir, 'vault'), accessTokens: { publicKey: imds.publicKey, issuer: imds.issuer } });
    closers.push(vault);
    const fetch = createHttpsFetch({ extraCaPem: [ca.certPem] });
    closers.push({ close: async () => fetch.destroy() });
    await importReleasableKey({
      vaultEndpoint: vault.endpoint,
      name: 'bench-cvm',
      jwk: sdkJwkFor('RSA-HSM', generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey),
      policy: buildReleasePolicy({ authority: maa.url, anyOfGroups: [[{ claim: 'x-ms-isolation-tee.x-ms-compliance-status', equals: 'azure-compliant-cvm' }]] }),
      credential: providerCredential(new TokenProvider({ imdsEndpoint: imds.url })),
      fetch,
      relaxedChallenge: true,
    });
    const guest = new TpmClient(new SwtpmTcpTransport({ port: tpm.port }));
    closers.push(guest);
    let timings: Timings = {};
    const parts = cvmReleaseParts({ tpm: guest, fetch, collateral: (s) => new LocalThimSource({ baseUrl: imds.url }).fetch(undefined, s), os: { type: 'Linux', distro: 'Ubuntu', versionMajor: 24, versionMinor: 4 }, tcgLog: Buffer.alloc(0), onTimings: (t) => (timings = t), ...(tdx ? { tdQuote: (r: Buffer, s?: AbortSignal) => fetchTdQuote(r, { baseUrl: imds.url }, s) } : {}) });
    closers.unshift({ close: () => parts.close() });
    const vaultCall = new KeyVaultRelease({ tokens: new TokenProvider({ imdsEndpoint: imds.url }), fetch, relaxedChallengeEndpoints: [vault.endpoint] });
    const pipeline = new KeyReleasePipeline({ attester: parts.attester, keks: parts.keks, vault: vaultCall, jws: new ReleaseJwsVerifier({ extraCaPem: [ca.certPem] }), enc: 'RSA_AES_KEY_WRAP_256' });
    const req = { maaEndpoint: maa.endpoint, akvEndpoint: vault.endpoint, kid: 'bench-cvm' };

    const t0 = performance.now();
    await pipeline.release(req);
    const firstReleaseMs = performance.now() - t0;

    // The floor's inputs: the cached token, and one RSA part wrapped to the TPM key.
    const kek = await parts.keks.take();
    const rsaPart = wrapKeyMaterial(randomBytes(32), createPublicKey({ key: kek.publicJwk, format: 'jwk' }), 'RSA_AES_KEY_WRAP_256').subarray(0, 256);
    const maaToken = maa.issuedTokens[maa.issuedTokens.length - 1];
    const vaultEp = parseEndpoint('akv', vault.endpoint);
    const floorOnce = async () => {
      await vaultCall.release({ vault: vaultEp, name: 'bench-cvm', maaToken, enc: 'RSA_AES_KEY_WRAP_256' });
      const key = await parts.keks.lock.run(() => parts.keks.loaded());
      await tpmOaepDecrypt(guest, key.handle, rsaPart, 'RSA_AES_KEY_WRAP_256');
    };
    for (let i = 0; i < 10; i++) {
      await pipeline.release(req);
      await floorOnce();
    }
    const warm: number[] = [];
    const floor: number[] = [];
    // Interleaved so both see the same machine load.
    for (let i = 0; i < iterations; i++) {
      let s = performance.now();
      await pipeline.release(req);
      warm.push(performance.now() - s);
      s = performance.now();
      await floorOnce();
      floor.push(performance.now() - s);
    }
    warm.sort((a, b) => a - b);
    floor.sort((a, b) => a - b);
    return {
      tee,
      iterations,
      warm: { p50: round(pct(warm, 50)), p99: round(pct(warm, 99)) },
      floor: { p50: round(pct(floor, 50)), p99: round(pct(floor, 99)) },
      p50VsFloor: round(pct(warm, 50) / pct(floor, 50)),
      firstReleaseMs: round(firstReleaseMs, 1),
      firstAttestationTimingsMs: timings,
    };
  } finally {
    for (const c of closers) await c.close().catch(() => undefined);
    await tpm.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The printed rows. */
export function cvmBenchLines(r: CvmBenchResult | { skipped: string }): string[] {
  if ('skipped' in r) return [`/key/release on a CVM (swtpm): skipped: ${r.skipped}`];
  const ms = (x: number) => `${x} ms`;
  return [
    `${r.tee === 'tdx' ? 'TDX ' : 'SEV-SNP '}CVM release, in process, concurrency 1, swtpm (n=${r.iterations})`.padEnd(66) + 'p50'.padEnd(16) + 'p99'.padEnd(16) + 'vs floor p50',
    '  floor: vault call (ready token) + 1 TPM RSA_Decrypt'.padEnd(66) + ms(r.floor.p50).padEnd(16) + ms(r.floor.p99).padEnd(16) + '1',
    '  warm (token + loaded TPM key reused)'.padEnd(66) + ms(r.warm.p50).padEnd(16) + ms(r.warm.p99).padEnd(16) + String(r.p50VsFloor),
    `  first release ${ms(r.firstReleaseMs)}; its guest attestation (ms): ${JSON.stringify(r.firstAttestationTimingsMs)}`,
    `  goal: warm p50 ≤ 1.5 x floor: ${r.p50VsFloor <= 1.5 ? 'met' : 'NOT met'}`,
  ];
}

if (require.main === module) {
  benchCvmRelease(Number(process.argv[2] ?? 200), process.argv[3] === 'tdx' ? 'tdx' : 'sevsnp').then(
    (r) => {
      process.stdout.write(cvmBenchLines(r).join('\n') + '\n');
      process.exit(0);
    },
    (e: unknown) => {
      process.stderr.write(`cvm bench failed: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
