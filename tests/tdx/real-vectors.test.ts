/**
 * The real Azure TDX CVM evidence of ../shared/vectors/real-azure-tdx: two HCL reports of type 4 and the
 * TD quote v4 IMDS returned for one of them. Decoding reproduces the facts its README lists; verification
 * passes every step, and one flipped bit is refused at the step it belongs to.
 */
import { createHash } from 'node:crypto';
import { checkClaimsBinding, HCL_CLAIMS_OFFSET, hclTeeOf, parseAnyHclReport, parseHclReport, parseTdxHclReport } from '../../src/cvm/hcl';
import { isTdQuote, parseTdQuote, quoteKind, tdQuoteToJson } from '../../src/tdx/quote';
import { IntelTrustStore, INTEL_SGX_ROOT_CA_SHA256 } from '../../src/tdx/roots';
import { tdReportHashesMatch } from '../../src/tdx/tdreport';
import { checkTdReportBinding, checkTdReportHashes, verifyTdQuote } from '../../src/tdx/verify';
import { describeVectorFolder, vector } from '../helpers/vectors';
import { stepOf } from '../helpers/errors';

const AT = new Date('2025-06-01T00:00:00Z');


describeVectorFolder('real-azure-tdx', 'real Azure TDX evidence', () => {
  const hclBytes = vector('real-azure-tdx/trustee-hcl-report.bin');
  const kinvolk = vector('real-azure-tdx/kinvolk-hcl-report-tdx.bin');
  const quoteBytes = vector('real-azure-tdx/trustee-td-quote.bin');

  it('decodes the HCL report of type 4: header v2, TDREPORT at 32, claims at 1236 bound by REPORTDATA', () => {
    expect(hclTeeOf(hclBytes)).toBe('tdx');
    const hcl = parseTdxHclReport(hclBytes);
    expect(hcl.header).toMatchObject({ version: 2, requestType: 2 });
    expect(hcl.varData).toMatchObject({ reportType: 4, hashType: 1, claimsSize: 1201 });
    expect(hcl.tdReport.reportType.type).toBe(0x81);
    expect(hcl.tdReport.mrTd.toString('hex')).toMatch(/^024a32b0.*1ba7ab7b$/);
    expect(hcl.tdReport.reportData.subarray(0, 32)).toEqual(createHash('sha256').update(hcl.claimsBytes).digest());
    expect(tdReportHashesMatch(hcl.tdReport)).toEqual({ teeTcbInfo: true, tdInfo: true });
    expect(hcl.claims['keys']).toEqual(expect.arrayContaining([expect.objectContaining({ kid: 'HCLAkPub' })]));
    expect(() => checkClaimsBinding(hcl.tdReport.reportData, hcl.claimsBytes, 1)).not.toThrow();
    expect(parseAnyHclReport(hclBytes).tee).toBe('tdx');
    // The SEV-SNP parser refuses it by name instead of misreading a TDREPORT as an SNP report.
    expect(() => parseHclReport(hclBytes)).toThrow(/report type 4 \(TDX\) where an SEV-SNP report/);

    const k = parseTdxHclReport(kinvolk);
    expect(k.varData.claimsSize).toBe(1202);
    expect(k.tdReport.mrTd.toString('hex')).toMatch(/^75f3acc2.*c6e858886$/);
    expect(() => checkTdReportHashes(k.tdReport)).not.toThrow();
  });

  it('decodes the TD quote v4: header, TD report body 1.0, QE report, PCK chain', () => {
    expect(isTdQuote(quoteBytes)).toBe(true);
    expect(quoteKind(hclBytes)).toBeUndefined();
    const q = parseTdQuote(quoteBytes);
    expect(q.header).toMatchObject({ version: 4, attestationKeyType: 2, teeType: 0x81 });
    expect(q.signedBytes.length).toBe(632);
    expect(q.body.bodyVersion).toBe('1.0');
    expect(q.qeAuthData.length).toBe(32);
    expect(q.trailingZeros).toBe(70);
    const j = tdQuoteToJson(q);
    expect(j.header.qe_vendor_id).toBe('939a7233f79c4ca9940a0db3957f0607');
    expect(j.pck_chain_certificates).toBe(3);
    expect(j.body.mr_td).toMatch(/^024a32b0/);
  });

  it('verifies: chain to the pinned Intel root, QE report, binding, quote signature; TCB status not checked', () => {
    const v = verifyTdQuote(quoteBytes, { now: AT });
    expect(v.rootSha256).toBe(INTEL_SGX_ROOT_CA_SHA256);
    expect(v.rootLabel).toBe('Intel SGX Root CA');
    expect(v.pck.subject).toMatch(/Intel SGX PCK Certificate/);
    expect(v.tcbStatus).toBe('not-checked');
    // What would decide it: the FMSPC of the (verified) PCK certificate's SGX extension.
    expect(v.pckInfo.fmspc).toMatch(/^[0-9a-f]{12}$/);
    expect(v.pckInfo.pceId).toBe('0000');
    // The platform TCB the TCB info's levels are compared with: 16 SGX components, PCESVN, CPUSVN.
    expect(v.pckInfo.tcb?.sgxComponents).toHaveLength(16);
    expect(v.pckInfo.tcb?.pceSvn).toBeGreaterThan(0);
    expect(v.pckInfo.tcb?.cpuSvn).toMatch(/^[0-9a-f]{32}$/);
    const hcl = parseTdxHclReport(hclBytes);
    expect(() => checkTdReportBinding(v.quote, hcl.tdReport)).not.toThrow();
  });

  it('refuses one flipped bit at its step', () => {
    const flip = (b: Buffer, at: number) => {
      const c = Buffer.from(b);
      c[at] ^= 0x01;
      return c;
    };
    // MRTD inside the signed 632 bytes.
    expect(stepOf(() => verifyTdQuote(flip(quoteBytes, 48 + 136), { now: AT }))).toBe('td-quote-signature');
    // The quote signature itself.
    expect(stepOf(() => verifyTdQuote(flip(quoteBytes, 640), { now: AT }))).toBe('td-quote-signature');
    // The attestation key: the QE's binding of it breaks first.
    expect(stepOf(() => verifyTdQuote(flip(quoteBytes, 636 + 64 + 5), { now: AT }))).toBe('qe-report-binding');
    // The QE report (MRENCLAVE).
    expect(stepOf(() => verifyTdQuote(flip(quoteBytes, 636 + 128 + 6 + 64), { now: AT }))).toBe('qe-report-signature');
    // QE authentication data.
    expect(stepOf(() => verifyTdQuote(flip(quoteBytes, 636 + 128 + 6 + 384 + 64 + 2), { now: AT }))).toBe('qe-report-binding');
    // Certificates outside their validity.
    expect(stepOf(() => verifyTdQuote(quoteBytes, { now: new Date('2051-01-01T00:00:00Z') }))).toBe('pck-chain');
    // Only the configured roots count.
    expect(stepOf(() => verifyTdQuote(quoteBytes, { now: AT, trust: new IntelTrustStore({ includeIntelRoot: false }) }))).toBe('intel-root-pinned');
    // The HCL side: a claims bit breaks the REPORTDATA binding; a TDINFO bit breaks the hash and the quote binding.
    const hcl = flip(hclBytes, hclBytes.indexOf('6332533D', HCL_CLAIMS_OFFSET, 'latin1'));
    const th = parseTdxHclReport(hcl);
    expect(stepOf(() => checkClaimsBinding(th.tdReport.reportData, th.claimsBytes, 1))).toBe('hcl-claims-binding');
    const td = parseTdxHclReport(flip(hclBytes, 32 + 528));
    expect(stepOf(() => checkTdReportHashes(td.tdReport))).toBe('tdreport-hashes');
    expect(stepOf(() => checkTdReportBinding(parseTdQuote(quoteBytes), td.tdReport))).toBe('td-report-binding');
  });

  it('refuses malformed quotes with ERR_TD_QUOTE naming the field', () => {
    expect(() => parseTdQuote(quoteBytes.subarray(0, 600))).toThrow(/TD quote: truncated in TD report body/);
    const junk = Buffer.concat([quoteBytes.subarray(0, 4936), Buffer.from([1])]);
    expect(() => parseTdQuote(junk)).toThrow(/not zero padding/);
    const sgx = Buffer.from(quoteBytes);
    sgx.writeUInt32LE(0, 4);
    expect(() => parseTdQuote(sgx)).toThrow(/SGX enclave quote/);
    const big = Buffer.from(quoteBytes);
    big.writeUInt32LE(0xffffff, 632);
    expect(() => parseTdQuote(big)).toThrow(/runs past the end/);
    expect(stepOf(() => verifyTdQuote(big, { now: AT }))).toBe('quote-format');
  });
});
