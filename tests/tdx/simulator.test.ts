/**
 * The TEST-ONLY TDX simulator against the real verifier: its quotes (v4 and v5) pass every step when its
 * root is trusted explicitly, and never against the default trust (Intel's pinned root only).
 */
import { certificateFromDer } from '../../src/asn1/certificate';
import { dersOfPem } from '../../src/asn1/x509';
import { VerificationError } from '../../src/common/errors';
import { parseTdQuote } from '../../src/tdx/quote';
import { IntelTrustStore, INTEL_SGX_ROOT_CA_SHA256 } from '../../src/tdx/roots';
import { mintIntelRoot, SimulatedTdxPlatform, simulatedIntelKeys, TEST_ONLY_INTEL_ROOT_PEM } from '../../src/tdx/simulator';
import { parseTdReport } from '../../src/tdx/tdreport';
import { checkTdReportBinding, checkTdReportHashes, verifyTdQuote } from '../../src/tdx/verify';

const trust = new IntelTrustStore({ extraRootsPem: [TEST_ONLY_INTEL_ROOT_PEM], includeIntelRoot: false });

describe('simulated TDX machine', () => {
  const tdx = new SimulatedTdxPlatform();
  const reportData = Buffer.alloc(64, 7);
  const tdReport = tdx.tdReport(reportData);

  it('the committed root is what the committed key mints (no drift)', () => {
    // ECDSA is randomised, so compare everything but the signature: subject, validity and key.
    const minted = certificateFromDer(mintIntelRoot(simulatedIntelKeys().root));
    const committed = certificateFromDer(dersOfPem(TEST_ONLY_INTEL_ROOT_PEM)[0]);
    expect(minted.subject).toBe(committed.subject);
    expect([minted.validFrom, minted.validTo]).toEqual([committed.validFrom, committed.validTo]);
    expect(minted.publicKey.export({ format: 'jwk' })).toEqual(committed.publicKey.export({ format: 'jwk' }));
    expect(committed.verify(committed.publicKey)).toBe(true);
  });

  it.each([4, 5] as const)('quote v%s verifies with the simulated root trusted, and its body is the TDREPORT', (version) => {
    const quote = tdx.quote(tdReport, version);
    const q = parseTdQuote(quote);
    expect(q.header.version).toBe(version);
    const v = verifyTdQuote(quote, { trust });
    expect(v.rootLabel).toMatch(/SIMULATED Intel SGX Root CA/);
    const r = parseTdReport(tdReport);
    expect(() => checkTdReportHashes(r)).not.toThrow();
    expect(() => checkTdReportBinding(v.quote, r)).not.toThrow();
    expect(v.quote.body.reportData).toEqual(reportData);
  });

  it('is never trusted by default: intel-root-pinned', () => {
    const quote = tdx.quote(tdReport);
    let step = '';
    try {
      verifyTdQuote(quote);
    } catch (e) {
      step = (e as VerificationError).step;
      expect((e as Error).message).toContain('Intel SGX Root CA');
    }
    expect(step).toBe('intel-root-pinned');
    expect(INTEL_SGX_ROOT_CA_SHA256).toMatch(/^44a0196b/);
  });

  it('the quoting enclave refuses a TDREPORT this TD module did not make', () => {
    const other = new SimulatedTdxPlatform().tdReport(reportData);
    expect(() => tdx.quote(other)).toThrow(/MAC does not verify/);
    const altered = Buffer.from(tdReport);
    altered[512 + 16] ^= 1;
    expect(() => tdx.quote(altered)).toThrow(/MAC does not verify/);
  });
});
