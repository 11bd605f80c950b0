/**
 * Issue 14's key release on a confidential VM, end to end on loopback: a real swtpm provisioned as a
 * simulated CVM, the MAA emulator's /attest/AzureGuest, the IMDS emulator (THIM + identity tokens), the
 * Key Vault and Managed HSM emulators. The unchanged KeyReleasePipeline runs with the CVM attester and
 * the TPM KEK; the vault wraps to the token's TpmEphemeralEncryptionKey and the vTPM unwraps.
 */
import { constants, createPublicKey, generateKeyPairSync, publicEncrypt, randomBytes, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { providerCredential } from '../../src/akv/credentials';
import { TokenProvider } from '../../src/akv/identity';
import { importReleasableKey, sdkJwkFor, type ImportKty } from '../../src/akv/import-key';
import { ReleaseJwsVerifier } from '../../src/akv/jws';
import { StaleKekError } from '../../src/akv/kek';
import { buildReleasePolicy, evaluateReleasePolicy, failedConditions } from '../../src/akv/policy';
import { explainPolicy } from '../../src/akv/policy-explain';
import { KeyReleasePipeline, ReleaseRefusedError, type KeyReleaseParts } from '../../src/akv/release';
import { KeyVaultRelease } from '../../src/akv/vault-release';
import { RELEASE_ENCS, wrapKeyMaterial, type ReleaseEnc } from '../../src/akv/wrap';
import { LocalThimSource } from '../../src/certs/sources/local-thim';
import { VerificationError } from '../../src/common/errors';
import { createHttpsFetch, type HttpsFetch } from '../../src/common/https-fetch';
import type { FetchLike } from '../../src/common/http';
import { cvmReleaseParts, type CvmReleaseParts } from '../../src/cvm/cvm-release-parts';
import { TPM_KEY_KID } from '../../src/cvm/guest-attestation';
import { explainTpmUnwrapError, tokenTpmKeyModulus, tpmOaepDecrypt, TpmKek, TpmKekSource } from '../../src/cvm/tpm-kek';
import { provisionSimulatedCvm, type SimulatedCvm } from '../../src/cvm/simulator';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { startImdsEmulator, type ImdsEmulator } from '../../src/emulators/imds';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { selectWrappingKey, startVaultEmulator, type VaultEmulator } from '../../src/emulators/akv';
import { PASSWORD, policyAuth, PCRS_0_7, SwtpmTcpTransport, TPM_ALG, TPM_SE, TpmClient, TpmError } from '../../src/tpm';
import { startSwtpm, type Swtpm } from '../helpers/swtpm';

const OS = { type: 'Linux', distro: 'Ubuntu', versionMajor: 24, versionMinor: 4 };
const CVM_CLAIMS = [
  { claim: 'x-ms-isolation-tee.x-ms-attestation-type', equals: 'sevsnpvm' },
  { claim: 'x-ms-isolation-tee.x-ms-compliance-status', equals: 'azure-compliant-cvm' },
];

describe('key release on a CVM: TPM-resident KEK on swtpm against the emulators', () => {
  let tpm: Swtpm;
  let cvm: SimulatedCvm;
  let maa: MaaEmulator;
  let imds: ImdsEmulator;
  let vault: VaultEmulator;
  let hsm: VaultEmulator;
  let fetch: HttpsFetch;
  let guest: TpmClient;
  let dir: string;
  let caPem: string;
  let credential: ReturnType<typeof providerCredential>;
  const open: CvmReleaseParts[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-cvm-kek-'));
    tpm = await startSwtpm();
    cvm = await tpm.use((c) => provisionSimulatedCvm(c));
    const ca = loadOrCreateLocalCa(path.join(dir, 'ca'));
    caPem = ca.certPem;
    maa = await startMaaEmulator({ ca, trustedArkPem: [cvm.platform.arkPem], trustedVtpmCaPem: [cvm.ca.certPem] });
    imds = await startImdsEmulator({ thim: () => cvm.platform.thimCertificates() });
    const accessTokens = { publicKey: imds.publicKey, issuer: imds.issuer };
    vault = await startVaultEmulator({ flavour: 'vault', ca, stateDir: path.join(dir, 'vault'), accessTokens });
    hsm = await startVaultEmulator({ flavour: 'hsm', ca, stateDir: path.join(dir, 'hsm'), accessTokens });
    fetch = createHttpsFetch({ extraCaPem: [ca.certPem] });
    credential = providerCredential(new TokenProvider({ imdsEndpoint: imds.url }));
    guest = new TpmClient(new SwtpmTcpTransport({ port: tpm.port }));
  }, 60_000);
  afterAll(async () => {
    for (const p of open) await p.close().catch(() => undefined);
    await guest?.close();
    fetch?.destroy();
    for (const s of [vault, hsm, maa, imds]) await s?.close();
    await tpm?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** swtpm has three object slots: only one KEK source keeps its key loaded at a time, as in the sidecar. */
  async function closeAll(): Promise<void> {
    for (const p of open.splice(0)) await p.close();
  }

  async function pipeline(over: Partial<KeyReleaseParts> & { attestations?: number[]; afterAttest?: () => Promise<void> } = {}): Promise<{ pipe: KeyReleasePipeline; parts: CvmReleaseParts }> {
    await closeAll();
    const parts = cvmReleaseParts({
      tpm: guest,
      collateral: (s) => new LocalThimSource({ baseUrl: imds.url }).fetch(undefined, s),
      fetch,
      os: OS,
      tcgLog: Buffer.alloc(0),
    });
    open.push(parts);
    const { attestations, afterAttest, ...rest } = over;
    const attester = {
      attest: async (...a: Parameters<typeof parts.attester.attest>) => {
        const t = await parts.attester.attest(...a);
        attestations?.push(1);
        // A fake of the platform (PCR drift right after attestation) goes in through the Attester interface.
        if (afterAttest) await afterAttest();
        return t;
      },
    };
    const pipe = new KeyReleasePipeline({
      attester,
      keks: parts.keks,
      vault: new KeyVaultRelease({ tokens: new TokenProvider({ imdsEndpoint: imds.url }), fetch, managedHsmEndpoints: [hsm.endpoint], relaxedChallengeEndpoints: [vault.endpoint, hsm.endpoint] }),
      jws: new ReleaseJwsVerifier({ extraCaPem: [caPem] }),
      ...rest,
    });
    return { pipe, parts };
  }

  async function importKey(name: string, kty: ImportKty, material: Buffer | KeyObject, opts: { vault?: VaultEmulator; claims?: { claim: string; equals: string }[] } = {}) {
    return importReleasableKey({
      vaultEndpoint: (opts.vault ?? vault).endpoint,
      name,
      jwk: sdkJwkFor(kty, material),
      policy: buildReleasePolicy({ authority: maa.url, anyOfGroups: [opts.claims ?? CVM_CLAIMS] }),
      credential,
      fetch,
      relaxedChallenge: true,
    });
  }

  const req = (kid: string, v: VaultEmulator = vault, enc?: ReleaseEnc) => ({ maaEndpoint: maa.endpoint, akvEndpoint: v.endpoint, kid, ...(enc ? { enc } : {}) });

  describe('releases the key the vault holds', () => {
    let pipe: KeyReleasePipeline;
    let parts: CvmReleaseParts;
    const attestations: number[] = [];
    let rsa: KeyObject;
    beforeAll(async () => {
      ({ pipe, parts } = await pipeline({ attestations, enc: 'RSA_AES_KEY_WRAP_256' }));
      rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
      await importKey('cvm-rsa', 'RSA-HSM', rsa);
    });

    it.each(RELEASE_ENCS.map((e) => [e]))('RSA-HSM key with enc %s (OAEP hash in the TPM as enc names)', async (enc) => {
      const r = await pipe.release(req('cvm-rsa', vault, enc));
      const want = rsa.export({ format: 'jwk' });
      for (const k of ['n', 'e', 'd', 'p', 'q', 'dp', 'dq', 'qi'] as const) expect(r.jwk[k]).toBe(want[k]);
    });

    it('the default enc of the pipeline is sent explicitly and wrapped to the TPM key (kid TpmEphemeralEncryptionKey)', async () => {
      const releases: { enc: unknown; kid: unknown }[] = [];
      const vaultCall = new KeyVaultRelease({ tokens: new TokenProvider({ imdsEndpoint: imds.url }), fetch, relaxedChallengeEndpoints: [vault.endpoint] });
      const spy = {
        prepare: vaultCall.prepare.bind(vaultCall),
        release: async (r: Parameters<typeof vaultCall.release>[0], s?: AbortSignal) => {
          const jws = await vaultCall.release(r, s);
          const payload = JSON.parse(Buffer.from(jws.split('.')[1], 'base64url').toString('utf8')) as { request: { enc: unknown }; response: { key: { key: { key_hsm: string } } } };
          const keyHsm = JSON.parse(Buffer.from(payload.response.key.key.key_hsm, 'base64url').toString('utf8')) as { header: { kid: unknown } };
          releases.push({ enc: payload.request.enc, kid: keyHsm.header.kid });
          return jws;
        },
      };
      const p = new KeyReleasePipeline({ attester: parts.attester, keks: parts.keks, vault: spy, jws: new ReleaseJwsVerifier({ extraCaPem: [caPem] }), enc: 'RSA_AES_KEY_WRAP_256' });
      await p.release(req('cvm-rsa'));
      expect(releases).toEqual([{ enc: 'RSA_AES_KEY_WRAP_256', kid: TPM_KEY_KID }]);
    });

    it('EC-HSM from the vault and oct-HSM from the Managed HSM', async () => {
      const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
      await importKey('cvm-ec', 'EC-HSM', ec);
      const e = await pipe.release(req('cvm-ec'));
      const want = ec.export({ format: 'jwk' });
      expect([e.jwk.kty, e.jwk.crv, e.jwk.x, e.jwk.y, e.jwk.d]).toEqual(['EC', 'P-384', want.x, want.y, want.d]);
      const bytes = randomBytes(32);
      await importKey('cvm-oct', 'oct-HSM', bytes, { vault: hsm });
      for (const enc of RELEASE_ENCS) {
        const o = await pipe.release(req('cvm-oct', hsm, enc));
        expect(Buffer.from(String(o.jwk.k), 'base64url')).toEqual(bytes);
      }
    });

    it('within a boot the token and the TPM key are reused: one attestation for all of the above', () => {
      expect(attestations).toHaveLength(1);
    });
  });

  describe('release policies as Key Vault evaluates them on a CVM token', () => {
    it('a policy with the top-level claim paths is refused; explaining it names the nested claims', async () => {
      await importKey('cvm-top-level', 'oct-HSM', randomBytes(32), {
        vault: hsm,
        claims: [
          { claim: 'x-ms-attestation-type', equals: 'sevsnpvm' },
          { claim: 'x-ms-compliance-status', equals: 'azure-compliant-cvm' },
        ],
      });
      const { pipe } = await pipeline();
      const e = await pipe.release(req('cvm-top-level', hsm)).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(ReleaseRefusedError);
      expect((e as ReleaseRefusedError).vaultStatus).toBe(403);
      expect((e as Error).message).toMatch(/x-ms-attestation-type/);
      // The token itself, explained against that policy: the hints name the nested claims.
      const token = maa.issuedTokens[maa.issuedTokens.length - 1];
      const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as Record<string, unknown>;
      const policy = buildReleasePolicy({ authority: maa.url, anyOfGroups: [[{ claim: 'x-ms-attestation-type', equals: 'sevsnpvm' }, { claim: 'x-ms-compliance-status', equals: 'azure-compliant-cvm' }]] });
      const x = explainPolicy(policy, claims);
      expect(x.granted).toBe(false);
      expect(x.hints.join('\n')).toMatch(/x-ms-isolation-tee\.x-ms-attestation-type/);
      expect(x.hints.join('\n')).toMatch(/x-ms-isolation-tee\.x-ms-compliance-status/);
      // The nested policy is granted for the same token, and only the top-level x-ms-runtime key is wrapped to.
      expect(evaluateReleasePolicy(buildReleasePolicy({ authority: maa.url, anyOfGroups: [CVM_CLAIMS] }), claims).granted).toBe(true);
      expect(failedConditions(evaluateReleasePolicy(policy, claims)).map((c) => c.claim)).toEqual(['x-ms-attestation-type', 'x-ms-compliance-status']);
    });
  });

  describe('§7.1: every TPM failure mode gives a precise error', () => {
    let source: TpmKekSource;
    let kek: TpmKek;
    let token: string;
    const aesKwp = randomBytes(32);
    const jwt = (claims: Record<string, unknown>) =>
      `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.c2ln`;
    beforeAll(async () => {
      await closeAll();
      source = new TpmKekSource(guest);
      kek = (await source.take()) as TpmKek;
      token = jwt({ 'x-ms-runtime': { keys: [kek.publicJwk] } });
    });
    afterAll(() => source.close());
    const pub = () => createPublicKey({ key: kek.publicJwk, format: 'jwk' });
    const keyHsm = (enc: ReleaseEnc, wrapEnc: ReleaseEnc = enc, kid = TPM_KEY_KID) => ({ kid, enc, ciphertext: wrapKeyMaterial(aesKwp, pub(), wrapEnc) });
    async function errorOf(p: Promise<unknown>): Promise<VerificationError> {
      const e = await p.then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(VerificationError);
      expect((e as VerificationError).step).toBe('unwrap');
      return e as VerificationError;
    }
    async function rawError(fn: (key: number, session: number) => Promise<unknown>): Promise<TpmError> {
      const key = await source.lock.run(() => source.loaded());
      const s = await guest.startAuthSession(TPM_SE.POLICY);
      try {
        await guest.policyPcr(s.handle, [PCRS_0_7]);
        const e = await fn(key.handle, s.handle).then(() => undefined, (x: unknown) => x);
        expect(e).toBeInstanceOf(TpmError);
        return e as TpmError;
      } finally {
        await guest.flushContext(s.handle).catch(() => undefined);
      }
    }

    it('unwraps all three enc values directly (the baseline of the modes below)', async () => {
      for (const enc of RELEASE_ENCS) expect(await kek.unwrap(keyHsm(enc), { maaToken: token })).toEqual(aesKwp);
    });
    it('key_hsm for another kid is refused before the TPM', async () => {
      expect((await errorOf(kek.unwrap(keyHsm('RSA_AES_KEY_WRAP_256', 'RSA_AES_KEY_WRAP_256', 'other'), { maaToken: token }))).message).toMatch(/header\.kid is "other", expected TpmEphemeralEncryptionKey/);
    });
    it('a token naming another TPM key is stale (the vTPM key changed between the KEK and the attestation)', async () => {
      const other = jwt({ 'x-ms-runtime': { keys: [{ ...kek.publicJwk, n: Buffer.alloc(256, 7).toString('base64url') }] } });
      const e = await errorOf(kek.unwrap(keyHsm('RSA_AES_KEY_WRAP_256'), { maaToken: other }));
      expect(e).toBeInstanceOf(StaleKekError);
      expect(e.message).toMatch(/is not this KEK's key: the vTPM's key changed between taking the KEK and attesting/);
      expect((await errorOf(kek.unwrap(keyHsm('RSA_AES_KEY_WRAP_256'), { maaToken: jwt({}) }))).message).toMatch(/carries no TpmEphemeralEncryptionKey/);
    });
    it('a ciphertext that lost a trailing zero byte is refused before the TPM', async () => {
      const k = keyHsm('RSA_AES_KEY_WRAP_256');
      expect((await errorOf(kek.unwrap({ ...k, ciphertext: k.ciphertext.subarray(0, k.ciphertext.length - 1) }, { maaToken: token }))).message).toMatch(/not 256 bytes of RSA-OAEP followed by an AES key wrap/);
    });
    it('the whole RSA||KWP blob given to the TPM → TPM_RC_SIZE, named', async () => {
      const blob = keyHsm('RSA_AES_KEY_WRAP_256').ciphertext;
      const key = await source.lock.run(() => source.loaded());
      const e = await errorOf(tpmOaepDecrypt(guest, key.handle, blob, 'RSA_AES_KEY_WRAP_256'));
      expect(e.message).toMatch(/TPM2_RSA_Decrypt: TPM_RC_SIZE/);
      expect(e.message).toMatch(new RegExp(`exactly the 256-byte RSA part of key_hsm, got ${blob.length} bytes`));
    });
    it('a 255-byte RSA part → TPM_RC_SIZE, named', async () => {
      const key = await source.lock.run(() => source.loaded());
      const e = await errorOf(tpmOaepDecrypt(guest, key.handle, keyHsm('RSA_AES_KEY_WRAP_256').ciphertext.subarray(1, 256), 'RSA_AES_KEY_WRAP_256'));
      expect(e.message).toMatch(/TPM_RC_SIZE.*got 255 bytes/);
    });
    it('an OAEP-SHA1 blob under enc RSA_AES_KEY_WRAP_256 (and vice versa) → the TPM decrypt failure, naming enc and hash', async () => {
      const e = await errorOf(kek.unwrap(keyHsm('RSA_AES_KEY_WRAP_256', 'CKM_RSA_AES_KEY_WRAP'), { maaToken: token }));
      expect(e).not.toBeInstanceOf(StaleKekError);
      expect(e.message).toMatch(/TPM2_RSA_Decrypt: TPM_RC_(FAILURE|VALUE).*could not OAEP-SHA-256 decrypt the RSA part \(enc RSA_AES_KEY_WRAP_256\)/);
      const back = await errorOf(kek.unwrap(keyHsm('CKM_RSA_AES_KEY_WRAP', 'RSA_AES_KEY_WRAP_384'), { maaToken: token }));
      expect(back.message).toMatch(/OAEP-SHA-1 decrypt.*enc CKM_RSA_AES_KEY_WRAP/);
    });
    it('an OAEP blob decrypted with RSAES (the pre-2023 client) → explained as a decrypt failure', async () => {
      const ct = keyHsm('RSA_AES_KEY_WRAP_256').ciphertext.subarray(0, 256);
      const rc = await rawError((k, s) => guest.rsaDecrypt(k, policyAuth(s), ct, { scheme: 'rsaes' }));
      expect(rc.command).toBe('TPM2_RSA_Decrypt');
      expect(explainTpmUnwrapError(rc, { enc: 'RSA_AES_KEY_WRAP_256', cipherBytes: 256 }).message).toMatch(/could not OAEP-SHA-256 decrypt.*with RSAES, or to another key/);
    });
    it('a password session instead of the PolicyPCR session → TPM_RC_AUTH_UNAVAILABLE, named', async () => {
      const ct = keyHsm('RSA_AES_KEY_WRAP_256').ciphertext.subarray(0, 256);
      const rc = await rawError((k) => guest.rsaDecrypt(k, PASSWORD, ct, { scheme: 'oaep', hash: 'sha256' }));
      expect(rc.rcName).toBe('TPM_RC_AUTH_UNAVAILABLE');
      expect(explainTpmUnwrapError(rc, { enc: 'RSA_AES_KEY_WRAP_256', cipherBytes: 256 }).message).toMatch(/takes only its PolicyPCR session, not a password/);
    });
    it('PCR changed after attestation: the loaded key (bound to the old PCRs) is flushed and re-derived → another key, stale', async () => {
      const k = keyHsm('RSA_AES_KEY_WRAP_256');
      await guest.pcrExtend(6, TPM_ALG.SHA256, Buffer.alloc(32, 6));
      // Issue 20 item 1: the source notices the PCR change itself instead of keeping a key no policy session can use.
      const e = await errorOf(kek.unwrap(k, { maaToken: token }));
      expect(e).toBeInstanceOf(StaleKekError);
      expect(e.message).toMatch(/re-derived for the current PCR0-7 and boot\) is not the TpmEphemeralEncryptionKey of the MAA token/);
      expect((await source.lock.run(() => source.loaded())).n).not.toBe(kek.publicJwk.n);
      const again = await errorOf(kek.unwrap(k, { maaToken: token }));
      expect(again).toBeInstanceOf(StaleKekError);
      expect(again.message).toMatch(/re-derived for the current PCR0-7 and boot\) is not the TpmEphemeralEncryptionKey of the MAA token/);
    });
    it('RSAES-PKCS1 ciphertext under an OAEP enc is not silently accepted', async () => {
      const fresh = (await source.take()) as TpmKek;
      const t = jwt({ 'x-ms-runtime': { keys: [fresh.publicJwk] } });
      const rsaPart = publicEncrypt({ key: createPublicKey({ key: fresh.publicJwk, format: 'jwk' }), padding: constants.RSA_PKCS1_PADDING }, randomBytes(32));
      const e = await errorOf(fresh.unwrap({ kid: TPM_KEY_KID, enc: 'RSA_AES_KEY_WRAP_256', ciphertext: Buffer.concat([rsaPart, Buffer.alloc(40)]) }, { maaToken: t }));
      expect(e.message).toMatch(/TPM2_RSA_Decrypt: TPM_RC_/);
    });
  });

  describe('reuse within a boot, and a reboot or PCR change', () => {
    let bytes: Buffer;
    beforeAll(async () => {
      bytes = randomBytes(32);
      await importKey('cvm-reboot', 'oct-HSM', bytes, { vault: hsm });
    });

    it('PCR change: the cached token names a key the vTPM no longer has, the sidecar attests once more and succeeds', async () => {
      const attestations: number[] = [];
      const { pipe } = await pipeline({ attestations });
      expect(Buffer.from(String((await pipe.release(req('cvm-reboot', hsm))).jwk.k), 'base64url')).toEqual(bytes);
      await guest.pcrExtend(5, TPM_ALG.SHA256, Buffer.alloc(32, 5));
      expect(Buffer.from(String((await pipe.release(req('cvm-reboot', hsm))).jwk.k), 'base64url')).toEqual(bytes);
      expect(attestations).toHaveLength(2);
      // Reused again afterwards.
      await pipe.release(req('cvm-reboot', hsm));
      expect(attestations).toHaveLength(2);
    });

    it('with re-attestation off, the stale unwrap fails naming the PCR change', async () => {
      const { pipe } = await pipeline({ reattestOnStaleKek: false });
      await pipe.release(req('cvm-reboot', hsm));
      await guest.pcrExtend(4, TPM_ALG.SHA256, Buffer.alloc(32, 4));
      const e = await pipe.release(req('cvm-reboot', hsm)).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(StaleKekError);
      expect((e as Error).message).toMatch(/the VM rebooted or PCR0-7 changed since attestation/);
    });

    it('token reuse off and PCRs that keep changing: one re-attestation, then refused naming the PCR change', async () => {
      const attestations: number[] = [];
      let n = 0;
      const { pipe } = await pipeline({ attestations, maaTokenReuse: { enabled: false }, afterAttest: () => guest.pcrExtend(3, TPM_ALG.SHA256, Buffer.alloc(32, ++n)) });
      const e = await pipe.release(req('cvm-reboot', hsm)).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(StaleKekError);
      expect((e as Error).message).toMatch(/PCR0-7 changed since attestation \(after attesting again; first attempt: .*PCR0-7 changed since attestation/);
      expect(attestations).toHaveLength(2);
    });

    it('a vault answer wrapped with another enc than requested is refused, naming both (issue 20, item 7)', async () => {
      // The vault is asked for RSA_AES_KEY_WRAP_256 but answers (signed) with a CKM_RSA_AES_KEY_WRAP wrap.
      const otherEnc: FetchLike = async (url, init) => {
        const body = typeof init?.body === 'string' && String(url).includes('/release') ? init.body.replace('"enc":"RSA_AES_KEY_WRAP_256"', '"enc":"CKM_RSA_AES_KEY_WRAP"') : init?.body;
        return fetch(url, { ...init, ...(body !== undefined ? { body } : {}) });
      };
      const vaultPart = new KeyVaultRelease({ tokens: new TokenProvider({ imdsEndpoint: imds.url }), fetch: otherEnc, managedHsmEndpoints: [hsm.endpoint], relaxedChallengeEndpoints: [vault.endpoint, hsm.endpoint] });
      const { pipe } = await pipeline({ vault: vaultPart });
      const e = await pipe.release(req('cvm-reboot', hsm, 'RSA_AES_KEY_WRAP_256')).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(VerificationError);
      expect((e as VerificationError).step).toBe('release-enc');
      expect((e as Error).message).toBe('release response is wrapped with enc CKM_RSA_AES_KEY_WRAP, but RSA_AES_KEY_WRAP_256 was requested');
    });

    it('VM reboot (swtpm restarted): the cached token\'s key is gone; re-attested once, released', async () => {
      const attestations: number[] = [];
      const { pipe } = await pipeline({ attestations });
      await pipe.release(req('cvm-reboot', hsm));
      // The sidecar's TPM connection is not closed first: it sees swtpm go away and reconnects.
      await tpm.restart();
      expect(Buffer.from(String((await pipe.release(req('cvm-reboot', hsm))).jwk.k), 'base64url')).toEqual(bytes);
      expect(attestations).toHaveLength(2);
    });

    it('VM reboot with re-attestation off: refused, naming the changed key', async () => {
      const { pipe } = await pipeline({ reattestOnStaleKek: false });
      await pipe.release(req('cvm-reboot', hsm));
      await guest.close();
      await tpm.restart();
      const e = await pipe.release(req('cvm-reboot', hsm)).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(StaleKekError);
      expect((e as Error).message).toMatch(/the VM rebooted or PCR0-7 changed since attestation/);
    });
  });

  it('the CVM attester refuses runtime data that is not the vTPM key: stale (key changed) or malformed', async () => {
    const { parts } = await pipeline();
    const maaEp = { origin: maa.url } as Parameters<typeof parts.attester.attest>[0];
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
    const e = await parts.attester.attest(maaEp, Buffer.from(JSON.stringify({ keys: [{ ...other, kid: TPM_KEY_KID }] }))).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(StaleKekError);
    expect((e as Error).message).toMatch(/the KEK's key is no longer the vTPM's key for the current PCR0-7/);
    const bad = await parts.attester.attest(maaEp, Buffer.from('not json')).catch((x: unknown) => x);
    expect(bad).toBeInstanceOf(VerificationError);
    expect((bad as VerificationError).step).toBe('maa-token-tpm-key');
    // The KEK's own runtime data attests, and the token carries exactly its key.
    const kek = await parts.keks.take();
    const token = await parts.attester.attest(maaEp, kek.runtimeData);
    expect(tokenTpmKeyModulus(token)).toBe(kek.publicJwk.n);
    // PCR0-7 changed between taking the KEK and attesting: stale, and the key is dropped.
    const kek2 = await parts.keks.take();
    await guest.pcrExtend(2, TPM_ALG.SHA256, Buffer.alloc(32, 2));
    const drift = await parts.attester.attest(maaEp, kek2.runtimeData).catch((x: unknown) => x);
    expect(drift).toBeInstanceOf(StaleKekError);
    expect((await parts.keks.take()).publicJwk.n).not.toBe(kek2.publicJwk.n);
    expect(tokenTpmKeyModulus('not.a.jwt')).toBeUndefined();
    expect(tokenTpmKeyModulus(`e30.${Buffer.from('[1]').toString('base64url')}.c2ln`)).toBeUndefined();
  });

  it('a debuggable VM (compliance status azure-noncompliant-cvm) is refused by the CVM policy', async () => {
    await importKey('cvm-debug', 'oct-HSM', randomBytes(32), { vault: hsm });
    await guest.close();
    await tpm.use((c) => provisionSimulatedCvm(c, { platformOptions: { policy: 0x3001fn | (1n << 19n) }, ca: cvm.ca }));
    const { pipe } = await pipeline();
    const e = await pipe.release(req('cvm-debug', hsm)).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ReleaseRefusedError);
    expect((e as Error).message).toMatch(/x-ms-isolation-tee\.x-ms-compliance-status/);
    expect((e as Error).message).toMatch(/azure-noncompliant-cvm/);
  });

  it('the vault emulator wraps to the first encrypt key of the top-level x-ms-runtime.keys, not the nested one', () => {
    // Checked through the emulator's selection on a token shaped like §6 (TPM key top level, HCL keys nested).
    const tpmKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
    const nested = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
    const claims = {
      'x-ms-isolation-tee': { 'x-ms-runtime': { keys: [{ kid: 'HCLEkPub', key_ops: ['encrypt'], ...nested }] } },
      'x-ms-runtime': { keys: [{ kid: 'signing', key_ops: ['sign'], ...nested }, { kid: TPM_KEY_KID, key_ops: ['encrypt'], ...tpmKey }] },
    };
    const chosen = selectWrappingKey(claims);
    expect(chosen.kid).toBe(TPM_KEY_KID);
    expect(chosen.publicKey.export({ format: 'jwk' }).n).toBe(tpmKey.n);
    expect(() => selectWrappingKey({ 'x-ms-isolation-tee': claims['x-ms-isolation-tee'] })).toThrow(/no key with key_ops 'encrypt'/);
  });
});

