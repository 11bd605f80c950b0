/** The TPM client against a real swtpm (one per file): every command, its errors, and a TPM that vanishes. */
import { constants, createHash, publicEncrypt, randomBytes, verify as cryptoVerify } from 'node:crypto';
import {
  akTemplate,
  ephemeralKeyTemplate,
  objectName,
  parsePublic2b,
  PASSWORD,
  PCRS_0_7,
  policyAuth,
  policyPcrDigest,
  rsaKeyOf,
  TPM_ALG,
  TPM_RH,
  TPM_SE,
  TPMA_NV,
  TpmClient,
  TpmError,
  TpmTransportError,
} from '../../src/tpm';
import { startSwtpm, type Swtpm } from '../helpers/swtpm';

const NV_ATTRS = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD;

async function rcOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof TpmError) return e.rcName;
    throw e;
  }
  throw new Error('the TPM accepted the command');
}

describe('TPM client on swtpm', () => {
  let tpm: Swtpm;
  let c: TpmClient;
  beforeAll(async () => {
    tpm = await startSwtpm();
    c = tpm.client();
  });
  afterAll(async () => {
    await tpm?.stop();
  });

  it('reads TPM properties (NV buffer max) and refuses a second Startup', async () => {
    expect(await c.nvChunkSize()).toBe(1024);
    expect(await rcOf(c.startup())).toBe('TPM_RC_INITIALIZE');
  });

  it('NV define/write/read round-trips in chunks; NV_ReadPublic reports size and attributes', async () => {
    const small = new TpmClient(c.transport, { maxNvChunk: 300 });
    await small.nvDefineSpace(0x01500010, 2000, NV_ATTRS);
    const data = randomBytes(2000);
    await small.nvWrite(0x01500010, data);
    const pub = await small.nvReadPublic(0x01500010);
    expect(pub.public.dataSize).toBe(2000);
    expect(pub.public.attributes & NV_ATTRS).toBe(NV_ATTRS);
    expect(pub.public.attributes & TPMA_NV.WRITTEN).toBe(TPMA_NV.WRITTEN);
    expect((await small.nvRead(0x01500010)).equals(data)).toBe(true);
    expect((await c.nvRead(0x01500010, { offset: 1500, size: 500 })).equals(data.subarray(1500))).toBe(true);
    await c.nvUndefineSpace(0x01500010);
  });

  it('names NV failures: unwritten index, missing index, index already defined, index too large', async () => {
    await c.nvDefineSpace(0x01500011, 64, NV_ATTRS);
    const e = await c.nvRead(0x01500011).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TpmError);
    expect((e as TpmError).rcName).toBe('TPM_RC_NV_UNINITIALIZED');
    expect((e as TpmError).message).toMatch(/^TPM2_NV_Read: TPM_RC_NV_UNINITIALIZED/);
    expect(await rcOf(c.nvDefineSpace(0x01500011, 64, NV_ATTRS))).toBe('TPM_RC_NV_DEFINED');
    await c.nvUndefineSpace(0x01500011);
    const missing = (await c.nvReadPublic(0x01500011).catch((x: unknown) => x)) as TpmError;
    expect(missing.rcName).toBe('TPM_RC_HANDLE');
    expect(missing.decoded.handle).toBe(1);
    expect(await rcOf(c.nvDefineSpace(0x01500012, 4096, NV_ATTRS))).toBe('TPM_RC_SIZE');
  });

  it('reads PCRs beyond the 8-per-call limit, and sees an extend', async () => {
    const all = await c.pcrRead(TPM_ALG.SHA256, Array.from({ length: 24 }, (_, i) => i));
    expect(all.size).toBe(24);
    expect(all.get(0)?.equals(Buffer.alloc(32))).toBe(true);
    await c.pcrExtend(16, TPM_ALG.SHA256, createHash('sha256').update('x').digest());
    const after = await c.pcrRead(TPM_ALG.SHA256, [16]);
    const expected = createHash('sha256').update(Buffer.concat([all.get(16) as Buffer, createHash('sha256').update('x').digest()])).digest();
    expect(after.get(16)?.equals(expected)).toBe(true);
  });

  it('concurrent callers are serialised on one connection (one command in flight)', async () => {
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? c.pcrRead(TPM_ALG.SHA256, [i]) : c.nvChunkSize())));
    results.forEach((r, i) => {
      if (i % 2) expect((r as Map<number, Buffer>).get(i)?.length).toBe(32);
      else expect(r).toBe(1024);
    });
  });

  it('the software PolicyPCR digest equals a trial session, for the current PCR values', async () => {
    const pcrs = await c.pcrRead(TPM_ALG.SHA256, PCRS_0_7.pcrs);
    const { handle } = await c.startAuthSession(TPM_SE.TRIAL);
    const digest = await c.withHandle(handle, async (h) => {
      await c.policyPcr(h, [PCRS_0_7]);
      return c.policyGetDigest(h);
    });
    expect(digest.equals(policyPcrDigest(PCRS_0_7, [...pcrs.values()]))).toBe(true);
  });

  it('AK: create, persist at 0x81000003, ReadPublic; Quote verifies with its key and digests PCR0-7', async () => {
    const ak = await c.createPrimary(TPM_RH.OWNER, akTemplate());
    await c.withHandle(ak.handle, (h) => c.evictControl(h, 0x81000003));
    const pub = await c.readPublic(0x81000003);
    expect(pub.outPublic.equals(ak.outPublic)).toBe(true);
    expect(pub.name.equals(objectName(parsePublic2b(pub.outPublic, 'ak').tpmtBytes, TPM_ALG.SHA256))).toBe(true);
    const pcrs = await c.pcrRead(TPM_ALG.SHA256, PCRS_0_7.pcrs);
    const q = await c.quote(0x81000003, [PCRS_0_7], Buffer.from('nonce'));
    expect(q.attest.attested.kind).toBe('quote');
    expect(q.attest.extraData.toString()).toBe('nonce');
    expect(q.signature.sigAlg).toBe(TPM_ALG.RSASSA);
    expect(cryptoVerify('sha256', q.attestBytes, rsaKeyOf(pub.public), q.signature.sig)).toBe(true);
    if (q.attest.attested.kind !== 'quote') throw new Error('not a quote');
    expect(q.attest.attested.pcrDigest.equals(createHash('sha256').update(Buffer.concat([...pcrs.values()])).digest())).toBe(true);
  });

  it('ephemeral key: same key when re-derived, certified by the AK, decrypts RSAES and OAEP only under PolicyPCR', async () => {
    const pcrs = await c.pcrRead(TPM_ALG.SHA256, PCRS_0_7.pcrs);
    const template = ephemeralKeyTemplate(policyPcrDigest(PCRS_0_7, [...pcrs.values()]));
    const eph = await c.createPrimary(TPM_RH.NULL, template);
    await c.withHandle(eph.handle, async (h) => {
      const again = await c.createPrimary(TPM_RH.NULL, template);
      await c.flushContext(again.handle);
      expect(again.outPublic.equals(eph.outPublic)).toBe(true);
      expect(eph.outPublic.length).toBe(312);

      const cert = await c.certify(h, 0x81000003);
      if (cert.attest.attested.kind !== 'certify') throw new Error('not certify');
      expect(cert.attest.attested.name.equals(eph.name)).toBe(true);
      expect(eph.name.equals(objectName(parsePublic2b(eph.outPublic, 'eph').tpmtBytes, TPM_ALG.SHA256))).toBe(true);
      const akPub = await c.readPublic(0x81000003);
      expect(cryptoVerify('sha256', cert.attestBytes, rsaKeyOf(akPub.public), cert.signature.sig)).toBe(true);

      const key = rsaKeyOf(eph.public);
      const secret = randomBytes(32);
      expect(await rcOf(c.rsaDecrypt(h, PASSWORD, publicEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, secret), { scheme: 'rsaes' }))).toBe('TPM_RC_AUTH_UNAVAILABLE');
      for (const [scheme, ct] of [
        [{ scheme: 'rsaes' }, publicEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, secret)],
        [{ scheme: 'oaep', hash: 'sha256' }, publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, secret)],
        [{ scheme: 'oaep', hash: 'sha1' }, publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, secret)],
      ] as const) {
        const s = await c.startAuthSession(TPM_SE.POLICY);
        const out = await c.withHandle(s.handle, async (sh) => {
          await c.policyPcr(sh, [PCRS_0_7]);
          return c.rsaDecrypt(h, policyAuth(sh), ct, scheme);
        });
        expect(out.equals(secret)).toBe(true);
      }

      // PCR change after the key was made: the policy no longer holds.
      await c.pcrExtend(7, TPM_ALG.SHA256, Buffer.alloc(32, 7));
      const s = await c.startAuthSession(TPM_SE.POLICY);
      const err = await c
        .withHandle(s.handle, async (sh) => {
          await c.policyPcr(sh, [PCRS_0_7]);
          return c.rsaDecrypt(h, policyAuth(sh), publicEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, secret), { scheme: 'rsaes' });
        })
        .catch((x: unknown) => x);
      expect(err).toBeInstanceOf(TpmError);
      expect((err as TpmError).rcName).toBe('TPM_RC_POLICY_FAIL');
      expect((err as TpmError).message).toMatch(/PCRs changed since attestation/);
    });
  });

  it('leaves no transient object loaded (three slots stay usable)', async () => {
    const pcrs = await c.pcrRead(TPM_ALG.SHA256, PCRS_0_7.pcrs);
    const template = ephemeralKeyTemplate(policyPcrDigest(PCRS_0_7, [...pcrs.values()]));
    const handles: number[] = [];
    try {
      for (let i = 0; i < 3; i++) handles.push((await c.createPrimary(TPM_RH.NULL, template)).handle);
      expect(await rcOf(c.createPrimary(TPM_RH.NULL, template))).toBe('TPM_RC_OBJECT_MEMORY');
    } finally {
      for (const h of handles) await c.flushContext(h);
    }
  });

  it('a TPM that disappears mid-command gives a typed transport error naming the command', async () => {
    const victim = await startSwtpm();
    const vc = victim.client();
    try {
      await vc.pcrRead(TPM_ALG.SHA256, [0]);
      victim.pause(); // the next command is in flight and cannot be answered
      const pending = vc.createPrimary(TPM_RH.NULL, akTemplate()).catch((x: unknown) => x);
      await new Promise((r) => setTimeout(r, 50));
      await victim.kill();
      const err = await pending;
      expect(err).toBeInstanceOf(TpmTransportError);
      expect((err as TpmTransportError).code).toBe('ERR_TPM_TRANSPORT');
      expect((err as Error).message).toMatch(/^TPM2_CreatePrimary: swtpm 127\.0\.0\.1:\d+: (connection closed before the response was complete|ECONNRESET)/);
      // Later commands fail cleanly too (connection refused), never hang or crash.
      const next = await vc.pcrRead(TPM_ALG.SHA256, [0]).catch((x: unknown) => x);
      expect(next).toBeInstanceOf(TpmTransportError);
      expect((next as Error).message).toMatch(/^TPM2_PCR_Read: cannot connect/);
    } finally {
      await victim.stop();
    }
  });
});
