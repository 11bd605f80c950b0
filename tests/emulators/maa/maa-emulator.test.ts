import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { certificateFromDer } from '../../../src/asn1/certificate';
import { createHttpsFetch, type HttpsFetch } from '../../../src/common/https-fetch';
import { loadOrCreateLocalCa } from '../../../src/emulators/ca';
import { startMaaEmulator, type MaaEmulator } from '../../../src/emulators/maa';
import { buildSevSnpVmRequest, serializeSevSnpVmRequest, type SevSnpVmRequestInput } from '../../../src/maa/request';
import { keysOfJwks, publicKeyOfJwk } from '../../../src/maa/verify-token';
import { MAA_QUOTE_EXTENSION_OID } from '../../../src/emulators/maa/signing-key';
import { reportDataFor } from '../../../src/snp/report';
import { SimulatedPlatform } from '../../../src/snp/simulator';
import { describeVectors, vector } from '../../helpers/vectors';
import { makeUvmSigner } from './uvm-signer';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-maa-emu-'));
const ca = loadOrCreateLocalCa(path.join(dir, 'ca'));
const signer = makeUvmSigner();
const platform = new SimulatedPlatform({ guestSvn: 3, policy: 0x3001fn | (1n << 19n) });

function runtimeJson(): Buffer {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = publicKey.export({ format: 'jwk' });
  return Buffer.from(JSON.stringify({ keys: [{ kty: 'RSA', n: jwk.n, e: jwk.e, kid: 'wrapping', key_ops: ['encrypt'] }] }));
}

type Evidence = SevSnpVmRequestInput;

/** The key `token` names in a JWKS as MAA publishes it (kid, kty, x5c only), read the way the sidecar reads it. */
function keyFor(token: string, jwks: unknown): KeyObject {
  const kid = String(decodeProtectedHeader(token).kid);
  const jwk = keysOfJwks(jwks, 'emulator JWKS').get(kid);
  if (!jwk) throw new Error(`no key ${kid} in the emulator JWKS`);
  return publicKeyOfJwk(jwk, kid);
}

/** Evidence from `p`; `uvm` null sends no endorsement, undefined one from the trusted test signer. */
function simulated(runtimeData: Buffer, p: SimulatedPlatform = platform, uvm?: string | null): Evidence {
  const endorsement = uvm === null ? undefined : (uvm ?? signer.endorse(p.measurement));
  return {
    report: p.signReport({ reportData: reportDataFor(runtimeData) }),
    vcekPem: p.vcekPem,
    chainPem: p.askPem + p.arkPem,
    ...(endorsement !== undefined ? { uvmEndorsementBase64: endorsement } : {}),
    runtimeData,
  };
}

