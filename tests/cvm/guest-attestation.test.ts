/**
 * End to end on a real swtpm: simulated CVM provisioning → guest attestation (our TPM client) → the MAA
 * emulator's /attest/AzureGuest over HTTPS → the encrypted answer opened through the TPM → verified token
 * with the claims of CVM-PROTOCOL §6. Plus the failure modes: envelopes that do not open, a token for
 * another key, and evidence the emulator must refuse.
 */
import { generateKeyPairSync, publicEncrypt, randomBytes, constants } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VerificationError } from '../../src/common/errors';
import { createHttpsFetch, type HttpsFetch } from '../../src/common/https-fetch';
import { attestGuest, checkGuestToken, GuestAttestation, TPM_KEY_KID, tpmPartOf, type CollectedEvidence } from '../../src/cvm/guest-attestation';
import { issueTestOnlyAkCertificate, provisionSimulatedCvm, type SimulatedCvm } from '../../src/cvm/simulator';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { startImdsEmulator, type ImdsEmulator } from '../../src/emulators/imds';
import { LocalThimSource } from '../../src/certs/sources/local-thim';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { ENVELOPE_REFUSED, MaaEnvelopeError } from '../../src/maa/azure-guest-envelope';
import { postAzureGuest } from '../../src/maa/azure-guest-client';
import { serializeAzureGuestRequest, type AzureGuestRequestInput } from '../../src/maa/azure-guest-request';
import { MaaRefusedError } from '../../src/maa/errors';
import { hclReportData, type HclReport } from '../../src/cvm/hcl';
import { akTemplate, marshalPublic2b, rsaKeyOf, SwtpmTcpTransport, TPM_ALG, TpmClient } from '../../src/tpm';
import { parsePublic2b } from '../../src/tpm/structures';
import { startSwtpm, type Swtpm } from '../helpers/swtpm';

const OS = { type: 'Linux', distro: 'Ubuntu', versionMajor: 24, versionMinor: 4 };

