/** Golden byte vectors for command encodings (CVM-PROTOCOL §9) and response-code decoding; no TPM needed. */
import { marshalCommand, parseResponse, PASSWORD, policyAuth } from '../../src/tpm/client';
import { TPM_ALG, TPM_CC, TPM_RH } from '../../src/tpm/constants';
import { decodeRc, TpmError, TpmResponseError } from '../../src/tpm/errors';
import { Writer } from '../../src/tpm/marshal';
import { marshalPublic2b, parseAttest, parsePublic2b, pcrSelectionBytes } from '../../src/tpm/structures';
import { ephemeralKeyTemplate, PCRS_0_7, policyPcrDigest } from '../../src/tpm/templates';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('command encodings (golden)', () => {
  it('NV_Read of the HCL index with owner password auth', () => {
    const cmd = marshalCommand({ cc: TPM_CC.NV_Read, handles: [TPM_RH.OWNER, 0x01400001], auths: [PASSWORD], params: new Writer().u16(512).u16(1024).build() });
    expect(cmd.toString('hex')).toBe(hex('8002 00000023 0000014e 40000001 01400001 00000009 40000009 0000 00 0000 0200 0400').toString('hex'));
  });
  it('PCR_Read of sha256:0-7', () => {
    const cmd = marshalCommand({ cc: TPM_CC.PCR_Read, params: pcrSelectionBytes([PCRS_0_7]) });
    expect(cmd.toString('hex')).toBe('80010000001400' + '00017e' + '00000001000b03ff0000');
  });
  it('FlushContext carries the handle as a parameter; Startup(CLEAR)', () => {
    expect(marshalCommand({ cc: TPM_CC.FlushContext, params: new Writer().u32(0x80000001).build() }).toString('hex')).toBe('80010000000e0000016580000001');
    expect(marshalCommand({ cc: TPM_CC.Startup, params: new Writer().u16(0).build() }).toString('hex')).toBe('80010000000c000001440000');
  });
  it('a policy session authorization keeps the session (continueSession)', () => {
    const cmd = marshalCommand({ cc: TPM_CC.RSA_Decrypt, handles: [0x80000002], auths: [policyAuth(0x03000000)], params: new Writer().tpm2b(Buffer.from([1, 2])).u16(TPM_ALG.OAEP).u16(TPM_ALG.SHA256).tpm2b(Buffer.alloc(0)).build() });
    expect(cmd.toString('hex')).toBe(hex('8002 00000025 00000159 80000002 00000009 03000000 0000 01 0000 0002 0102 0017 000b 0000').toString('hex'));
  });
  it('the ephemeral key template is 312 bytes with attributes 0x00020432 and unique = 256 zeros', () => {
    const policy = Buffer.alloc(32, 0xab);
    const b = marshalPublic2b(ephemeralKeyTemplate(policy));
    expect(b.length).toBe(312);
    expect(b.subarray(0, 10).toString('hex')).toBe('0136' + '0001' + '000b' + '00020432');
    expect(b.subarray(10, 44).toString('hex')).toBe('0020' + 'ab'.repeat(32));
    expect(b.subarray(44, 54).toString('hex')).toBe('0010' + '0010' + '0800' + '00000000');
    expect(b.subarray(54, 56).toString('hex')).toBe('0100');
    expect(b.subarray(56).every((x) => x === 0)).toBe(true);
    const back = parsePublic2b(b, 'template').area;
    expect(back.objectAttributes).toBe(0x20432);
    expect(back.authPolicy.equals(policy)).toBe(true);
  });
  it('the PolicyPCR digest over all-zero PCR0-7 (the value tpm2_policypcr prints on a fresh TPM)', () => {
    const d = policyPcrDigest(PCRS_0_7, Array.from({ length: 8 }, () => Buffer.alloc(32)));
    // Independent computation: SHA256(0^32 || 0000017f || 00000001000b03ff0000 || SHA256(0^256)).
    const { createHash } = jest.requireActual<typeof import('node:crypto')>('node:crypto');
    const inner = createHash('sha256').update(Buffer.alloc(256)).digest();
    const expected = createHash('sha256').update(Buffer.concat([Buffer.alloc(32), hex('0000017f 00000001000b03ff0000'), inner])).digest();
    expect(d.equals(expected)).toBe(true);
  });
});