describe('MAA emulator', () => {
  let emu: MaaEmulator;
  let fetch: HttpsFetch;

  async function post(body: string, e: MaaEmulator = emu, apiVersion = '2020-10-01'): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await fetch(`${e.url}/attest/SevSnpVm?api-version=${apiVersion}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  }
  const attest = (ev: Evidence, e: MaaEmulator = emu, apiVersion?: string) => post(serializeSevSnpVmRequest(buildSevSnpVmRequest(ev)), e, apiVersion);

  async function verifyWithPublishedKeys(token: string, e: MaaEmulator = emu) {
    const meta = (await (await fetch(`${e.url}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    expect(meta.issuer).toBe(e.issuer);
    expect(meta.jwks_uri).toBe(`${e.url}/certs`);
    const jwks = (await (await fetch(String(meta.jwks_uri))).json()) as unknown;
    return jwtVerify(token, keyFor(token, jwks), { issuer: e.issuer, algorithms: ['RS256'] });
  }

  function refusal(r: { status: number; json: Record<string, unknown> }): { code: string; message: string } {
    expect(r.status).toBe(400);
    expect(Object.keys(r.json)).toEqual(['error']);
    const err = r.json.error as { code: string; message: string };
    expect(typeof err.code).toBe('string');
    expect(typeof err.message).toBe('string');
    return err;
  }

  beforeAll(async () => {
    emu = await startMaaEmulator({
      ca,
      trustedArkPem: [platform.arkPem],
      trustedUvmRootFingerprints: [signer.rootSha256],
      stateDir: path.join(dir, 'maa'),
    });
    fetch = createHttpsFetch({ extraCaPem: [ca.certPem] });
  });
  afterAll(async () => {
    await emu.close();
    fetch.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('listens on loopback HTTPS with a local-CA certificate', () => {
    expect(emu.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(emu.endpoint).toBe(emu.url.slice('https://'.length));
    expect(emu.issuer).toBe(emu.url);
  });

  it('issues an RS256 token with the exact SevSnpVm claim set for endorsed simulated evidence', async () => {
    const runtime = runtimeJson();
    const nonce = 18446744073709551557n; // above 2^53: must be echoed exactly
    const r = await attest({ ...simulated(runtime), nonce });
    expect(r.status).toBe(200);
    expect(Object.keys(r.json)).toEqual(['token']);
    const token = String(r.json.token);

    const header = decodeProtectedHeader(token);
    expect(header).toEqual({ alg: 'RS256', jku: `${emu.url}/certs`, kid: emu.signingKey.kid, typ: 'JWT' });

    const { payload } = await verifyWithPublishedKeys(token);
    const types: Record<string, string> = {
      iss: 'string', iat: 'number', nbf: 'number', exp: 'number', jti: 'string', nonce: 'string',
      'x-ms-attestation-type': 'string', 'x-ms-compliance-status': 'string', 'x-ms-policy-hash': 'string', 'x-ms-runtime': 'object',
      'x-ms-sevsnpvm-authorkeydigest': 'string', 'x-ms-sevsnpvm-bootloader-svn': 'number', 'x-ms-sevsnpvm-familyId': 'string',
      'x-ms-sevsnpvm-guestsvn': 'number', 'x-ms-sevsnpvm-hostdata': 'string', 'x-ms-sevsnpvm-idkeydigest': 'string',
      'x-ms-sevsnpvm-imageId': 'string', 'x-ms-sevsnpvm-is-debuggable': 'boolean', 'x-ms-sevsnpvm-launchmeasurement': 'string',
      'x-ms-sevsnpvm-microcode-svn': 'number', 'x-ms-sevsnpvm-migration-allowed': 'boolean', 'x-ms-sevsnpvm-reportdata': 'string',
      'x-ms-sevsnpvm-reportid': 'string', 'x-ms-sevsnpvm-smt-allowed': 'boolean', 'x-ms-sevsnpvm-snpfw-svn': 'number',
      'x-ms-sevsnpvm-tee-svn': 'number', 'x-ms-sevsnpvm-uvm-endorsement': 'object', 'x-ms-sevsnpvm-vmpl': 'number', 'x-ms-ver': 'string',
    };
    expect(Object.keys(payload).sort()).toEqual(Object.keys(types).sort());
    for (const [k, t] of Object.entries(types)) expect([k, typeof payload[k]]).toEqual([k, t]);

    expect(payload.iss).toBe(emu.issuer);
    expect(payload.exp! - payload.iat!).toBe(28800);
    expect(payload.nbf).toBe(payload.iat);
    expect(payload.jti).toMatch(/^[0-9a-f]{64}$/);
    expect(payload.nonce).toBe(nonce.toString());
    expect(payload['x-ms-attestation-type']).toBe('sevsnpvm');
    expect(payload['x-ms-compliance-status']).toBe('azure-compliant-uvm');
    expect(payload['x-ms-ver']).toBe('1.0');
    expect(payload['x-ms-policy-hash']).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(payload['x-ms-runtime']).toEqual(JSON.parse(runtime.toString()));

    const measurement = platform.measurement.toString('hex');
    expect(payload['x-ms-sevsnpvm-hostdata']).toBe(platform.hostData.toString('hex'));
    expect(payload['x-ms-sevsnpvm-reportdata']).toBe(createHash('sha256').update(runtime).digest('hex') + '00'.repeat(32));
    expect(payload['x-ms-sevsnpvm-launchmeasurement']).toBe(measurement);
    expect(payload['x-ms-sevsnpvm-uvm-endorsement']).toEqual({ 'x-ms-sevsnpvm-guestsvn': '2', 'x-ms-sevsnpvm-launchmeasurement': measurement });
    expect(payload['x-ms-sevsnpvm-reportid']).toBe(platform.reportId.toString('hex'));
    expect(payload['x-ms-sevsnpvm-familyId']).toBe('00'.repeat(16));
    expect(payload['x-ms-sevsnpvm-imageId']).toBe('00'.repeat(16));
    expect(payload['x-ms-sevsnpvm-idkeydigest']).toBe('00'.repeat(48));
    expect(payload['x-ms-sevsnpvm-authorkeydigest']).toBe('00'.repeat(48));
    expect(payload['x-ms-sevsnpvm-guestsvn']).toBe(3);
    expect(payload['x-ms-sevsnpvm-vmpl']).toBe(0);
    // policy 0x3001f | bit 19: SMT (16) allowed, migration agent (18) not, debuggable (19).
    expect(payload['x-ms-sevsnpvm-smt-allowed']).toBe(true);
    expect(payload['x-ms-sevsnpvm-migration-allowed']).toBe(false);
    expect(payload['x-ms-sevsnpvm-is-debuggable']).toBe(true);
    // REPORTED_TCB, Milan layout [bl, tee, 0,0,0,0, snp, ucode].
    const tcb = platform.reportedTcb;
    const byte = (i: number) => Number((tcb >> BigInt(8 * i)) & 0xffn);
    expect([payload['x-ms-sevsnpvm-bootloader-svn'], payload['x-ms-sevsnpvm-tee-svn'], payload['x-ms-sevsnpvm-snpfw-svn'], payload['x-ms-sevsnpvm-microcode-svn']]).toEqual([
      byte(0), byte(1), byte(6), byte(7),
    ]);
  });

  it('publishes its keys as MAA does: kid, kty and x5c only, the certificate carrying PEM text in its quote extension', async () => {
    const jwks = (await (await fetch(`${emu.url}/certs`)).json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys).toHaveLength(1);
    const [k] = jwks.keys;
    // No n/e: a verifier must take the key from x5c[0], as against Azure.
    expect(Object.keys(k)).toEqual(['x5c', 'kid', 'kty']);
    expect(k.kid).toBe(emu.signingKey.kid);
    expect(k.kty).toBe('RSA');
    const der = Buffer.from((k.x5c as string[])[0], 'base64');
    const cert = certificateFromDer(der, 'x5c[0]');
    expect(cert.publicKey.equals(emu.signingKey.publicKey)).toBe(true);
    expect(cert.verify(cert.publicKey)).toBe(true);
    // The trap of real MAA certificates: PEM certificate text inside the DER, in extension 1.3.6.1.4.1.311.105.1.
    expect(der.includes('-----BEGIN CERTIFICATE-----')).toBe(true);
    expect(der.includes(Buffer.from('06092b0601040182376901', 'hex'))).toBe(true);
    expect(MAA_QUOTE_EXTENSION_OID).toBe('1.3.6.1.4.1.311.105.1');
  });

  it('accepts api-version 2022-08-01 and evidence without an endorsement, then omits the compliance claim', async () => {
    const runtime = runtimeJson();
    const r = await attest(simulated(runtime, platform, null), emu, '2022-08-01');
    expect(r.status).toBe(200);
    const { payload } = await verifyWithPublishedKeys(String(r.json.token));
    expect(payload['x-ms-compliance-status']).toBeUndefined();
    expect(payload['x-ms-sevsnpvm-uvm-endorsement']).toBeUndefined();
    expect(payload['x-ms-sevsnpvm-hostdata']).toBe(platform.hostData.toString('hex'));
  });

  it('refuses a report with one flipped byte: report-signature', async () => {
    const ev = simulated(runtimeJson());
    ev.report = Buffer.from(ev.report);
    ev.report[0x04] ^= 0x01; // GUEST_SVN, inside the signed region
    const err = refusal(await attest(ev));
    expect(err.code).toBe('InvalidParameter');
    expect(err.message).toMatch(/^report-signature: /);
  });

  it('refuses REPORT_DATA bound to other runtime data: report-data', async () => {
    const ev = simulated(runtimeJson());
    ev.runtimeData = runtimeJson();
    expect(refusal(await attest(ev)).message).toMatch(/^report-data: /);
  });

  it('refuses an ARK it was not told to trust: ark-pinned', async () => {
    const strict = await startMaaEmulator({ ca, trustedUvmRootFingerprints: [signer.rootSha256] });
    try {
      const err = refusal(await attest(simulated(runtimeJson()), strict));
      expect(err.message).toMatch(/^ark-pinned: /);
      expect(err.message).toContain(platform.arkFingerprint);
    } finally {
      await strict.close();
    }
  });

  it('refuses an endorsement of another launch measurement: uvm-measurement', async () => {
    const other = signer.endorse(Buffer.alloc(48, 0xab));
    const err = refusal(await attest(simulated(runtimeJson(), platform, other)));
    expect(err.message).toMatch(/^uvm-measurement: /);
    expect(err.message).toContain('ab'.repeat(48));
  });

  it('refuses an endorsement from an untrusted UVM signer: uvm-root', async () => {
    const stranger = makeUvmSigner('stranger');
    const err = refusal(await attest(simulated(runtimeJson(), platform, stranger.endorse(platform.measurement))));
    expect(err.message).toMatch(/^uvm-root: /);
  });

  it('refuses unsupported or missing api-versions in MAA error shape', async () => {
    const body = serializeSevSnpVmRequest(buildSevSnpVmRequest(simulated(runtimeJson())));
    const err = refusal(await post(body, emu, '2019-01-01'));
    expect(err.code).toBe('UnsupportedApiVersion');
    expect(err.message).toMatch(/^api-version: .*2019-01-01/);
    const res = await fetch(`${emu.url}/attest/SevSnpVm`, { method: 'POST', body });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/^api-version: .*missing/);
  });

  it('refuses malformed bodies: request-format', async () => {
    expect(refusal(await post('{"report": ')).message).toMatch(/^request-format: request body is not JSON/);
    expect(refusal(await post('{"report": "!!", "runtimeData": {}}')).message).toMatch(/^request-format: SevSnpVm request report/);
    const good = JSON.parse(serializeSevSnpVmRequest(buildSevSnpVmRequest(simulated(runtimeJson())))) as Record<string, unknown>;
    (good.runtimeData as Record<string, unknown>).dataType = 'XML';
    expect(refusal(await post(JSON.stringify(good))).message).toMatch(/^request-format: .*dataType/);
  });

  it('answers 404 and 405 in the same error shape', async () => {
    const nf = await fetch(`${emu.url}/attest/SgxEnclave?api-version=2020-10-01`, { method: 'POST', body: '{}' });
    expect(nf.status).toBe(404);
    expect(((await nf.json()) as { error: { code: string } }).error.code).toBe('NotFound');
    const na = await fetch(`${emu.url}/attest/SevSnpVm?api-version=2020-10-01`);
    expect(na.status).toBe(405);
  });

  it('keeps its signing key across restarts (0600), so earlier tokens still verify', async () => {
    const stateDir = path.join(dir, 'restart');
    const first = await startMaaEmulator({ ca, trustedArkPem: [platform.arkPem], trustedUvmRootFingerprints: [signer.rootSha256], stateDir });
    let token: string;
    try {
      const r = await attest(simulated(runtimeJson()), first);
      expect(r.status).toBe(200);
      token = String(r.json.token);
    } finally {
      await first.close();
    }
    expect(fs.statSync(path.join(stateDir, 'maa-signing-key.pem')).mode & 0o777).toBe(0o600);
    const second = await startMaaEmulator({ ca, stateDir });
    try {
      expect(second.signingKey.kid).toBe(first.signingKey.kid);
      const jwks = (await (await fetch(`${second.url}/certs`)).json()) as unknown;
      // The issuer (port) differs after a restart on port 0; the signature is what must still verify.
      const { payload } = await jwtVerify(token, keyFor(token, jwks), { algorithms: ['RS256'] });
      expect(payload.iss).toBe(first.issuer);
    } finally {
      await second.close();
    }
    const fresh = await startMaaEmulator({ ca, stateDir: path.join(dir, 'other-state') });
    try {
      expect(fresh.signingKey.kid).not.toBe(first.signingKey.kid);
    } finally {
      await fresh.close();
    }
  });

  describeVectors('real Milan evidence', () => {
    const thim = JSON.parse(vector('real-milan/thim_certs.json').toString('utf8')) as { vcekCert: string; certificateChain: string };
    const otherChip = JSON.parse(Buffer.from(vector('real-milan/other_chip_host-amd-cert-base64').toString('utf8').trim(), 'base64').toString('utf8')) as {
      vcekCert: string;
      certificateChain: string;
    };
    const report = vector('real-milan/snp_report.bin');
    const uvm = vector('real-milan/uvm_reference_info.cose').toString('base64');
    // The real report binds sha256 of a runtime document we do not have (the first half of its REPORT_DATA).
    const REAL_REPORT_DATA = 'ee986ff2bd7e3f22e29f6409186278' + '16cf8e23b9d9c312767168eab68c861c71' + '00'.repeat(32);

    it('passes chain, signature and the real UVM endorsement (Microsoft root), then refuses on report-data', async () => {
      expect(report.subarray(0x50, 0x90).toString('hex')).toBe(REAL_REPORT_DATA);
      const err = refusal(await attest({ report, vcekPem: thim.vcekCert, chainPem: thim.certificateChain, uvmEndorsementBase64: uvm, runtimeData: Buffer.from('{}') }));
      expect(err.message).toMatch(/^report-data: /);
      expect(err.message).toContain(REAL_REPORT_DATA);
    });

    it('refuses the real report with the other chip’s (valid AMD) chain', async () => {
      const err = refusal(await attest({ report, vcekPem: otherChip.vcekCert, chainPem: otherChip.certificateChain, uvmEndorsementBase64: uvm, runtimeData: Buffer.from('{}') }));
      // The other chain is a valid AMD chain at the same TCB (it passes ark-pinned and vcek-tcb), but its VCEK
      // certifies another CHIP_ID, which is caught before its key is tried on the signature.
      expect(err.message).toMatch(/^vcek-hwid: /);
      expect(err.message).toContain(report.subarray(0x1a0, 0x1e0).toString('hex'));
    });
  });
});
