/** The AzureGuest request format (shared by guest and emulator) and MAA's envelope, without a TPM. */
import { createCipheriv, randomBytes } from 'node:crypto';
import { InvalidInputError } from '../../src/common/errors';
import { MaaEnvelopeError, openEnvelopeWithKey, parseEnvelope, TRANSPORT_KEY_AAD } from '../../src/maa/azure-guest-envelope';
import { attestationInfo, parseAzureGuestRequest, serializeAzureGuestRequest, type AzureGuestRequestInput, type SnpIsolation } from '../../src/maa/azure-guest-request';

const input: AzureGuestRequestInput = {
  os: { type: 'Linux', distro: 'Ubuntu', versionMajor: 22, versionMinor: 4 },
  tcgLog: Buffer.from('log'),
  clientPayload: { nonce: '1234' },
  tpm: {
    akCert: randomBytes(900),
    akPub: randomBytes(282),
    pcrQuote: randomBytes(145),
    pcrSignature: randomBytes(256),
    pcrs: Array.from({ length: 8 }, (_, i) => ({ index: i, digest: randomBytes(32) })),
    encKeyPub: randomBytes(312),
    encKeyCertifyInfo: randomBytes(141),
    encKeyCertifyInfoSignature: randomBytes(256),
  },
  isolation: { snpReport: randomBytes(1184), vcekCertChainPem: '-----BEGIN CERTIFICATE-----\n...', runtimeClaims: Buffer.from('{"keys":[]}') },
};

function withInfo(f: (info: Record<string, unknown>) => void): unknown {
  const info = attestationInfo(input);
  f(info);
  return { AttestationInfo: Buffer.from(JSON.stringify(info)).toString('base64url') };
}

describe('AzureGuest request', () => {
  it('uses the C++ client encodings and round-trips through the parser', () => {
    const body = JSON.parse(serializeAzureGuestRequest(input)) as { AttestationInfo: string };
    expect(body.AttestationInfo).toMatch(/^[A-Za-z0-9_-]+$/); // base64url, no padding
    const info = JSON.parse(Buffer.from(body.AttestationInfo, 'base64url').toString()) as Record<string, unknown>;
    expect(info.AttestationProtocolVersion).toBe('2.0');
    expect(info.OSType).toBe(Buffer.from('Linux').toString('base64'));
    expect(info.OSBuild).toBe(Buffer.from('NotApplication').toString('base64'));
    expect(info.OSVersionMajor).toBe(22);
    expect(info.ClientPayload).toEqual({ nonce: Buffer.from('1234').toString('base64') });
    const tpm = info.TpmInfo as Record<string, unknown>;
    expect(tpm.PcrSet).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const proof = JSON.parse(Buffer.from((info.IsolationInfo as { Evidence: { Proof: string } }).Evidence.Proof, 'base64').toString()) as Record<string, string>;
    expect(Buffer.from(proof.SnpReport, 'base64url').equals((input.isolation as SnpIsolation).snpReport)).toBe(true);

    const p = parseAzureGuestRequest(body);
    expect(p.os).toEqual({ ...input.os, build: 'NotApplication' });
    expect(p.tcgLog.toString()).toBe('log');
    expect(p.tpm.encKeyPub.equals(input.tpm.encKeyPub)).toBe(true);
    expect(p.tpm.pcrs[7].digest.equals(input.tpm.pcrs[7].digest)).toBe(true);
    expect(p.isolation.runtimeClaims.equals(input.isolation.runtimeClaims)).toBe(true);
    expect(p.clientPayload).toEqual({ nonce: Buffer.from('1234').toString('base64') });
  });

  it.each([
    ['a body that is not an object', [], /body: must be a JSON object/],
    ['AttestationInfo that is not base64', { AttestationInfo: '%%%' }, /AttestationInfo: is not valid base64/],
    ['another protocol version', withInfo((i) => (i.AttestationProtocolVersion = '1.0')), /AttestationProtocolVersion/],
    ['OS major version 0', withInfo((i) => (i.OSVersionMajor = 0)), /OSVersionMajor: must not be 0/],
    ['PCRs that do not follow PcrSet', withInfo((i) => ((i.TpmInfo as Record<string, unknown>).PcrSet = [0, 1, 2, 3, 4, 5, 6, 9])), /PCRs\[7\]\.Index/],
    ['a 31-byte PCR digest', withInfo((i) => ((i.TpmInfo as { PCRs: { Digest: string }[] }).PCRs[0].Digest = randomBytes(31).toString('base64'))), /32-byte/],
    ['SGX isolation', withInfo((i) => ((i.IsolationInfo as Record<string, unknown>).Type = 'Sgx')), /"Sgx" is not supported \(SevSnp or Tdx\)/],
    ['an oversized AK certificate', withInfo((i) => ((i.TpmInfo as Record<string, unknown>).AikCert = randomBytes(9000).toString('base64'))), /AikCert: is longer than 8192/],
  ])('refuses %s with the field named', (_what, body, msg) => {
    let err: unknown;
    try {
      parseAzureGuestRequest(body);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as Error).message).toMatch(msg);
  });
});

describe('MAA envelope', () => {
  function seal(jwt: string, aad = TRANSPORT_KEY_AAD) {
    const key = randomBytes(32);
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', key, iv);
    c.setAAD(aad);
    const ct = Buffer.concat([c.update(jwt), c.final()]);
    const env = {
      EncryptedInnerKey: randomBytes(256).toString('base64'),
      EncryptionParams: { Iv: iv.toString('base64'), BlockMode: 'ChainingModeGCM', BlockPadding: 'PKCS7', Cipher: 'AES', KeySizeInBits: 256 },
      AuthenticationData: c.getAuthTag().toString('base64'),
      Jwt: ct.toString('base64'),
    };
    return { key, token: Buffer.from(JSON.stringify(env)).toString('base64url'), env };
  }

  it('opens with AAD "Transport Key" and wipes the key', () => {
    const { key, token } = seal('a.b.c');
    expect(openEnvelopeWithKey(parseEnvelope(token), key)).toBe('a.b.c');
    expect(key.every((b) => b === 0)).toBe(true);
  });
  it('another AAD does not authenticate', () => {
    const { key, token } = seal('a.b.c', Buffer.from('Other Key'));
    const e = (() => {
      try {
        return openEnvelopeWithKey(parseEnvelope(token), key);
      } catch (x) {
        return x;
      }
    })();
    expect(e).toBeInstanceOf(MaaEnvelopeError);
    expect((e as MaaEnvelopeError).step).toBe('maa-envelope-authenticate');
  });
  it('refuses malformed envelopes at maa-envelope-format', () => {
    const { env } = seal('a.b.c');
    const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    for (const bad of [
      'not base64!',
      enc([1]),
      enc({ ...env, EncryptionParams: { ...env.EncryptionParams, BlockMode: 'ChainingModeCBC' } }),
      enc({ ...env, AuthenticationData: randomBytes(8).toString('base64') }),
      enc({ ...env, EncryptedInnerKey: randomBytes(128).toString('base64') }),
      enc({ ...env, Jwt: undefined }),
    ]) {
      expect(() => parseEnvelope(bad)).toThrow(MaaEnvelopeError);
      try {
        parseEnvelope(bad);
      } catch (e) {
        expect((e as MaaEnvelopeError).step).toBe('maa-envelope-format');
      }
    }
  });
});