describe('response codes', () => {
  it.each([
    [0x14a, 'TPM_RC_NV_UNINITIALIZED', {}],
    [0x101, 'TPM_RC_FAILURE', {}],
    [0x12f, 'TPM_RC_AUTH_UNAVAILABLE', {}],
    [0x902, 'TPM_RC_OBJECT_MEMORY', {}],
    [0x99d, 'TPM_RC_POLICY_FAIL', { session: 1 }],
    [0x1d5, 'TPM_RC_SIZE', { parameter: 1 }],
    [0x095, 'TPM_RC_SIZE', {}],
    [0x18b, 'TPM_RC_HANDLE', { handle: 1 }],
    [0x28b, 'TPM_RC_HANDLE', { handle: 2 }],
    [0x084, 'TPM_RC_VALUE', {}],
    [0x2c4, 'TPM_RC_VALUE', { parameter: 2 }],
  ])('0x%s decodes to %s', (rc, name, where) => {
    const d = decodeRc(rc);
    expect(d.name).toBe(name);
    expect({ parameter: d.parameter, handle: d.handle, session: d.session }).toEqual({ parameter: undefined, handle: undefined, session: undefined, ...where });
  });
  it('names unknown codes by value and flags TPM 1.2 codes', () => {
    expect(decodeRc(0x13f).name).toBe('TPM_RC_0x13f');
    expect(decodeRc(0x0a).name).toMatch(/TPM 1\.2/);
  });
  it('a non-zero rc becomes a TpmError naming the command, the code and a hint', () => {
    const cmd = { cc: TPM_CC.RSA_Decrypt, handles: [0x80000000], auths: [PASSWORD] };
    try {
      parseResponse(cmd, hex('8001 0000000a 0000099d'));
      throw new Error('no error');
    } catch (e) {
      expect(e).toBeInstanceOf(TpmError);
      const t = e as TpmError;
      expect(t.code).toBe('ERR_TPM_RC');
      expect(t.rcName).toBe('TPM_RC_POLICY_FAIL');
      expect(t.message).toMatch(/^TPM2_RSA_Decrypt: TPM_RC_POLICY_FAIL \(session 1\) \[rc 0x99d\]: the PCRs changed since attestation/);
    }
  });
});

describe('hostile responses', () => {
  const cmd = { cc: TPM_CC.PolicyGetDigest, handles: [0x03000000] };
  it.each([
    ['a size field that disagrees with the bytes', '8001 00000020 00000000 0020'],
    ['a truncated parameter', '8001 0000000e 00000000 0020 abab'],
    ['an error with trailing bytes', '8001 0000000e 0000014a 00000000'],
    ['a header shorter than 10 bytes', '8001 0000'],
    ['the wrong tag', '8002 0000000c 00000000 0000'],
  ])('%s → TpmResponseError', (_what, h) => {
    // Parse, then read the parameter as TpmClient.policyGetDigest does.
    expect(() => parseResponse(cmd, hex(h)).params.tpm2b('policyDigest', 64)).toThrow(TpmResponseError);
  });
  it('a TPMS_ATTEST with a wrong magic, a lying size or trailing bytes is refused', () => {
    const good = hex('ff544347 8017 0000 0000 0000000000000001 00000000 00000000 01 0000000000000000 0000 0000');
    expect(parseAttest(good, 'attest').attested.kind).toBe('certify');
    expect(() => parseAttest(Buffer.concat([hex('ff544348'), good.subarray(4)]), 'attest')).toThrow(/magic/);
    expect(() => parseAttest(Buffer.concat([good, hex('00')]), 'attest')).toThrow(/trailing/);
    expect(() => parseAttest(good.subarray(0, good.length - 1), 'attest')).toThrow(/truncated/);
  });
});