describe('guest attestation on swtpm against the MAA emulator', () => {
  let tpm: Swtpm;
  let cvm: SimulatedCvm;
  let emu: MaaEmulator;
  let imds: ImdsEmulator;
  let fetch: HttpsFetch;
  let guest: TpmClient;
  let dir: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-cvm-e2e-'));
    tpm = await startSwtpm();
    cvm = await tpm.use((c) => provisionSimulatedCvm(c, { vmUniqueId: '6506B531-1634-431E-99D2-42B7D3414AD0' }));
    const ca = loadOrCreateLocalCa(path.join(dir, 'ca'));
    emu = await startMaaEmulator({ ca, trustedArkPem: [cvm.platform.arkPem], trustedVtpmCaPem: [cvm.ca.certPem] });
    fetch = createHttpsFetch({ extraCaPem: [ca.certPem] });
    imds = await startImdsEmulator({ thim: () => cvm.platform.thimCertificates() });
    guest = new TpmClient(cvm.transport(new SwtpmTcpTransport({ port: tpm.port })));
  });
  afterAll(async () => {
    await guest?.close();
    await emu?.close();
    await imds?.close();
    await tpm?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const thim = () => cvm.platform.thimCertificates();
  function requestOf(ev: CollectedEvidence, over: Partial<AzureGuestRequestInput['tpm']> = {}, claims?: Buffer): string {
    return serializeAzureGuestRequest({
      os: OS,
      clientPayload: { nonce: 'n-1' },
      tpm: { ...tpmPartOf(ev), ...over },
      isolation: { snpReport: (ev.hcl as HclReport).snpReportBytes, vcekCertChainPem: thim().vcekCert + thim().certificateChain, runtimeClaims: claims ?? ev.hcl.claimsBytes },
    });
  }
  async function refusalOf(body: string): Promise<string> {
    const e = await postAzureGuest(emu.endpoint, body, { fetch, retries: 0 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(MaaRefusedError);
    return (e as MaaRefusedError).maaMessage ?? '';
  }

  it('returns a verified token with the §6 claims, bound to our TPM key and user data', async () => {
    const userData = randomBytes(64);
    // The VCEK chain comes from IMDS THIM, as on Azure.
    const collateral = await new LocalThimSource({ baseUrl: imds.url }).fetch();
    const r = await attestGuest({ tpm: guest, maaEndpoint: emu.endpoint, collateral, clientPayload: { nonce: '1234' }, userData, os: OS, tcgLog: Buffer.alloc(0), fetch });
    const c = r.claims;
    expect(c['x-ms-attestation-type']).toBe('azurevm');
    expect(c['x-ms-ver']).toBe('1.0');
    expect(c['secureboot']).toBe(true);
    expect(c['x-ms-azurevm-attestation-protocol-ver']).toBe('2.0');
    expect(c['x-ms-azurevm-attested-pcrs']).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(c['x-ms-azurevm-ostype']).toBe('Linux');
    expect(c['x-ms-azurevm-osdistro']).toBe('Ubuntu');
    expect(c['x-ms-azurevm-osversion-major']).toBe(24);
    expect(c['x-ms-azurevm-osbuild']).toBe('NotApplication');
    expect(c['x-ms-azurevm-vmid']).toBe('6506B531-1634-431E-99D2-42B7D3414AD0');
    const tee = c['x-ms-isolation-tee'] as Record<string, unknown>;
    expect(tee['x-ms-attestation-type']).toBe('sevsnpvm');
    expect(tee['x-ms-compliance-status']).toBe('azure-compliant-cvm');
    expect(tee['x-ms-sevsnpvm-vmpl']).toBe(0);
    expect(tee['x-ms-sevsnpvm-is-debuggable']).toBe(false);
    const runtime = tee['x-ms-runtime'] as Record<string, unknown>;
    expect(runtime['user-data']).toBe(userData.toString('hex').toUpperCase());
    expect((runtime['keys'] as { kid: string }[]).map((k) => k.kid)).toEqual(['HCLAkPub']);
    // REPORT_DATA binds exactly the claims that are in the token.
    expect(tee['x-ms-sevsnpvm-reportdata']).toBe(hclReportData(Buffer.from(JSON.stringify(runtime))).toString('hex'));
    const top = c['x-ms-runtime'] as { 'client-payload': unknown; keys: { kid: string; key_ops: string[]; kty: string }[] };
    expect(top['client-payload']).toEqual({ nonce: Buffer.from('1234').toString('base64') });
    expect(top.keys).toHaveLength(1);
    expect(top.keys[0]).toMatchObject({ kid: TPM_KEY_KID, key_ops: ['encrypt'], kty: 'RSA' });
    expect(emu.issuedTokens).toContain(r.token);
    // Timings of one guest attestation on swtpm (for the report; no assertion on wall-clock values).
    console.log(`guest attestation timings (ms): ${JSON.stringify(r.timings)}`);
  });

  describe('answers that must not be accepted', () => {
    let ev: CollectedEvidence;
    let envelope: string;
    let ga: GuestAttestation;
    beforeAll(async () => {
      ga = new GuestAttestation(guest);
      ev = await ga.collect();
      envelope = await postAzureGuest(emu.endpoint, requestOf(ev), { fetch });
    });
    const mutateEnvelope = (f: (o: Record<string, unknown>) => void) => {
      const o = JSON.parse(Buffer.from(envelope, 'base64url').toString('utf8')) as Record<string, unknown>;
      f(o);
      return Buffer.from(JSON.stringify(o)).toString('base64url');
    };

    it('the untouched envelope opens into a JWT', async () => {
      expect(await ga.openEnvelope(envelope, ev.encKeyPub)).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    });
    /** Issue 20 item 6: every envelope failure is the same error; the detail only in the debug log. */
    const refused = async (bad: string): Promise<{ e: MaaEnvelopeError; detail: unknown }> => {
      const lines: Record<string, unknown>[] = [];
      const g = new GuestAttestation(guest, undefined, (_m, meta) => lines.push(meta));
      const e = await g.openEnvelope(bad, ev.encKeyPub).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(MaaEnvelopeError);
      expect(lines).toHaveLength(1);
      return { e: e as MaaEnvelopeError, detail: lines[0].detail };
    };
    const sealedTo = (inner: Buffer) => publicEncrypt({ key: rsaKeyOf(parsePublic2b(ev.encKeyPub, 'EncKeyPub').area), padding: constants.RSA_PKCS1_PADDING }, inner).toString('base64');

    it('no padding oracle: bad PKCS#1 padding, a 31-byte key, a wrong 32-byte key, a changed JWT, another key, not an envelope: one identical error', async () => {
      const cases: [string, string, RegExp][] = [
        ['bad padding', mutateEnvelope((o) => (o.EncryptedInnerKey = randomBytes(256).toString('base64'))), /TPM2_RSA_Decrypt: TPM_RC_/],
        ['31-byte key', mutateEnvelope((o) => (o.EncryptedInnerKey = sealedTo(randomBytes(31)))), /returned a 31-byte key/],
        ['wrong 32-byte key', mutateEnvelope((o) => (o.EncryptedInnerKey = sealedTo(randomBytes(32)))), /AES-GCM tag mismatch/],
        [
          'JWT changed',
          mutateEnvelope((o) => {
            const ct = Buffer.from(o.Jwt as string, 'base64');
            ct[10] ^= 1;
            o.Jwt = ct.toString('base64');
          }),
          /AES-GCM tag mismatch/,
        ],
        [
          'sealed to another key',
          mutateEnvelope((o) => (o.EncryptedInnerKey = publicEncrypt({ key: generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey, padding: constants.RSA_PKCS1_PADDING }, randomBytes(32)).toString('base64'))),
          /TPM2_RSA_Decrypt: TPM_RC_/,
        ],
        ['not an envelope', 'eyJhbGciOiJSUzI1NiJ9.e30.c2ln', /maa-envelope-format/],
      ];
      const seen = new Set<string>();
      for (const [what, bad, detail] of cases) {
        const r = await refused(bad);
        seen.add(JSON.stringify({ code: r.e.code, step: r.e.step, message: r.e.message, name: r.e.name }));
        expect(r.e.step).toBe('maa-envelope');
        expect(r.e.message).toBe(`maa-envelope: ${ENVELOPE_REFUSED}`);
        expect([what, String(r.detail)]).toEqual([what, expect.stringMatching(detail)]);
      }
      expect(seen.size).toBe(1);
    });
    it("a token whose TpmEphemeralEncryptionKey is not ours → maa-token-tpm-key", async () => {
      const jwt = await ga.openEnvelope(envelope, ev.encKeyPub);
      const claims = JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8')) as Record<string, unknown>;
      expect(() => checkGuestToken(claims, ev.encKeyPub, { nonce: 'n-1' })).not.toThrow();
      // Another TPM key: what a token for another VM (or an earlier boot) would carry.
      const otherPub = Buffer.from(ev.encKeyPub);
      otherPub[otherPub.length - 5] ^= 0xff;
      let err: unknown;
      try {
        checkGuestToken(claims, otherPub);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(VerificationError);
      expect((err as VerificationError).step).toBe('maa-token-tpm-key');
      expect(() => checkGuestToken(claims, ev.encKeyPub, { nonce: 'other' })).toThrow(/maa-token-client-payload/);
    });

    it('the emulator refuses evidence that does not hold together, naming the check', async () => {
      const claims = Buffer.from(ev.hcl.claimsBytes);
      claims[claims.length - 3] ^= 1; // inside user-data
      expect(await refusalOf(requestOf(ev, {}, claims))).toMatch(/^hcl-claims-binding:/);
      const sig = Buffer.from(ev.certify.signature);
      sig[0] ^= 1;
      expect(await refusalOf(requestOf(ev, { encKeyCertifyInfoSignature: sig }))).toMatch(/^enc-key-certify:/);
      const other = await ga.createEphemeralKey();
      await guest.flushContext(other.key.handle);
      const foreignKey = Buffer.from(ev.encKeyPub);
      foreignKey[foreignKey.length - 1] ^= 1;
      expect(await refusalOf(requestOf(ev, { encKeyPub: foreignKey }))).toMatch(/^enc-key-certify: the certified object is not EncKeyPub/);
      const pcrs = ev.pcrs.map((p, i) => (i === 3 ? { index: p.index, digest: Buffer.alloc(32, 1) } : p));
      expect(await refusalOf(requestOf(ev, { pcrs }))).toMatch(/^pcr-quote:/);
      const qsig = Buffer.from(ev.quote.signature);
      qsig[5] ^= 1;
      expect(await refusalOf(requestOf(ev, { pcrSignature: qsig }))).toMatch(/^pcr-quote: PcrSignature/);
      const akCert = Buffer.from(ev.akCert);
      akCert[200] ^= 1;
      expect(await refusalOf(requestOf(ev, { akCert }))).toMatch(/^ak-cert:/);
      // A genuine vTPM-CA certificate for another AK: the AK is not the one the paravisor reported.
      const otherAk = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
      const otherAkPub = marshalPublic2b({ ...akTemplate(), unique: Buffer.from(String(otherAk.export({ format: 'jwk' }).n), 'base64url') });
      const otherCert = issueTestOnlyAkCertificate(cvm.ca, otherAk, 'other-vm');
      expect(await refusalOf(requestOf(ev, { akCert: otherCert, akPub: otherAkPub }))).toMatch(/^ak-hcl-binding:/);
      expect(await refusalOf(requestOf(ev, { akCert: otherCert }))).toMatch(/^ak-cert-key:/);
    });

    it('after a PCR change the re-derived key differs: maa-envelope-key, not an opaque TPM error', async () => {
      await guest.pcrExtend(7, TPM_ALG.SHA256, Buffer.alloc(32, 9));
      const e = await ga.openEnvelope(envelope, ev.encKeyPub).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(MaaEnvelopeError);
      expect((e as MaaEnvelopeError).step).toBe('maa-envelope-key');
      expect((e as Error).message).toMatch(/PCR0-7 changed or the VM rebooted/);
    });
  });

  it('a debuggable CVM is attested but not compliant', async () => {
    await guest.close(); // swtpm serves one connection at a time
    const debug = await tpm.use((c) => provisionSimulatedCvm(c, { platformOptions: { policy: 0x3001fn | (1n << 19n) }, ca: cvm.ca }));
    const client = new TpmClient(debug.transport(new SwtpmTcpTransport({ port: tpm.port })));
    try {
      const r = await attestGuest({ tpm: client, maaEndpoint: emu.endpoint, collateral: { vcekPem: debug.platform.vcekPem, chainPem: debug.platform.askPem + debug.platform.arkPem, tcbm: debug.platform.reportedTcb, source: 'test' }, os: OS, tcgLog: Buffer.alloc(0), fetch });
      const tee = r.claims['x-ms-isolation-tee'] as Record<string, unknown>;
      expect(tee['x-ms-sevsnpvm-is-debuggable']).toBe(true);
      expect(tee['x-ms-compliance-status']).toBe('azure-noncompliant-cvm');
    } finally {
      await client.close();
    }
  });

  it('a VM reboot (swtpm restart): AK and NV survive, the ephemeral key does not, so the old answer cannot be opened', async () => {
    await guest.close();
    const ga = new GuestAttestation(guest);
    const before = await ga.collect();
    const envelope = await postAzureGuest(emu.endpoint, requestOf(before), { fetch });
    await guest.close();
    await tpm.restart();
    const after = new GuestAttestation(guest);
    const { hcl } = await after.evidence.readHclReport();
    expect(hcl.claimsBytes.length).toBeGreaterThan(0);
    expect((await guest.readPublic(0x81000003)).outPublic.equals(before.akPub)).toBe(true);
    const e = await after.openEnvelope(envelope, before.encKeyPub).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(MaaEnvelopeError);
    expect((e as MaaEnvelopeError).step).toBe('maa-envelope-key');
    // Attesting again after the reboot works.
    const again = await after.collect();
    expect(again.encKeyPub.equals(before.encKeyPub)).toBe(false);
    await postAzureGuest(emu.endpoint, requestOf(again), { fetch }).then((env) => after.openEnvelope(env, again.encKeyPub));
  });
});
