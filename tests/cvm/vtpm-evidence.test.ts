/** HCL evidence read from a real swtpm provisioned as a simulated Azure CVM (paravisor included). */
import { randomBytes } from 'node:crypto';
import { TrustStore } from '../../src/certs/roots';
import type { AmdCertChain } from '../../src/certs/types';
import { DeviceError } from '../../src/common/errors';
import { claimsKey, claimsUserData, verifyHclReport } from '../../src/cvm/hcl';
import { AK_HANDLE } from '../../src/cvm/nv-indices';
import { ParavisorProxy, provisionSimulatedCvm, type SimulatedCvm } from '../../src/cvm/simulator';
import { AK_CERT_NOT_PROVISIONED_HINT, VtpmEvidence } from '../../src/cvm/vtpm-evidence';
import { rsaKeyOf, SwtpmTcpTransport, TpmClient, TpmError } from '../../src/tpm';
import { startSwtpm, type Swtpm } from '../helpers/swtpm';
import { certificateFromDer } from '../../src/asn1/certificate';

describe('vTPM HCL evidence on swtpm', () => {
  let tpm: Swtpm;
  let cvm: SimulatedCvm;
  let trust: TrustStore;
  let chain: AmdCertChain;
  const clients: TpmClient[] = [];
  const guest = (c: TpmClient) => (clients.push(c), c);

  beforeAll(async () => {
    tpm = await startSwtpm();
    cvm = await tpm.use((c) => provisionSimulatedCvm(c));
    trust = new TrustStore({ extraRootsPem: [cvm.platform.arkPem] });
    chain = { vcekPem: cvm.platform.vcekPem, chainPem: cvm.platform.askPem + cvm.platform.arkPem, tcbm: cvm.platform.reportedTcb, source: 'test' };
  });
  afterAll(async () => {
    for (const c of clients) await c.close();
    await tpm?.stop();
  });

  it('reads the HCL report from NV 0x01400001; it verifies and HCLAkPub is the AK at 0x81000003', async () => {
    const c = guest(tpm.client());
    const ev = new VtpmEvidence(c);
    const { raw, hcl } = await ev.readHclReport();
    expect(raw.length).toBe(2048);
    verifyHclReport(hcl, chain, trust);
    const ak = rsaKeyOf((await c.readPublic(AK_HANDLE)).public).export({ format: 'jwk' });
    expect(claimsKey(hcl.claims, 'HCLAkPub')?.n).toBe(ak.n);
    expect(claimsUserData(hcl.claims)).toBe('0'.repeat(128));
    await clients.pop()?.close();
  });

  it('reads the AK certificate index: a DER certificate for the AK, zero-padded to the index size', async () => {
    const c = guest(tpm.client());
    const cert = await new VtpmEvidence(c).readAkCertificate();
    expect(cert.length).toBe(2048);
    const x = certificateFromDer(cert.subarray(0, cvm.akCertDer?.length));
    expect(x.verify(cvm.ca.publicKey)).toBe(true);
    expect(x.publicKey.equals(rsaKeyOf((await c.readPublic(AK_HANDLE)).public))).toBe(true);
    await clients.pop()?.close();
  });

  it('refreshes with user data through the paravisor: the new report carries it and still verifies', async () => {
    const c = guest(new TpmClient(cvm.transport(new SwtpmTcpTransport({ port: tpm.port }))));
    const ev = new VtpmEvidence(c, { pollIntervalMs: 10 });
    for (const userData of [randomBytes(64), randomBytes(64)]) {
      const { hcl } = await ev.refreshWithUserData(userData);
      expect(claimsUserData(hcl.claims)).toBe(userData.toString('hex').toUpperCase());
      verifyHclReport(hcl, chain, trust);
    }
    // A plain read afterwards sees the same (last) report.
    expect(claimsUserData((await ev.readHclReport()).hcl.claims)).toMatch(/^[0-9A-F]{128}$/);
    await clients.pop()?.close();
  });

  it('the same paravisor behind a TCP proxy: a client that only knows a port gets the regenerated report', async () => {
    const proxy = new ParavisorProxy(cvm.transport(new SwtpmTcpTransport({ port: tpm.port })));
    const port = await proxy.listen();
    try {
      const c = guest(new TpmClient(new SwtpmTcpTransport({ port })));
      const userData = randomBytes(64);
      const { hcl } = await new VtpmEvidence(c, { pollIntervalMs: 10 }).refreshWithUserData(userData);
      expect(claimsUserData(hcl.claims)).toBe(userData.toString('hex').toUpperCase());
    } finally {
      await clients.pop()?.close();
      await proxy.close();
    }
  });

  it('without a paravisor the report never follows: ERR_HCL_USER_DATA_STALE, not a report bound to other data', async () => {
    const err = await tpm.use((c) => new VtpmEvidence(c, { refreshTimeoutMs: 100, pollIntervalMs: 20 }).refreshWithUserData(randomBytes(64))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeviceError);
    expect((err as DeviceError).code).toBe('ERR_HCL_USER_DATA_STALE');
    expect((err as Error).message).toMatch(/still carries other user-data 100 ms/);
  });

  it('an AK certificate not provisioned yet: TPM_RC_NV_UNINITIALIZED with the retry-later hint', async () => {
    const other = await startSwtpm();
    try {
      await other.use((c) => provisionSimulatedCvm(c, { akCertificate: 'missing' }));
      const err = await other.use((c) => new VtpmEvidence(c).readAkCertificate()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TpmError);
      expect((err as TpmError).rcName).toBe('TPM_RC_NV_UNINITIALIZED');
      expect((err as TpmError).hint).toBe(AK_CERT_NOT_PROVISIONED_HINT);
      expect((err as Error).message).toMatch(/^TPM2_NV_Read reading the AK certificate \(NV 0x01c101d0\): TPM_RC_NV_UNINITIALIZED .*retry later$/);
    } finally {
      await other.stop();
    }
  });
});
